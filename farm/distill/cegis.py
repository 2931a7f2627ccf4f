"""Counterexample-guided synthesis: the smallest DSL program that decides as the circuit does.

The loop: search the smallest program consistent with the examples so far (none at
first); check it against the circuit on the task's whole domain; a disagreement is
replayed in exact arithmetic and joins the examples; repeat until a candidate
agrees everywhere or no program up to the size limit fits the examples.

The check is a proof on a finite domain. For each input the circuit's decision is
the argmax of its exact logits over the task's candidates (a tie decides nothing).
The sound screen, asked about the program's output as the target, returns an
interval around the exact margin logit[output] − max over the other candidates:
above 0 proves the circuit decides that output, at most 0 proves it does not; an
input the screen leaves undecided is evaluated exactly (`ExactModel`). Every input
of the domain is covered, each by a sound per-input argument, so agreement on all
of them is the statement "circuit and program decide alike on this domain".

Where cube queries would plug in: a domain too large to sweep would instead be
split into cubes of inputs with symbolic positions, each an SMT query holding the
program's encoding next to the circuit's (UNSAT: the cube agrees; SAT: a
counterexample, replayed here). `check_program` is that unit's concrete leaf; the
symbolic encoding of DSL programs belongs to the cube-query issue and is not here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from farm.distill.dsl import Program, compile_program, program_source
from farm.distill.search import Motifs, smallest_consistent
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.exact import CircuitRun, ExactModel
from farm.screen import Screen
from farm.tasks.task import Task
from farm.verify.evaluate import TIE, exact_decision


@dataclass(frozen=True)
class Counterexample:
    """An input where program and circuit decide differently, replayed exactly."""

    index: int  # in the task's canonical domain order
    prompt: tuple[int, ...]
    program: int  # the program's answer
    circuit: int | None  # the circuit's exact decision; None: a tie among the candidates
    logits: dict[int, Fraction]  # the circuit's exact logit of each candidate

    def to_json(self) -> dict:
        return {"index": self.index, "prompt": list(self.prompt), "program": self.program,
                "circuit": self.circuit,
                "logits": {str(t): str(v) for t, v in self.logits.items()}}


@dataclass
class Check:
    """One program held to the circuit's decisions on (a prefix of) the domain."""

    program: Program
    domain: int  # inputs in the domain
    checked: int = 0  # inputs covered, in canonical order
    by_screen: int = 0  # agreements the screen proved
    by_exact: int = 0  # agreements the exact evaluator proved
    disagreements: int = 0
    counterexamples: list[Counterexample] = field(default_factory=list)  # replayed, some
    seconds: float = 0.0

    @property
    def proved(self) -> bool:
        """Agreement on every input of the domain, each by a sound argument."""
        return self.checked == self.domain and self.disagreements == 0


