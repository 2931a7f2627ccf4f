"""Per-unit verdicts folded into the properties' results, once they cover the domain.

Functional equivalence adds up the units. Content invariance needs each class's
anchor (its first input in domain order, as `Evaluator.content_invariance` and
`Planner` define it), which may lie in another unit: the anchor is the earliest
first input over the units' tallies of the class, and every other member fails
unless it decides as the anchor does and the anchor is no tie. Routes follow the
evaluator's: a pair is exact if either of its inputs was. Robustness adds up each
unit's ball-bound proofs and solver answers (`farm.units.robustness`). The results are
those the whole-domain evaluator would give (a test holds them to it). Edge necessity
takes each edge's witness from the units' searches (`farm.units.witness`), the one of
the smallest input where several units found one.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from fractions import Fraction

from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    NO_WITNESS,
    ROBUSTNESS,
)
from farm.errors import FarmError
from farm.units.robustness import OUTCOMES, counterexample_detail, planner_of
from farm.units.unit import cover_problems
from farm.units.verdict import Tally, UnitVerdict
from farm.verify.evaluate import EXACT, KEEP, ROUTES, SCREEN, TIE, Evaluator
from farm.verify.local import SOLVERS, PropertyResult, fold

DECISION_PROPERTIES = (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE)  # the units' decisions
UNIT_PROPERTIES = (*DECISION_PROPERTIES, ROBUSTNESS)  # folded from units


def fold_units(evaluator: Evaluator, verdicts: Sequence[UnitVerdict],
               properties: Sequence[str] = DECISION_PROPERTIES) -> list[PropertyResult]:
    """The requested unit properties of one (circuit, task); refused unless the verdicts
    cover the task's domain exactly once. Listed counterexamples are replayed exactly."""
    start = time.perf_counter()
    problems = cover_problems([v.unit for v in verdicts], len(evaluator.domain))
    if problems:
        raise FarmError(f"{evaluator.task.name}: the units do not cover the domain exactly "
                        f"once: {'; '.join(problems[:3])}")
    makers = {FUNCTIONAL_EQUIVALENCE: _functional_equivalence,
              CONTENT_INVARIANCE: _content_invariance, ROBUSTNESS: _robustness,
              EDGE_NECESSITY: _edge_necessity}
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


def _robustness(evaluator: Evaluator, verdicts: Sequence[UnitVerdict]) -> PropertyResult:
    """Robustness as `farm.verify.evaluate.robustness` reports it: the bound's proofs, the
    solvers' answers (ERROR > FAILED > UNKNOWN > VERIFIED), counterexamples counted whole
    and the first `KEEP` replayed from their η."""
    if missing := [v.unit for v in verdicts if v.robustness is None]:
        raise FarmError(f"{evaluator.task.name}: unit [{missing[0].start}, {missing[0].stop}) "
                        "was decided without robustness")
    parts = [v.robustness for v in verdicts if v.robustness is not None]
    if len(epsilons := {p.epsilon for p in parts}) != 1:
        raise FarmError(f"{evaluator.task.name}: the units state robustness at several radii "
                        f"({', '.join(sorted(epsilons))})")
    eps = Fraction(epsilons.pop())
    every = [a for p in parts for a in p.asked]
    answers = [x for a in every for x in a.answers]
    kinds = Counter(a.outcome for a in every)
    failing, undecided = kinds["counterexample"], kinds["undecided"]
    planner = planner_of(evaluator) if failing else None
    listed = [counterexample_detail(planner, a, eps) for a in every  # type: ignore[arg-type]
              if a.outcome == "counterexample"][:KEEP]
    result = _result(ROBUSTNESS, evaluator.task.name, {
        ROUTES[SCREEN]: sum(p.bound for p in parts), "solver": len(every) - undecided,
        "undecided": undecided}, failing, listed)
    if kinds["error"]:
        result.status = "ERROR"
    elif not failing and kinds["unknown"] + undecided:
        result.status = "UNKNOWN"
    verdicts_ = Counter(x.verdict for x in answers)
    result.epsilon, result.queries = str(eps), len(answers)
    result.unsat, result.sat = verdicts_["unsat"], verdicts_["sat"]
    result.unknown, result.errors = verdicts_["unknown"] + undecided, kinds["error"]
    result.escalated = sum(len(a.answers) > 1 for a in every)
    result.wins = {s: sum(x.winner == s for x in answers) for s in SOLVERS}
    result.problems = [{"subject": evaluator.subject(a.input), "reason": a.reason or (
        "neither the screen's ball bound proved it nor were the solvers asked")}
        for a in every if a.outcome in OUTCOMES[2:]][:KEEP]
    return result


def _edge_necessity(evaluator: Evaluator, verdicts: Sequence[UnitVerdict]) -> PropertyResult:
    """Per edge, the witness of the smallest input any unit found, confirmed by two exact
    runs; an edge no unit found one for fails, and must have been searched by every unit."""
    routes, witnesses, listed = [], [], []
    for edge in evaluator.circuit.ordered_edges():
        name = f"edge {edge[0]}->{edge[1]}"
        searches = [s for v in verdicts for s in v.searched if s.edge == edge]
        found = [s for s in searches if s.input is not None]
        if found:
            best = min(found, key=lambda s: s.input)  # type: ignore[arg-type, return-value]
            i = int(best.input)  # type: ignore[arg-type]
            if not evaluator.differs(i, evaluator.circuit.without(edge)):
                raise FarmError(f"{evaluator.task.name}: {name}: input {i} is no witness "
                                "(exact runs with and without the edge decide alike)")
            routes.append(best.route)
            witnesses.append({"edge": list(edge), "input": i, "route": ROUTES[best.route],
                              "subject": f"{name} witness {evaluator.subject(i)}"})
            continue
        if len(searches) < len(verdicts):
            raise FarmError(f"{evaluator.task.name}: {name} has no witness, but "
                            f"{len(verdicts) - len(searches)} units did not search for one")
        routes.append(max(s.route for s in searches))
        listed.append({"subject": name, "reason": NO_WITNESS})
    result = _result(EDGE_NECESSITY, evaluator.task.name,
                     dict(Counter(ROUTES[r] for r in routes)), len(listed), listed)
    result.witnesses = witnesses
    return result
