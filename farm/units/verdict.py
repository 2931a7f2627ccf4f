"""What deciding one unit says, compactly: counts, tallies per class, a digest.

The actor decides every input of its range (`Evaluator.decide`: the sound screen,
exact arithmetic where the screen is not decisive) and sends back only what the
properties need: how many inputs each route decided, the inputs decided wrongly
(counted, the first few named), per content class how the unit's inputs decided,
and the SHA-256 of the decisions and routes, which a checker recomputes to catch a
flipped decision without the rows being stored anywhere. With robustness asked, also
how the unit's ε-balls were decided (`farm.units.robustness`); with edge necessity, what
the unit's search for each wanted edge's witness found (`farm.units.witness`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from farm.errors import FarmError
from farm.model.circuit import Edge
from farm.units.robustness import Ask, UnitRobustness, unit_robustness
from farm.units.unit import Unit
from farm.units.witness import Search, search_range
from farm.verify.evaluate import EXACT, KEEP, SCREEN, Decisions, Evaluator


@dataclass(frozen=True)
class Tally:
    """The unit's inputs of one decision and route within one content class."""

    decision: int  # a candidate token, or TIE
    route: int  # SCREEN or EXACT
    count: int
    inputs: tuple[int, ...]  # the first KEEP + 1 such inputs (one may be the anchor)

    @property
    def first(self) -> int:
        return self.inputs[0]


@dataclass(frozen=True)
class ClassTallies:
    code: int  # `Task.feature_codes`: inputs of one code must decide alike
    tallies: tuple[Tally, ...]



@dataclass(frozen=True)
class UnitVerdict:
    unit: Unit
    screen: int  # inputs the screen decided
    exact: int  # inputs the exact evaluator decided
    wrong: int  # inputs whose decision is not the program's (functional equivalence)
    wrong_first: tuple[int, ...]  # the first KEEP of them
    classes: tuple[ClassTallies, ...]
    digest: str  # sha256 of the decisions (int16 LE) then the routes (uint8)
    seconds: float = 0.0  # wall time of deciding it, where it ran
    robustness: UnitRobustness | None = None  # where robustness was asked
    searched: tuple[Search, ...] = ()  # edge necessity: each edge searched here, and found

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit.to_json(), "screen": self.screen, "exact": self.exact,
                "wrong": self.wrong, "wrong_first": list(self.wrong_first),
                "classes": [[c.code, [[t.decision, t.route, t.count, list(t.inputs)]
                                      for t in c.tallies]] for c in self.classes],
                "digest": self.digest, "seconds": self.seconds,
                "robustness": None if self.robustness is None else self.robustness.to_json(),
                "searched": [s.to_json() for s in self.searched]}

    @classmethod
    def from_json(cls, data: Any, where: str = "unit verdict") -> UnitVerdict:
        try:
            rob = data.get("robustness")  # absent from verdicts written before robustness
            return cls(Unit.from_json(data["unit"], where), int(data["screen"]),
                       int(data["exact"]), int(data["wrong"]),
                       tuple(map(int, data["wrong_first"])),
                       tuple(ClassTallies(int(code), tuple(
                           Tally(int(d), int(r), int(n), tuple(map(int, inputs)))
                           for d, r, n, inputs in ts)) for code, ts in data["classes"]),
                       str(data["digest"]), float(data["seconds"]),
                       None if rob is None else UnitRobustness.from_json(rob, where),
                       tuple(map(Search.from_json, data.get("searched", []))))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FarmError(f"{where}: malformed ({err})") from None


def digest(d: Decisions) -> str:
    """The decisions and routes of a range, as bytes a checker recomputes."""
    h = hashlib.sha256(d.decision.astype("<i2").tobytes())
    h.update(d.route.astype(np.uint8).tobytes())
    return h.hexdigest()


def decide_unit(evaluator: Evaluator, unit: Unit, ask: Ask | None = None,
                edges: Sequence[Edge] = ()) -> UnitVerdict:
    """Decide every input of the unit's range and summarise it; with the evaluator's ε,
    its robustness too: the ball bound's, and `ask`'s for the inputs the bound leaves
    (without `ask`, they stay undecided: what a checker derives without solvers). Each of
    `edges` is searched over the range for a witness (`farm.units.witness`)."""
    if unit.cube is not None:
        raise FarmError("a unit with a cube is a solver's (cube queries), not the screen's")
    if unit.stop > len(evaluator.domain):
        raise FarmError(f"unit [{unit.start}, {unit.stop}) lies outside {unit.task}'s "
                        f"{len(evaluator.domain)} inputs")
    t0 = time.perf_counter()
    prompts = evaluator.domain.batch(unit.start, unit.stop)
    d = evaluator.decide(unit.start, unit.stop, prompts)
    verdict = summarise(evaluator, unit, prompts, d, ask)
    searched = search_range(evaluator, unit.start, prompts, d.decision, edges)
    return replace(verdict, searched=searched, seconds=time.perf_counter() - t0)


def summarise(evaluator: Evaluator, unit: Unit, prompts: np.ndarray, d: Decisions,
              ask: Ask | None = None) -> UnitVerdict:
    """The verdict of a unit whose inputs (`prompts`) are decided (`d`); robustness where
    the evaluator has an ε (`decide_unit`)."""
    wrong = np.flatnonzero(d.decision != d.targets)
    codes = evaluator.task.feature_codes(prompts)
    classes = []
    for code in np.unique(codes):
        rows = codes == code
        index = unit.start + np.flatnonzero(rows)
        keys = d.decision[rows].astype(np.int64) * 2 + d.route[rows]
        found, count = np.unique(keys, return_counts=True)
        classes.append(ClassTallies(int(code), tuple(
            Tally(int(k // 2), int(k % 2), int(n), tuple(map(int, index[keys == k][:KEEP + 1])))
            for k, n in zip(found, count, strict=True))))
    return UnitVerdict(unit, int((d.route == SCREEN).sum()), int((d.route == EXACT).sum()),
                       len(wrong), tuple(int(unit.start + i) for i in wrong[:KEEP]),
                       tuple(classes), digest(d), robustness=None if d.robust is None
                       or evaluator.epsilon is None else unit_robustness(
                           evaluator.epsilon, unit.start, d.robust, ask))
