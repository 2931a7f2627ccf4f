"""Concrete inputs decided by evaluation: the sound screen first, exact arithmetic after.

For a concrete prompt a circuit's decision is a ground computation (SCALE principle
1): one SMT query per input only re-does exact arithmetic, and at a million inputs
it is waste. So functional equivalence, content invariance and edge necessity's
witnesses are decided here by evaluating the task's domain batch by batch: the
screen (`farm.screen`) bounds every margin by a rigorous interval, and the inputs
it cannot decide go to `ExactModel`, which decides any input. Robustness is proved
by the screen's bound over the whole ε-ball wherever it suffices; the rest go to
the solvers (`robustness_outcomes`), and what neither decides is UNKNOWN.

Every result counts the instances (inputs; edges for edge necessity) decided by
each route: `screen`, `exact` or `solver`. Counterexamples are counted whole and
listed up to `KEEP`, each replayed in exact arithmetic.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from tqdm import tqdm

from encoders.cache import ResultCache
from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    NO_WITNESS,
    ROBUSTNESS,
    EncodeMode,
    Planner,
)
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit, Edge
from farm.model.exact import CircuitRun, ExactModel, RowResult
from farm.model.tracing import TraceReader
from farm.screen import Screen
from farm.tasks.task import Task
from farm.verify.affine_readout import ball_floor, replayed_margin
from farm.verify.local import (
    Farm,
    Judged,
    Outcome,
    PropertyResult,
    VerifyOptions,
    fold,
    radius_search,
    robustness_outcomes,
)

ROUTES = ("screen", "exact", "solver", "undecided", "cube")  # undecided: robustness over
# budget; cube: proved by a cube query (`farm.verify.conquer`)
SCREEN, EXACT = 0, 1  # indices into ROUTES, as the route arrays hold them
TIE = -1  # the decision of a run whose best candidates tie (never a correct decision)
BATCH = 16384  # prompts per screen call: consecutive, so they share their prefixes; small
# enough that its arrays (under 32 MB) are reused from the heap, not mapped and faulted in
# afresh each batch (at 65,536 the kernel took about half of the CPU time)
KEEP = 100  # counterexamples listed per property; all of them are counted


@dataclass(frozen=True)
class Decisions:
    """A circuit's decision on every input of the domain, and the route that decided it."""

    decision: np.ndarray  # int16: the winning candidate, or TIE
    route: np.ndarray  # uint8: SCREEN or EXACT
    targets: np.ndarray  # int16: P(x)
    robust: np.ndarray | None = None  # bool: the ε-ball bound held, where ε was given


Answers = dict[int, tuple[list[Judged], Outcome]]  # per input: its judged queries, its outcome


def exact_decision(row: RowResult, candidates: Sequence[int]) -> int:
    """The argmax over the candidates in exact arithmetic; TIE when it is not unique."""
    best = max(row.logits[c] for c in candidates)
    winners = [c for c in candidates if row.logits[c] == best]
    return winners[0] if len(winners) == 1 else TIE


