"""A task's evidence by units: its domain committed to by hash, and one verdict per unit.

This is what `farm run` and `farm verify --out` write for certificates of large
domains: no row per input, but the task spec, a SHA-256 streamed over the
canonical rows (int16 little-endian, domain order), the circuit, and the verdicts
of units that cover the domain exactly once. `from_decisions` cuts a domain the
evaluator has decided already into units without deciding anything again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from farm.errors import FarmError
from farm.model.circuit import Circuit
from farm.tasks.registry import get_task
from farm.units.unit import circuit_hash, split
from farm.units.verdict import UnitVerdict, summarise
from farm.verify.evaluate import BATCH, Decisions, Evaluator

UNIT_SIZE = BATCH  # inputs per unit: one screen batch, so the checker re-decides exactly
# the ranges the evaluator decided (the screen's rounding may depend on the batch's shape)


def domain_sha256(task: str, batch: int = BATCH) -> str:
    """SHA-256 over the task's canonical rows, streamed batch by batch."""
    domain, h = get_task(task).domain(), hashlib.sha256()
    for first in range(0, len(domain), batch):
        h.update(domain.batch(first, min(first + batch, len(domain))).astype("<i2").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TaskEvidence:
    task: str
    size: int  # inputs in the domain
    domain_sha256: str
    circuit: Circuit
    verdicts: tuple[UnitVerdict, ...]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "size": self.size, "domain_sha256": self.domain_sha256,
                "circuit": self.circuit.to_json_dict(), "circuit_sha256": circuit_hash(
                    self.circuit), "verdicts": [v.to_json() for v in self.verdicts]}

    @classmethod
    def from_json(cls, data: Any, where: str = "units") -> TaskEvidence:
        try:
            circuit = Circuit.from_json_dict(data["circuit"], f"{where}: circuit")
            return cls(str(data["task"]), int(data["size"]), str(data["domain_sha256"]),
                       circuit, tuple(UnitVerdict.from_json(v, where)
                                      for v in data["verdicts"]))
        except (KeyError, TypeError, ValueError) as err:
            raise FarmError(f"{where}: malformed unit evidence ({err})") from None


def evidence(task: str, circuit: Circuit, verdicts: Sequence[UnitVerdict]) -> TaskEvidence:
    size = len(get_task(task).domain())
    return TaskEvidence(task, size, domain_sha256(task), circuit,
                        tuple(sorted(verdicts, key=lambda v: v.unit.start)))


def from_decisions(evaluator: Evaluator, unit_size: int = UNIT_SIZE) -> TaskEvidence:
    """The evaluator's whole-domain decisions, cut into units and summarised; with its ε,
    robustness as the ball bound and the solvers decided it (`Evaluator.asked`)."""
    d, name, answered = evaluator.decisions(), evaluator.task.name, evaluator.asked
    verdicts = []
    for u in split(name, circuit_hash(evaluator.circuit), len(evaluator.domain), unit_size):
        rows = slice(u.start, u.stop)
        verdicts.append(summarise(
            evaluator, u, evaluator.domain.batch(u.start, u.stop),
            Decisions(d.decision[rows], d.route[rows], d.targets[rows],
                      None if d.robust is None else d.robust[rows]),
            lambda inputs: {i: answered[i] for i in inputs if i in answered}))
    return evidence(name, evaluator.circuit, verdicts)
