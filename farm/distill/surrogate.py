"""The surrogate route: a model we cannot encode exactly, verified through a program.

A standard model (softmax attention, LayerNorm, GELU) has no exact rational
semantics, so no SMT query or exact replay can decide it. What can be proved is
agreement: the distilled program decides as the circuit does on every input of the
finite domain, each input settled by the standard screen's sound float64 bounds
(`farm.screen.standard`; an input whose margin interval contains 0 is left open
and stops the proof, never counted as agreement). The properties are then proved
on the program, which is exact: integer code run on every input.

The claim is therefore two claims: properties of the surrogate, plus the
surrogate's agreement with the circuit on the domain. It is never "the circuit is
verified" in the sense of SPEC §4: robustness over an ε-ball of the residual has no
meaning for a program, and edge necessity is a fact about the circuit, proved here
only where the screen shows a flip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from farm.distill.cegis import Distillation, Judge, distill
from farm.distill.dsl import Program, program_source
from farm.distill.record import proof_record
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.screen.standard import StandardScreen
from farm.tasks.task import Task


class StandardJudge(Judge):
    """The circuit's decisions on concrete inputs, from the standard screen alone."""

    def __init__(self, ckpt: Checkpoint, circuit: Circuit, task: Task):
        self.task, self.candidates = task, list(task.candidates)
        self.weights = dict(ckpt.weights)
        self.screen = StandardScreen(ckpt.config, self.weights, circuit)

    def logits(self, prompt: tuple[int, ...]) -> dict[int, Fraction]:
        """None are exact: a standard model's logits are irrational. Counterexamples carry
        the decision the bounds proved, not logits."""
        return {}

    def decision(self, prompt: tuple[int, ...]) -> int | None:
        """The candidate whose margin the bounds prove positive; None when they prove none
        (the decision stays open)."""
        prompts = np.array([prompt] * len(self.candidates), dtype=np.int64)
        result = self.screen.run(prompts, np.array(self.candidates), self.candidates)
        proved = [c for c, ok in zip(self.candidates, result.correct, strict=True) if ok]
        return proved[0] if proved else None


@dataclass(frozen=True)
class SurrogateProperty:
    """A property proved (or refuted) on the program, exhaustively and exactly."""

    name: str
    holds: bool
    detail: str


@dataclass(frozen=True)
class Surrogate:
    """A distillation against a standard model's circuit and the properties of its program."""

    distillation: Distillation
    properties: list[SurrogateProperty]
    edge_flips: dict[str, tuple[int, ...] | None]  # edge -> a proved flip's input, or None

    @property
    def claim(self) -> str:
        d = self.distillation
        if not d.proved:
            return ("nothing: no program was shown to decide as the circuit does on the "
                    "whole domain")
        held = [p.name for p in self.properties if p.holds]
        return (f"the program decides as the circuit does on all {d.checks[-1].domain:,} inputs "
                f"of {d.task} (sound float64 bounds of softmax, LayerNorm and GELU, every "
                f"input settled); the program has {', '.join(held) or 'none of the properties'}"
                ". These are properties of the surrogate plus its agreement with the circuit "
                "on the domain, not a verification of the circuit")

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim,
                "properties": [vars(p) for p in self.properties],
                "edge_necessity_of_the_circuit": {
                    edge: None if x is None else list(x) for edge, x in self.edge_flips.items()},
                "not_applicable": "robustness over an ε-ball of the residual: a program has no "
                                  "residual stream"}


def surrogate_properties(program: Program, task: Task, batch: int = 65536
                         ) -> list[SurrogateProperty]:
    """Functional equivalence (the program answers the task's target on every input) and
    content invariance (its answer is constant on each class of the task's features),
    each by running the program on the whole domain."""
    domain = task.domain()
    wrong, first_wrong = 0, None
    answer_of: dict[int, int] = {}
    split = None
    for start in range(0, len(domain), batch):
        prompts = domain.batch(start, start + batch)
        answers = program.evaluate(prompts)
        bad = np.flatnonzero(answers != task.targets(prompts))
        if len(bad) and first_wrong is None:
            first_wrong = tuple(prompts[bad[0]].tolist())
        wrong += len(bad)
        codes, first, inverse = np.unique(task.feature_codes(prompts), return_index=True,
                                          return_inverse=True)
        for code, answer in zip(codes.tolist(), answers[first].tolist(), strict=True):
            answer_of.setdefault(code, answer)  # the class's first answer in domain order
        expected = np.array([answer_of[c] for c in codes.tolist()])[inverse.reshape(-1)]
        if (split_at := np.flatnonzero(answers != expected)).size and split is None:
            split = tuple(prompts[split_at[0]].tolist())
    return [
        SurrogateProperty("functional equivalence", wrong == 0,
                          f"the task's target on all {len(domain):,} inputs" if not wrong else
                          f"{wrong:,} inputs answered wrongly, first {first_wrong}"),
        SurrogateProperty("content invariance", split is None,
                          f"one answer on each of {len(answer_of)} feature classes"
                          if split is None else f"a feature class answered two ways, at {split}"),
    ]