class Evaluator:
    """One (checkpoint, circuit, task): its domain decided batch by batch, screen first."""

    def __init__(self, ckpt: Checkpoint, circuit: Circuit, task: Task,
                 model: ExactModel | None = None, batch: int = BATCH,
                 progress: bool = True, epsilon: Fraction | None = None) -> None:
        """`epsilon`: robustness will be asked at this ε, so the decisions' pass bounds
        the ε-ball as well (one forward pass over the domain, not two)."""
        self.ckpt, self.circuit, self.task = ckpt, circuit, task
        self.epsilon = epsilon
        self.weights = dict(ckpt.weights)
        self.model = model or ExactModel(ckpt.config, self.weights)
        self.domain = task.domain()
        self.candidates = list(task.candidates)
        self.batch, self.progress = batch, progress
        self._screens: dict[Circuit, Screen] = {}
        self._runs: dict[Circuit, CircuitRun] = {}
        self._decisions: Decisions | None = None
        self._batch_decisions: dict[int, Decisions] = {}  # edge necessity's, batch by batch
        # robustness: each input the solvers were asked about, its judged queries (first
        # tier, then re-asked fully) and final outcome; what units record (`farm.units`)
        self.asked: Answers = {}

    def screen(self, circuit: Circuit) -> Screen:
        if circuit not in self._screens:
            self._screens[circuit] = Screen(self.ckpt.config, self.weights, circuit)
        return self._screens[circuit]

    def _batches(self, label: str):
        """(first index, prompts, targets) over the domain, with a progress bar."""
        n = len(self.domain)
        with tqdm(total=n, desc=f"{self.task.name} {label}", unit="in", leave=False,
                  disable=not self.progress, dynamic_ncols=True) as bar:
            for first in range(0, n, self.batch):
                prompts = self.domain.batch(first, min(first + self.batch, n))
                yield first, prompts, self.task.targets(prompts)
                bar.update(len(prompts))

    def decisions(self) -> Decisions:
        """The circuit's decision on every input of the domain (`decide`, batch by batch)."""
        if self._decisions is None:
            parts = [self.decide(first, first + len(prompts), prompts, tgt)
                     for first, prompts, tgt in self._batches("decisions")]
            self._decisions = Decisions(*(np.concatenate([getattr(d, f) for d in parts])
                                          if parts else np.empty(0, dtype=dtype)
                                          for f, dtype in (("decision", np.int16),
                                                           ("route", np.uint8),
                                                           ("targets", np.int16))),
                                        robust=None if self.epsilon is None else np.concatenate(
                                            [d.robust for d in parts] or [np.empty(0, bool)]))
        return self._decisions

    def decide(self, start: int, stop: int, prompts: np.ndarray | None = None,
               targets: np.ndarray | None = None) -> Decisions:
        """The decisions on inputs start..stop-1: the screen's where its interval says the
        target wins (or, with two candidates, certainly loses), exact elsewhere. A unit of
        work (`farm.units`) is such a range; `prompts` and `targets`, if the caller
        decoded them already."""
        prompts = self.domain.batch(start, stop) if prompts is None else prompts
        tgt = self.task.targets(prompts) if targets is None else targets
        found = self.screen(self.circuit).run(prompts, tgt, self.candidates,
                                              epsilon=self.epsilon)
        out = np.where(found.correct, tgt, TIE).astype(np.int16)
        known = found.correct.copy()
        if len(self.candidates) == 2:  # certainly below 0: the other candidate wins
            lost = found.hi < 0
            out[lost] = self.task.alternates(tgt[lost])
            known |= lost
        runs = self.runs(self.circuit)
        for k in np.flatnonzero(~known):
            out[k] = exact_decision(runs.row(tuple(prompts[k].tolist())), self.candidates)
        return Decisions(out, np.where(known, SCREEN, EXACT).astype(np.uint8),
                         tgt.astype(np.int16), found.robust)

    def runs(self, circuit: Circuit) -> CircuitRun:
        """The circuit's exact runs, one per circuit: they memoise shared prefixes."""
        if circuit not in self._runs:
            self._runs[circuit] = self.model.runs(circuit)
        return self._runs[circuit]

    def row(self, i: int, circuit: Circuit | None = None) -> RowResult:
        return self.runs(circuit or self.circuit).row(self.domain[i])

    def subject(self, i: int) -> str:  # as `Planner` names an input
        return f"input {i} {list(self.domain[i])}"

    def input_detail(self, i: int) -> dict[str, Any]:
        """A wrong input as reported: its prompt and exact margin, replayed here."""
        target = int(self.task.target(self.domain[i]))
        margin = self.row(i).best_margin(target, self.candidates)
        return {"subject": self.subject(i), "prompts": [list(self.domain[i])],
                "exact_margins": [str(margin)], "exact_margin_float": float(margin)}

    # ------------------------------------------------------------------ the properties

    def functional_equivalence(self) -> PropertyResult:
        """Per input x: d(C_E, x) = P(x)."""
        start, d = time.perf_counter(), self.decisions()
        wrong = np.flatnonzero(d.decision != d.targets)
        listed = [self.input_detail(int(i)) for i in wrong[:KEEP]]
        return self._result(FUNCTIONAL_EQUIVALENCE, d.route, listed, len(wrong), start)

    def content_invariance(self) -> PropertyResult:
        """d(x) = d(x') for R(x, x'): each input of a class of two or more, other than the
        class's anchor (its first input in domain order), decides as the anchor decides,
        and that is no tie; one instance per such input, as `Planner` pairs them."""
        start, d = time.perf_counter(), self.decisions()
        codes = np.concatenate([self.task.feature_codes(p) for _, p, _ in self._batches(
            "classes")]) if len(self.domain) else np.empty(0, dtype=np.int64)
        _, anchor_of, inverse = np.unique(codes, return_index=True, return_inverse=True)
        anchors = anchor_of[inverse.reshape(-1)]
        members = anchors != np.arange(len(codes))
        anchor_decision = d.decision[anchors]
        fails = members & ((d.decision != anchor_decision) | (anchor_decision == TIE))
        routes = np.maximum(d.route, d.route[anchors])[members]  # exact if either was
        listed = [self.pair_detail(int(anchors[i]), int(i)) for i in np.flatnonzero(fails)[:KEEP]]
        return self._result(CONTENT_INVARIANCE, routes, listed, int(fails.sum()), start)

    def pair_detail(self, a: int, b: int) -> dict[str, Any]:
        """Two inputs of one class that do not agree, with their exact decisions."""
        x, y = list(self.domain[a]), list(self.domain[b])
        return {"subject": f"pair {a}~{b} {x}~{y}", "prompts": [x, y],
                "decisions": [self._exact_name(a), self._exact_name(b)]}

    def _exact_name(self, i: int) -> str:
        """An input's decision in exact arithmetic, as a token or "tie"."""
        decision = exact_decision(self.row(i), self.candidates)
        return "tie" if decision == TIE else str(decision)

    def edge_necessity(self) -> PropertyResult:
        """Per retained edge e: some input x with d(C_E∖e, x) ≠ d(C_E, x), found by the
        screen where it can (the ablated circuit's interval excludes the full circuit's
        decision), else by exact search, and always confirmed by two exact runs."""
        start, d = time.perf_counter(), self._decisions
        routes, witnesses, listed = [], [], []
        for edge in self.circuit.ordered_edges():
            name = f"edge {edge[0]}->{edge[1]}"
            i, route = self._witness(edge, d)
            routes.append(route)
            if i is None:
                listed.append({"subject": name, "reason": NO_WITNESS})
            else:
                witnesses.append({"edge": list(edge), "input": i, "route": ROUTES[route],
                                  "subject": f"{name} witness {self.subject(i)}"})
        result = self._result(EDGE_NECESSITY, np.asarray(routes, dtype=np.uint8), listed,
                              len(listed), start)
        result.witnesses = witnesses
        return result

    def _witness(self, edge: Edge, d: Decisions | None) -> tuple[int | None, int]:
        """`first_flip` of the circuit without `edge` over the domain, batch by batch.
        Without the whole domain's decisions `d`, each batch is decided as it is searched
        (a witness is usually in the first)."""
        def batches() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
            for first, prompts, tgt in self._batches(f"edge {edge[0]}->{edge[1]}"):
                if d is not None:
                    yield first, prompts, d.decision[first:first + len(prompts)]
                    continue
                if first not in self._batch_decisions:  # shared by every edge's search
                    self._batch_decisions[first] = self.decide(first, first + len(prompts),
                                                               prompts, tgt)
                yield first, prompts, self._batch_decisions[first].decision
        return self.first_flip(self.circuit.without(edge), batches())

    def first_flip(self, ablated: Circuit, chunks: Iterable[tuple[int, np.ndarray, np.ndarray]]
                   ) -> tuple[int | None, int]:
        """Over `chunks` (first index, prompts, the circuit's decisions) in order: the first
        input the screen proves the `ablated` circuit decides otherwise, else the first
        the exact search finds among those it left open, else None; and the route that
        settled it (a search that needed no exact run: SCREEN)."""
        undecided = []
        for first, prompts, full in chunks:
            i, open_ = self.screen_flip(ablated, first, prompts, full)
            if i is not None:
                return i, SCREEN
            undecided.append(open_)
        rest = np.concatenate(undecided) if undecided else np.empty(0, dtype=np.int64)
        return self.exact_flip(ablated, rest), EXACT if len(rest) else SCREEN

    def screen_flip(self, ablated: Circuit, first: int, prompts: np.ndarray,
                    full: np.ndarray) -> tuple[int | None, np.ndarray]:
        """Among inputs first.. (`prompts`, decided `full` by the circuit), the first the
        screen proves the `ablated` circuit decides otherwise (confirmed by two exact
        runs), or None and the inputs the screen leaves open (those the full circuit
        ties included), which only exact runs can settle (`exact_flip`)."""
        full = full.astype(np.int64)
        strict = np.flatnonzero(full != TIE)
        found = self.screen(ablated).run(prompts[strict], full[strict], self.candidates)
        if found.wrong.any():  # the ablated run certainly does not decide as the full
            i = first + int(strict[found.wrong][0])
            if not self.differs(i, ablated):
                raise FarmError(f"the screen and exact evaluation disagree on edge "
                                f"necessity's witness {self.subject(i)}: a bug in farm.screen")
            return i, np.empty(0, dtype=np.int64)
        return None, first + np.setdiff1d(np.arange(len(prompts)), strict[found.decisive])

    def exact_flip(self, ablated: Circuit, inputs: np.ndarray) -> int | None:
        """The first of `inputs` whose exact decision changes without the edge, or None."""
        return next((int(i) for i in inputs if self.differs(int(i), ablated)), None)

    def differs(self, i: int, ablated: Circuit) -> bool:
        return (exact_decision(self.row(i), self.candidates)
                != exact_decision(self.row(i, ablated), self.candidates))

    def robust_by_screen(self, epsilon: Fraction) -> np.ndarray:
        """Inputs the screen proves robust: the margin of P(x) stays positive over the whole
        ε-ball around the final residual."""
        if self.epsilon is not None and epsilon == self.epsilon:  # in the decisions' pass
            robust = self.decisions().robust
            assert robust is not None  # bounded in the decisions' pass, at this ε
            return robust
        robust = np.zeros(len(self.domain), dtype=bool)
        screen = self.screen(self.circuit)
        for first, prompts, tgt in self._batches(f"robustness eps {epsilon}"):
            found = screen.run(prompts, tgt, self.candidates, epsilon=epsilon)
            robust[first:first + len(prompts)] = found.robust
        return robust

    def ball_counterexample(self, i: int, epsilon: Fraction) -> dict[str, Any] | None:
        """None where input i's decision is P(x) on the whole ε-ball, decided exactly for a
        model without a final norm (`farm.verify.affine_readout`); else the ball's point
        that breaks it, replayed in exact arithmetic, as reported."""
        row, target = self.row(i), int(self.task.target(self.domain[i]))
        floor = ball_floor(self.model, row.final_residual, target, self.candidates, epsilon)
        if floor.margin > 0:
            return None
        margin = replayed_margin(self.model, row.final_residual, floor.eta, target,
                                 self.candidates)
        if margin > 0:
            raise FarmError(f"{self.subject(i)}: the ball's least point does not replay to a "
                            "wrong decision: a bug in farm.verify.affine_readout")
        found = {"subject": f"{self.subject(i)} eps {epsilon}", "prompts": [list(self.domain[i])],
                 "epsilon": str(epsilon), "eta": [str(e) for e in floor.eta],
                 "exact_margin": str(margin), "exact_margin_float": float(margin)}
        if row.best_margin(target, self.candidates) <= 0:  # SPEC §4's reference is P(x)
            found["note"] = ("decided against P(x) already at η = 0 (functional equivalence "
                             "fails here): this η need not change the decision")
        return found

    def _result(self, prop: str, routes: np.ndarray, listed: list[dict[str, Any]],
                failing: int, start: float) -> PropertyResult:
        counts = np.bincount(routes, minlength=len(ROUTES)) if len(routes) else [0] * len(ROUTES)
        result = fold(prop, self.task.name, [], [])
        result.status = "FAILED" if failing else "VERIFIED"
        result.counterexamples, result.failing = listed, failing
        result.routes = {r: int(n) for r, n in zip(ROUTES, counts, strict=True) if n}
        result.seconds = time.perf_counter() - start
        return result


