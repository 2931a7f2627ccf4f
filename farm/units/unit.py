"""The unit of work: a (task, circuit) and a half-open range of the task's domain.

Small, typed and JSON-round-trippable, so that it names itself in a ledger part, a
certificate's sidecar and a Ray call alike. `cube` is left for cube queries
(symbolic positions): a unit with a cube is decided by a solver, not by this range.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import rfc8785

from farm.errors import FarmError
from farm.model.circuit import Circuit


@dataclass(frozen=True)
class Unit:
    task: str  # canonical task spec, e.g. "quote_close:len=8,fillers=4"
    circuit: str  # sha256 of the circuit's canonical JSON
    start: int  # first domain index
    stop: int  # one past the last
    cube: dict[str, Any] | None = None  # symbolic positions (cube queries); None: the range

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int) and isinstance(self.stop, int)
                and 0 <= self.start < self.stop):
            raise FarmError(f"unit {self.task} [{self.start}, {self.stop}): a range needs "
                            "0 <= start < stop")

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        """Its name: equal units, and only they, share it."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "circuit": self.circuit, "start": self.start,
                "stop": self.stop, "cube": self.cube}

    @classmethod
    def from_json(cls, data: Any, where: str = "unit") -> Unit:
        if not isinstance(data, dict) or set(data) != {"task", "circuit", "start", "stop",
                                                       "cube"}:
            raise FarmError(f"{where}: expected task, circuit, start, stop and cube")
        for name, kind in (("task", str), ("circuit", str), ("start", int), ("stop", int)):
            if type(data[name]) is not kind:
                raise FarmError(f"{where}: {name} must be {kind.__name__}")
        if data["cube"] is not None and not isinstance(data["cube"], dict):
            raise FarmError(f"{where}: cube must be an object or null")
        return cls(data["task"], data["circuit"], data["start"], data["stop"], data["cube"])


def circuit_hash(circuit: Circuit) -> str:
    """The circuit's name in a unit: SHA-256 of its canonical JSON (RFC 8785, as a signed
    certificate carries it: there an extracted circuit's `min_agreement: 1.0` reads back
    as 1, and must still name the same circuit)."""
    return hashlib.sha256(rfc8785.dumps(circuit.to_json_dict())).hexdigest()


def split(task: str, circuit: str, size: int, unit_size: int) -> list[Unit]:
    """The domain 0..size-1 in consecutive units of `unit_size` (the last may be short):
    consecutive inputs share their prefixes, which the screen evaluates once."""
    if unit_size < 1:
        raise FarmError("unit_size must be at least 1")
    return [Unit(task, circuit, a, min(a + unit_size, size)) for a in range(0, size, unit_size)]


def cover_problems(units: list[Unit], size: int) -> list[str]:
    """Why `units` (of one task and circuit) do not cover 0..size-1 exactly once: each
    gap, duplicate and overlap named; [] when they do."""
    problems: list[str] = []
    at, prev = 0, (-1, -1)
    for u in sorted(units, key=lambda u: (u.start, u.stop)):
        if u.cube is not None:
            problems.append(f"unit [{u.start}, {u.stop}) has a cube this checker does not "
                            "decide")
        if u.start > at:
            problems.append(f"inputs [{at}, {u.start}) are in no unit")
        elif u.start < at:
            what = "is listed twice" if (u.start, u.stop) == prev else "overlaps the one before"
            problems.append(f"unit [{u.start}, {u.stop}) {what}")
        prev = (u.start, u.stop)
        at = max(at, u.stop)
    if at < size:
        problems.append(f"inputs [{at}, {size}) are in no unit")
    if at > size:
        problems.append(f"units reach index {at - 1}, past the domain's {size} inputs")
    return problems