def edge_flips(ckpt: Checkpoint, circuit: Circuit, task: Task, batch: int = 65536
               ) -> dict[str, tuple[int, ...] | None]:
    """Per edge of the circuit: an input where the circuit without that edge provably
    fails the decision the full circuit provably makes (SPEC's edge necessity, for this
    input, under the sound bounds), or None where the screen shows none."""
    domain, weights = task.domain(), dict(ckpt.weights)
    full = StandardScreen(ckpt.config, weights, circuit)
    open_edges = {" -> ".join(e): StandardScreen(ckpt.config, weights, circuit.without(e))
                  for e in circuit.ordered_edges()}
    flips: dict[str, tuple[int, ...] | None] = dict.fromkeys(open_edges)
    for start in range(0, len(domain), batch):
        if not open_edges:
            break
        prompts = domain.batch(start, start + batch)
        targets = task.targets(prompts)
        kept = full.run(prompts, targets, task.candidates).correct
        for edge, without in list(open_edges.items()):
            flipped = kept & without.run(prompts, targets, task.candidates).wrong
            if flipped.any():
                flips[edge] = tuple(prompts[flipped.argmax()].tolist())
                del open_edges[edge]
    return flips


def distill_surrogate(ckpt: Checkpoint, circuit: Circuit, task: Task, max_size: int = 10,
                      batch: int = 16384, per_round: int = 4,
                      on_batch: Callable[[int], None] = lambda n: None,
                      on_candidate: Callable[[Program], None] = lambda p: None) -> Surrogate:
    """CEGIS against the standard model's circuit, then the surrogate's properties and the
    circuit's edge flips."""
    if ckpt.config.is_piecewise_linear:
        raise FarmError("this model is exact-verifiable: distil it without --surrogate (the "
                        "proof then holds of the circuit itself)")
    result = distill(ckpt, circuit, task, max_size, batch, per_round, on_batch, on_candidate,
                     judge=StandardJudge(ckpt, circuit, task))
    properties = surrogate_properties(result.program, task) if result.proved else []
    return Surrogate(result, properties, edge_flips(ckpt, circuit, task))


def surrogate_report(report: Surrogate) -> str:
    """What a user reads: the program, then each claim in its own words."""
    d = report.distillation
    lines = []
    if d.program is not None:
        lines.append(program_source(d.program).rstrip())
    lines.append(f"{d.task}: {'AGREES' if d.proved else 'NOT FOUND'}: {d.reason}")
    for p in report.properties:
        lines.append(f"  surrogate {p.name}: {'holds' if p.holds else 'FAILS'} ({p.detail})")
    for edge, x in report.edge_flips.items():
        lines.append(f"  circuit edge {edge}: " + (f"necessary, flips {x}" if x else
                                                   "no flip shown by the bounds"))
    lines.append(f"claim: {report.claim}")
    return "\n".join(lines)


SURROGATE_METHOD = ("exhaustive over the finite domain: each input's circuit decision settled "
                    "by the standard screen (float64 intervals with rigorous rounding bounds "
                    "and a stated 2^-44 relative bound on exp and erf, tested against "
                    "60-digit references); an input the bounds leave open is never counted "
                    "as agreement; the properties run the program, exactly, on every input")


def surrogate_record(report: Surrogate, ckpt: Checkpoint, checkpoint_dir: str,
                     circuit: Circuit, circuit_file: str | None) -> dict[str, Any]:
    """The distillation's proof record, with the surrogate's claim in place of the exact one."""
    record = proof_record(report.distillation, ckpt, checkpoint_dir, circuit, circuit_file)
    record.update(status="surrogate agrees" if report.distillation.proved else record["status"],
                  claim=report.claim, method=SURROGATE_METHOD, surrogate=report.to_json())
    return record