def evaluate_task(ckpt: Checkpoint, circuit: Circuit, task: Task, properties: Sequence[str],
                  solvers: Callable[[], Farm], cache: ResultCache | None = None,
                  options: VerifyOptions | None = None, batch: int = BATCH,
                  encoding: EncodeMode = "guided", traces: TraceReader | None = None,
                  evaluator: Evaluator | None = None) -> list[PropertyResult]:
    """The requested properties of one (circuit, task), concrete inputs by evaluation and
    robustness by the screen's ball bound; `solvers()` opens the farm that answers what
    the screen leaves, only if it leaves anything (solver processes take seconds to start).
    `encoding` and `traces` are the solver queries' (`Planner`'s); `evaluator`, one of
    this (circuit, task) that has run already (it lends its screens and exact runs), or
    one whose decisions the caller wants afterwards (a certificate's units)."""
    options = options or VerifyOptions()
    evaluator = evaluator or Evaluator(
        ckpt, circuit, task, batch=batch, progress=options.progress,
        epsilon=options.epsilon if ROBUSTNESS in properties else None)
    results = []
    for prop in properties:
        if prop == ROBUSTNESS:
            planner = (Planner(evaluator.model, circuit, task, encoding, traces=traces)
                       if len(task.candidates) == 2 else None)  # what the encodings decide
            results.append(robustness(evaluator, planner, solvers, cache, options))
        else:
            results.append(getattr(evaluator, prop)())
    return results


