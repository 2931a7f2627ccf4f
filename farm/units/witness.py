"""Edge necessity's witnesses, searched unit by unit where the units are decided.

A witness of edge e is an input whose exact decision changes when e is removed. A unit
searches its own range for the edges the driver still lacks a witness for: the screen
of the circuit without e, fed the unit's own decisions, names the inputs it proves flip
(each confirmed by two exact runs) and leaves open only those it cannot decide, which
exact runs then settle; the inputs it proves unchanged need no exact run. The verdict
keeps what each edge's search found, so the driver stops asking for an edge once it
has a witness, and an edge is unnecessary only once every unit searched it in vain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from farm.errors import FarmError
from farm.model.circuit import Edge
from farm.verify.evaluate import EXACT, SCREEN, Evaluator


@dataclass(frozen=True)
class Search:
    """One edge searched over one unit's range."""

    edge: Edge
    input: int | None  # the witness found, or None: no input of the range flips
    route: int  # SCREEN: the screen settled it alone; EXACT: exact runs were needed

    def to_json(self) -> list[Any]:
        return [*self.edge, self.input, self.route]

    @classmethod
    def from_json(cls, data: Any) -> Search:
        src, dst, i, route = data
        if route not in (SCREEN, EXACT):
            raise FarmError(f"a witness search's route must be {SCREEN} or {EXACT}")
        return cls((str(src), str(dst)), None if i is None else int(i), int(route))


PROBES = (1024, 4096)  # the inputs screened first for a flip, then up to these, then the
# rest: a needed edge is usually witnessed early, and every unit in flight searches every
# edge still wanted, so a whole unit's ablated screen per edge would cost that many extra
# passes before the first witness comes back (3 units of 16,384, 4 edges: 7.3-7.8 s of
# search in one pass each, 1.9-2.6 s so)


def search_range(evaluator: Evaluator, first: int, prompts: np.ndarray, full: np.ndarray,
                 edges: Sequence[Edge]) -> tuple[Search, ...]:
    """Each edge's search over inputs first.. (`prompts`, decided `full` by the circuit):
    `Evaluator.first_flip` over the first `PROBES` inputs, then the rest."""
    n, found = len(prompts), []
    ends = [min(e, n) for e in (*PROBES, n)]
    parts = list(zip([0, *ends[:-1]], ends, strict=True))
    for edge in edges:
        chunks = ((first + a, prompts[a:b], full[a:b]) for a, b in parts if a < b)
        found.append(Search(edge, *evaluator.first_flip(evaluator.circuit.without(edge),
                                                        chunks)))
    return tuple(found)


def witnessed(searches: Sequence[Search]) -> set[Edge]:
    return {s.edge for s in searches if s.input is not None}
