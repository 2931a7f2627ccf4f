"""Per-unit verdicts folded into the properties' results, once they cover the domain.

Functional equivalence adds up the units. Content invariance needs each class's
anchor (its first input in domain order, as `Evaluator.content_invariance` and
`Planner` define it), which may lie in another unit: the anchor is the earliest
first input over the units' tallies of the class, and every other member fails
unless it decides as the anchor does and the anchor is no tie. Routes follow the
evaluator's: a pair is exact if either of its inputs was. The results are those the
whole-domain evaluator would give (a test holds them to it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from encoders.properties import CONTENT_INVARIANCE, FUNCTIONAL_EQUIVALENCE
from farm.errors import FarmError
from farm.units.unit import cover_problems
from farm.units.verdict import Tally, UnitVerdict
from farm.verify.evaluate import EXACT, KEEP, ROUTES, SCREEN, TIE, Evaluator
from farm.verify.local import PropertyResult, fold

UNIT_PROPERTIES = (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE)  # decided by units


def fold_units(evaluator: Evaluator, verdicts: Sequence[UnitVerdict],
               properties: Sequence[str] = UNIT_PROPERTIES) -> list[PropertyResult]:
    """The requested unit properties of one (circuit, task); refused unless the verdicts
    cover the task's domain exactly once. Listed counterexamples are replayed exactly."""
    start = time.perf_counter()
    problems = cover_problems([v.unit for v in verdicts], len(evaluator.domain))
    if problems:
        raise FarmError(f"{evaluator.task.name}: the units do not cover the domain exactly "
                        f"once: {'; '.join(problems[:3])}")
    makers = {FUNCTIONAL_EQUIVALENCE: _functional_equivalence,
              CONTENT_INVARIANCE: _content_invariance}
    results = []
    for prop in properties:
        result = makers[prop](evaluator, verdicts)
        result.seconds = time.perf_counter() - start
        results.append(result)
    return results


def _result(prop: str, task: str, routes: dict[str, int], failing: int,
            listed: list[dict]) -> PropertyResult:
    result = fold(prop, task, [], [])
    result.status = "FAILED" if failing else "VERIFIED"
    result.counterexamples, result.failing = listed, failing
    result.routes = {r: n for r, n in routes.items() if n}
    return result


def _functional_equivalence(evaluator: Evaluator, verdicts: Sequence[UnitVerdict]
                            ) -> PropertyResult:
    wrong = sorted(i for v in verdicts for i in v.wrong_first)[:KEEP]
    routes = {ROUTES[SCREEN]: sum(v.screen for v in verdicts),
              ROUTES[EXACT]: sum(v.exact for v in verdicts)}
    return _result(FUNCTIONAL_EQUIVALENCE, evaluator.task.name, routes,
                   sum(v.wrong for v in verdicts),
                   [evaluator.input_detail(i) for i in wrong])


def _content_invariance(evaluator: Evaluator, verdicts: Sequence[UnitVerdict]
                        ) -> PropertyResult:
    by_code: dict[int, list[Tally]] = defaultdict(list)
    for v in verdicts:
        for c in v.classes:
            by_code[c.code].extend(c.tallies)
    routes = {ROUTES[SCREEN]: 0, ROUTES[EXACT]: 0}
    failing, pairs = 0, []
    for code in sorted(by_code):
        tallies = by_code[code]
        anchor = min(tallies, key=lambda t: t.first)
        for t in tallies:
            members = t.count - (t is anchor)  # the anchor pairs with no one
            routes[ROUTES[max(t.route, anchor.route)]] += members
            if members and (anchor.decision == TIE or t.decision != anchor.decision):
                failing += members
                pairs += [(anchor.first, i) for i in t.inputs if i != anchor.first]
    listed = [evaluator.pair_detail(a, b)
              for a, b in sorted(pairs, key=lambda p: p[1])[:KEEP]]
    return _result(CONTENT_INVARIANCE, evaluator.task.name, routes, failing, listed)