class Judge:
    """The circuit's decisions on concrete inputs: the screen first, exact where it
    cannot decide."""

    def __init__(self, ckpt: Checkpoint, circuit: Circuit, task: Task):
        self.task, self.candidates = task, list(task.candidates)
        self.screen = Screen(ckpt.config, dict(ckpt.weights), circuit)
        self.exact: CircuitRun = ExactModel(ckpt.config, dict(ckpt.weights)).runs(circuit)

    def logits(self, prompt: tuple[int, ...]) -> dict[int, Fraction]:
        logits = self.exact.row(prompt).logits
        return {t: logits[t] for t in self.candidates}

    def decision(self, prompt: tuple[int, ...]) -> int | None:
        """The circuit's exact decision: the unique best candidate (None on a tie)."""
        decision = exact_decision(self.exact.row(prompt), self.candidates)
        return None if decision == TIE else decision

    def agrees(self, prompts: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Per prompt, whether the circuit decides `answers` (proved either way); with how
        many agreements the screen proved and how many the exact evaluator."""
        agree = np.zeros(len(prompts), dtype=bool)
        valid = np.flatnonzero(np.isin(answers, self.candidates))  # else: never the decision
        if not len(valid):
            return agree, 0, 0
        result = self.screen.run(prompts[valid], answers[valid], self.candidates)
        agree[valid[result.correct]] = True
        undecided = valid[~result.decisive]
        for i in undecided:
            agree[i] = self.decision(tuple(prompts[i].tolist())) == answers[i]
        return agree, int(result.correct.sum()), int(agree[undecided].sum())

    def replay(self, index: int, prompt: tuple[int, ...], answer: int) -> Counterexample:
        """A disagreement, confirmed in exact arithmetic before anyone is told of it."""
        logits = self.logits(prompt)
        decision = self.decision(prompt)
        if decision == answer:
            raise FarmError(f"input {prompt}: the screen said the circuit does not decide "
                            f"{answer}, exact replay says it does (an unsound screen)")
        return Counterexample(index, prompt, answer, decision, logits)


KEEP = 8  # counterexamples a full check keeps: enough to name the disagreement

# How the loop holds a candidate to the circuit: (program, stop_after, on_batch) -> Check.
Checker = Callable[[Program, int | None, Callable[[int], None]], Check]


def check_unit(program: Program, judge: Judge, start: int, stop: int, keep: int) -> Check:
    """One unit of work: domain inputs start..stop-1, with up to `keep` counterexamples
    (replayed exactly) spread over its disagreements."""
    prompts = judge.task.domain().batch(start, stop)
    unit = Check(program, len(judge.task.domain()), checked=len(prompts))
    began = time.perf_counter()
    answers = program.evaluate(prompts)
    agree, unit.by_screen, unit.by_exact = judge.agrees(prompts, answers)
    bad = np.flatnonzero(~agree)
    unit.disagreements = len(bad)
    if keep and len(bad):
        unit.counterexamples = [
            judge.replay(start + int(i), tuple(prompts[i].tolist()), int(answers[i]))
            for i in bad[np.unique(np.linspace(0, len(bad) - 1, keep).astype(int))]]
    unit.seconds = time.perf_counter() - began
    return unit


def fold(program: Program, domain: int, units: Iterable[Check], stop_after: int | None,
         on_batch: Callable[[int], None] = lambda n: None) -> Check:
    """Units in canonical order into one check: with `stop_after`, up to that many
    counterexamples from the first unit that has any, and no unit after it."""
    total, keep = Check(program, domain), stop_after or KEEP
    for unit in units:
        total.checked += unit.checked
        total.by_screen += unit.by_screen
        total.by_exact += unit.by_exact
        total.disagreements += unit.disagreements
        total.counterexamples += unit.counterexamples[:keep - len(total.counterexamples)]
        total.seconds += unit.seconds
        on_batch(unit.checked)
        if stop_after is not None and unit.disagreements:
            break
    return total


def check_program(program: Program, judge: Judge, batch: int = 16384,
                  stop_after: int | None = None,
                  on_batch: Callable[[int], None] = lambda n: None) -> Check:
    """Hold `program` to the circuit on the task's domain, batch by batch in canonical
    order, on this process. Keeps (and replays) up to `stop_after` counterexamples,
    spread over the first batch that has any, and stops there; with None it covers the
    whole domain and keeps the first few."""
    size = len(judge.task.domain())
    units = (check_unit(program, judge, first, first + batch, stop_after or KEEP)
             for first in range(0, size, batch))
    return fold(program, size, units, stop_after, on_batch)


@dataclass
class Distillation:
    """What a CEGIS run found: the program proved, or the last candidate that failed."""

    task: str
    program: Program | None  # proved, or the last candidate refuted (None: none fitted)
    proved: bool
    checks: list[Check]  # every candidate held to the circuit, in order
    examples: list[Counterexample]  # the counterexamples the search had to fit
    enumerated: int  # programs the searches built and evaluated on the examples
    python_checked: int  # domain inputs on which the printed source gave the DSL's answer
    reason: str  # why the loop stopped, in words
    seconds: float
    max_size: int  # the search's bounds, to run it again
    per_round: int


def distill(ckpt: Checkpoint, circuit: Circuit, task: Task, max_size: int = 10,
            batch: int = 16384, per_round: int = 4,
            on_batch: Callable[[int], None] = lambda n: None,
            on_candidate: Callable[[Program], None] = lambda p: None,
            checker: Checker | None = None, judge: Judge | None = None) -> Distillation:
    """CEGIS from no examples: each round takes up to `per_round` counterexamples into
    the example set; `on_batch` hears how many inputs each checked batch covered.
    `checker` holds candidates to the circuit (default: `check_program` here; the Ray
    actors of `actors.distill` run the same units across a cluster); `judge` decides the
    circuit's inputs (default: the screen with the exact evaluator behind it)."""
    start = time.perf_counter()
    judge = judge or Judge(ckpt, circuit, task)
    checker = checker or (lambda program, stop_after, heard: check_program(
        program, judge, batch, stop_after, heard))
    motifs = Motifs.of(task)
    examples: list[Counterexample] = []
    checks: list[Check] = []
    enumerated = 0
    while True:
        prompts = np.array([cx.prompt for cx in examples], dtype=np.int64).reshape(
            len(examples), task.seq_len)
        decisions = np.array([cx.circuit for cx in examples], dtype=np.int64)
        program, built = smallest_consistent(motifs, prompts, decisions, max_size)
        enumerated += built
        if program is None:
            reason = (f"no program of size at most {max_size} decides as the circuit does on "
                      f"the {len(examples)} counterexamples")
            break
        on_candidate(program)
        check = checker(program, per_round, on_batch)
        checks.append(check)
        if check.proved:
            reason = (f"agrees with the circuit on all {check.domain:,} inputs "
                      f"({check.by_screen:,} by the screen, {check.by_exact:,} exactly)")
            break
        if ties := [cx.prompt for cx in check.counterexamples if cx.circuit is None]:
            reason = (f"the circuit's decision at {ties[0]} is no single candidate (a tie, "
                      "or for a standard model bounds that leave it open): no program "
                      "decides as it does there")
            break
        examples += check.counterexamples
    proved = bool(checks) and checks[-1].proved
    last = checks[-1].program if checks else None
    python_checked = printed_agrees(last, task, batch) if proved and last else 0
    return Distillation(task.name, last, proved, checks, examples, enumerated,
                        python_checked, reason, time.perf_counter() - start, max_size, per_round)


def printed_agrees(program: Program, task: Task, batch: int = 16384) -> int:
    """Run the printed source on every domain input and hold it to the DSL's semantics,
    so that what a user pastes is what was proved; the number of inputs run."""
    run = compile_program(program_source(program))
    domain = task.domain()
    for first in range(0, len(domain), batch):
        prompts = domain.batch(first, first + batch)
        expected = program.evaluate(prompts)
        for prompt, answer in zip(prompts.tolist(), expected.tolist(), strict=True):
            if run(tuple(prompt)) != answer:
                raise FarmError(f"the printed program answers {run(tuple(prompt))} on "
                                f"{tuple(prompt)}, its DSL form {answer}")
    return len(domain)