def ask_robustness(planner: Planner, inputs: Iterable[int], epsilon: Fraction, farm: Farm,
                   cache: ResultCache | None = None, progress: str | None = None) -> Answers:
    """Robustness of each input at ε asked of the solvers (`robustness_outcomes`: guided,
    then fully encoded where inconclusive), in input order: each input's judged queries,
    in the order asked, and its final outcome."""
    judged, final = robustness_outcomes(planner, dict.fromkeys(inputs, epsilon), farm, cache,
                                        ROBUSTNESS, progress)
    queries: dict[int, list[Judged]] = defaultdict(list)
    for j in judged:
        queries[j[0].replay.index].append(j)  # type: ignore[union-attr]  # all are Perturbed
    return {i: (queries[i], final[i]) for i in sorted(final)}


def robustness(evaluator: Evaluator, planner: Planner | None, solvers: Callable[[], Farm],
               cache: ResultCache | None, options: VerifyOptions) -> PropertyResult:
    """Robustness at `options.epsilon`: proved by the screen's ball bound where it holds,
    the rest asked of the solvers as `planner` plans them (guided, then fully encoded
    where inconclusive). No planner: the SMT encodings decide two-candidate tasks only,
    so on a task of more candidates the inputs the bound leaves are decided exactly where
    the readout is affine (no final norm), and are undecided, and said so, elsewhere."""
    start, eps = time.perf_counter(), options.epsilon
    if evaluator.epsilon is not None and eps != evaluator.epsilon:
        raise FarmError(f"robustness at {eps} asked of an evaluator built for ε = "
                        f"{evaluator.epsilon}")
    evaluator.asked = {}  # this call's answers only
    if planner is None and options.radius:
        raise FarmError(f"--radius: the SMT encodings decide two-candidate tasks; "
                        f"{evaluator.task.name} has {len(evaluator.candidates)} candidates")
    robust = evaluator.robust_by_screen(eps)
    left = np.flatnonzero(~robust)
    by_exact, refuted = left[:0], []
    if planner is None and evaluator.model.norm_final is None:
        by_exact, left = left, left[:0]
        refuted = [c for i in by_exact if (c := evaluator.ball_counterexample(int(i), eps))]
    asked = left[:options.solver_inputs] if planner is not None else left[:0]
    if len(asked):
        label = f"{evaluator.task.name} robustness (solvers)" if options.progress else None
        evaluator.asked = ask_robustness(planner, map(int, asked), eps, solvers(), cache, label)
    judged = [j for js, _ in evaluator.asked.values() for j in js]
    result = fold(ROBUSTNESS, evaluator.task.name, judged)
    failing = len(result.counterexamples) + len(refuted)
    # counted whole, listed up to KEEP; `refuted` only where no solver was asked (no planner)
    result.counterexamples = (result.counterexamples + refuted)[:KEEP]
    if refuted:
        result.status = "FAILED"
    if unasked := len(left) - len(asked):  # over the budget: undecided, and said so
        result.unknown += unasked
        first = evaluator.subject(int(left[len(asked)]))
        why = ("nor were the solvers asked (--solver-inputs)" if planner is not None else
               "and the SMT encodings decide two-candidate tasks, not "
               f"{len(evaluator.candidates)}")
        result.problems.append({"subject": f"{unasked} inputs from {first}", "reason":
                                f"neither the screen's ball bound proved them {why}"})
        if result.status == "VERIFIED":
            result.status = "UNKNOWN"
    if options.radius:  # every input's radius is a search of the solvers' (`certified_radii`)
        result.radius = radius_search(planner, solvers(), cache, options)
    result.epsilon = str(eps)
    result.routes = {r: n for r, n in (("screen", int(robust.sum())), ("exact", len(by_exact)),
                                       ("solver", len(asked)), ("undecided", unasked)) if n}
    result.failing = failing
    result.seconds = time.perf_counter() - start
    return result
