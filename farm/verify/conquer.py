"""Cube-and-conquer: functional equivalence and content invariance proved over cubes.

A lookup task's answer is a function of its decisive token, so the cubes that fix
the opener (its position per SPEC) and leave every filler symbolic are where one
claim, "the circuit decides c", holds for every prompt (SCALE principle 3). Each
cube is asked of Z3 and cvc5 racing (`encoders.solvers`; `both` cross-checks) as
an exact cube query (`encoders.cube`):

* UNSAT proves the claim for every prompt of the cube;
* SAT names a prompt, replayed in exact arithmetic: a real counterexample is
  reported and the cube split, so that every input is still decided and counted;
  a model that does not replay is an encoder bug, an error, never a verdict;
* a timeout, or a cube with no exact linear encoding (`TooWide`), is split along
  one symbolic position, down to cubes small enough for the screen, which decides
  their concrete prompts (the exact evaluator where it cannot).

The split policy starts from the largest cubes and learns from measured solve
times: once cubes of some size were slow, larger ones are split without asking.
Content invariance follows for the members of a class whose cubes all prove the
class anchor's decision; a class left to the screen is decided input by input.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from tqdm import tqdm

from encoders.cache import ResultCache
from encoders.cube import CubeQuery, Hints, TooWide, cube_query
from encoders.properties import (
    CONTENT_INVARIANCE,
    FUNCTIONAL_EQUIVALENCE,
    Claim,
    EncodeMode,
    sign,
)
from encoders.solvers import RaceResult, SolverDisagreement, SolverPool
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.tasks.task import Task
from farm.verify.cube import Cube
from farm.verify.evaluate import BATCH, KEEP, ROUTES, TIE, Evaluator, evaluate_task, exact_decision
from farm.verify.local import SOLVERS, LocalFarm, PropertyResult, VerifyOptions, fold

__all__ = ["LEAF", "CubeOutcome", "SplitPolicy", "class_cubes", "cube_properties",
           "verify_by_cubes"]

LEAF = 16  # cubes of at most this many prompts go to the screen: it decides them in
# microseconds, where a cube query costs seconds
HINTS = 16  # prompts of a cube whose exact branches settle its query in advance
REFINE = 3  # times a cube is asked again with a prompt its hints missed


@dataclass
class SplitPolicy:
    """Which cubes to ask and where to split, learned from measured solve times.

    `quick`: seconds a cube query may take (its time limit). A cube of some size
    answered slowly, or not at all, marks that size slow: cubes at least as large
    are split without asking, so the solvers get the largest cubes they decide
    quickly."""

    quick: float = 10.0
    leaf: int = LEAF
    slow: float = float("inf")  # the smallest cube size measured slow
    times: dict[int, list[float]] = field(default_factory=dict)  # cube size -> solve times

    def ask(self, cube: Cube) -> bool:
        return self.leaf < cube.size < self.slow

    def record(self, cube: Cube, seconds: float, decided: bool) -> None:
        self.times.setdefault(cube.size, []).append(seconds)
        if not decided or seconds > self.quick:
            self.slow = min(self.slow, cube.size)

    @staticmethod
    def position(cube: Cube) -> int:
        """The symbolic position to split: the widest, the latest among equals (the last
        token feeds the final position's query, whose tables it widens most)."""
        return max(cube.symbolic, key=lambda p: (len(cube.tokens[p]), p))


@dataclass(frozen=True)
class CubeOutcome:
    """One cube as asked (a query's verdict, with its hash) or left to the screen."""

    cube: Cube
    decision: int  # the candidate claimed for every prompt; TIE where evaluated per prompt
    how: str  # a query's verdict: "unsat" (proved), "sat" or "unknown" (split after);
    # or "screen" (its prompts evaluated one by one)
    query_hash: str | None = None
    winner: str | None = None
    seconds: float = 0.0
    hints: tuple[tuple[int, ...], ...] = ()  # the prompts whose branches its query settled

    def to_json(self) -> dict[str, Any]:
        return {"cube": self.cube.to_json(), "size": self.cube.size, "decision": self.decision,
                "how": self.how, "query_hash": self.query_hash, "winner": self.winner,
                "seconds": round(self.seconds, 4), "hints": [list(p) for p in self.hints]}


@dataclass
class _Tally:
    """What one property's conquest asked and found."""

    outcomes: list[CubeOutcome] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)  # sat/unsat/unknown per query asked
    too_wide: int = 0
    wins: Counter = field(default_factory=Counter)
    solver_seconds: Counter = field(default_factory=Counter)
    counterexamples: list[dict[str, Any]] = field(default_factory=list)  # replayed SAT models


def class_cubes(evaluator: Evaluator) -> list[Cube]:
    """The domain split at its decisive position: one cube per opener, fillers symbolic."""
    position = getattr(evaluator.task, "opener_position", None)
    if position is None:
        raise FarmError(f"the cube route needs a lookup task (an answer read from one decisive "
                        f"position); {evaluator.task.name} has none")
    return Cube.of_domain(evaluator.domain).split(position)


class _Conqueror:
    """Decides cubes for one (evaluator, solver pool), sharing verdicts by query hash:
    content invariance asks functional equivalence's queries word for word."""

    def __init__(self, evaluator: Evaluator, pool: SolverPool, policy: SplitPolicy) -> None:
        self.ev, self.pool, self.policy = evaluator, pool, policy
        self.answers: dict[str, tuple[RaceResult, float]] = {}
        c0, c1 = evaluator.task.candidates
        self.candidates = (c0, c1)

    def conquer(self, cubes: Sequence[Cube], decision_of: Callable[[Cube], int],
                label: str, progress: bool) -> _Tally:
        """Decide every prompt of `cubes`; `decision_of(cube)` is the candidate to prove."""
        tally, todo = _Tally(), list(reversed(cubes))
        with tqdm(total=sum(c.size for c in cubes), desc=label, unit="in", leave=False,
                  disable=not progress, dynamic_ncols=True) as bar:
            while todo:
                cube = todo.pop()
                decision = decision_of(cube)
                if cube.size <= self.policy.leaf or decision == TIE:
                    tally.outcomes.append(CubeOutcome(cube, TIE, "screen"))
                    bar.update(cube.size)
                    continue
                if self.policy.ask(cube) and self._prove(cube, decision, tally):
                    bar.update(cube.size)
                    continue
                todo += reversed(cube.split(self.policy.position(cube)))
        return tally

    def _prove(self, cube: Cube, decision: int, tally: _Tally) -> bool:
        """Ask the cube; True if proved (recorded in `tally`), False if it must be split.

        The query settles what `HINTS` of the cube's prompts agree on. A SAT model whose
        prompt decides as claimed but took a branch a settled part excludes (learning it
        changes the query) is learnt as a hint and the cube asked again, up to `REFINE`
        times; one that satisfies every settled part is an encoder bug, an error."""
        c0, _ = self.candidates
        claim = Claim("decides", 1 if decision == c0 else -1)
        runs = self.ev.runs(self.ev.circuit)

        def plan(hints: Hints) -> CubeQuery:
            return cube_query(self.ev.model, self.ev.circuit, cube.tokens, self.candidates,
                              claim, hints)

        hints, spent = Hints.of(runs, cube.sample(HINTS)), 0.0
        try:
            query = plan(hints)
        except TooWide:  # as wide a cube has no linear encoding either: split those
            tally.too_wide += 1
            self.policy.record(cube, float("inf"), decided=False)
            return False
        for _ in range(REFINE + 1):
            asked, asked_hash = hints, query.hash
            result, seconds = self._solve(query)
            spent += seconds
            status = result.status
            if status == "sat":
                prompt = query.prompt(result.model)
                margin = self._margin(prompt)
                if query.claim.holds([margin]):
                    learnt = hints.add(runs, [prompt])
                    again = plan(learnt)
                    if again.hash != query.hash:  # a settled part excluded its branch
                        status, hints, query = "missed", learnt, again
                if status == "sat":  # replayed: a real counterexample, or an encoder bug
                    tally.counterexamples.append(self._replay(query, prompt, margin, cube))
            tally.statuses[status] += 1
            if result.winner:
                tally.wins[result.winner] += 1
            for v in result.verdicts:
                tally.solver_seconds[v.solver] += v.seconds
            if status != "missed":
                break
        else:
            status = "unknown"  # the hints kept missing: split
        self.policy.record(cube, spent, status != "unknown")
        tally.outcomes.append(CubeOutcome(cube, decision, status, asked_hash, result.winner,
                                          spent, tuple(sorted(asked.prompts))))
        return status == "unsat"

    def _margin(self, prompt: tuple[int, ...]) -> Fraction:
        """logit[c0] − logit[c1] of the circuit on `prompt`, in exact arithmetic."""
        row = self.ev.runs(self.ev.circuit).row(prompt)
        c0, c1 = self.candidates
        return row.logits[c0] - row.logits[c1]

    def _solve(self, query: CubeQuery) -> tuple[RaceResult, float]:
        if (hit := self.answers.get(query.hash)) is None:
            start = time.perf_counter()
            try:
                result = self.pool.solve(query.text, query.model_vars, self.policy.quick,
                                         kind="cube")
            except SolverDisagreement as e:
                raise FarmError(f"cube query {query.hash[:16]}…: {e}") from None
            hit = self.answers[query.hash] = (result, time.perf_counter() - start)
        return hit

    def _replay(self, query: CubeQuery, prompt: tuple[int, ...], margin: Fraction,
                cube: Cube) -> dict[str, Any]:
        """A SAT model's prompt and its exact margin: it must break the claim."""
        if query.claim.holds([margin]):
            raise FarmError(f"cube {cube}: the solvers' counterexample {list(prompt)} decides as "
                            f"claimed in exact arithmetic (margin {margin}): the cube encoding "
                            "is wrong")
        return {"subject": f"cube {cube} counterexample {list(prompt)}", "prompts": [list(prompt)],
                "exact_margins": [str(margin)], "exact_margin_float": float(margin),
                "sign": sign(margin), "query_hash": query.hash}

    def leaves(self, tally: _Tally) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prompts of the cubes left to the screen, with their decisions and routes."""
        cubes = [o.cube for o in tally.outcomes if o.how == "screen"]
        if not cubes:
            empty = np.empty((0, len(self.ev.domain.positions)), dtype=np.int64)
            return empty, np.empty(0, dtype=np.int16), np.empty(0, dtype=np.uint8)
        prompts = np.concatenate([c.prompts() for c in cubes])
        decision = np.empty(len(prompts), dtype=np.int16)
        route = np.empty(len(prompts), dtype=np.uint8)
        for first in range(0, len(prompts), BATCH):  # the screen's batch, as the screen route's
            rows = slice(first, first + BATCH)
            chunk = prompts[rows]  # not a range of the domain: decided from the prompts
            found = self.ev.decide(first, first + len(chunk), chunk, self.ev.task.targets(chunk))
            decision[rows], route[rows] = found.decision, found.route
        return prompts, decision, route


def verify_by_cubes(ckpt: Checkpoint, circuit: Circuit, task: Task, properties: Sequence[str],
                    solvers: Callable[[], LocalFarm], cache: ResultCache | None = None,
                    options: VerifyOptions | None = None, policy: SplitPolicy | None = None,
                    encoding: EncodeMode = "guided") -> list[PropertyResult]:
    """The requested properties of one (circuit, task): functional equivalence and content
    invariance by cube-and-conquer, edge necessity and robustness as the screen route
    decides them (`farm.verify.evaluate`; `encoding` is its robustness queries')."""
    options = options or VerifyOptions()
    policy = policy or SplitPolicy()
    evaluator = Evaluator(ckpt, circuit, task, progress=options.progress)
    by_cubes = [p for p in properties if p in (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE)]
    cubed = dict(zip(by_cubes, cube_properties(
        evaluator, by_cubes, solvers().pools[0], policy, options.progress), strict=True))
    rest = [p for p in properties if p not in cubed]
    evaluated = dict(zip(rest, evaluate_task(ckpt, circuit, task, rest, solvers, cache, options,
                                             encoding=encoding, evaluator=evaluator),
                         strict=True))
    return [cubed.get(p) or evaluated[p] for p in properties]


def cube_properties(evaluator: Evaluator, properties: Sequence[str], pool: SolverPool,
                    policy: SplitPolicy | None = None, progress: bool = True
                    ) -> list[PropertyResult]:
    """Each of `properties` (functional equivalence, content invariance) by cubes; a cube
    query's time limit is the policy's `quick`."""
    conqueror = _Conqueror(evaluator, pool, policy or SplitPolicy())
    cubes = class_cubes(evaluator)
    results = []
    for prop in properties:
        start = time.perf_counter()
        if prop == FUNCTIONAL_EQUIVALENCE:
            result = _functional_equivalence(conqueror, cubes, progress)
        elif prop == CONTENT_INVARIANCE:
            result = _content_invariance(conqueror, cubes, progress)
        else:
            raise FarmError(f"the cube route decides {FUNCTIONAL_EQUIVALENCE} and "
                            f"{CONTENT_INVARIANCE}, not {prop}")
        result.seconds = time.perf_counter() - start
        results.append(result)
    return results


def _functional_equivalence(c: _Conqueror, cubes: list[Cube], progress: bool) -> PropertyResult:
    """Per cube: the circuit decides P's answer, the same on every prompt of a class cube."""
    task = c.ev.task
    tally = c.conquer(cubes, lambda cube: task.target(_first(cube)),
                      f"{task.name} functional equivalence (cubes)", progress)
    prompts, decision, route = c.leaves(tally)
    wrong = np.flatnonzero(decision != task.targets(prompts))
    listed = [_detail(c.ev, prompts[i]) for i in wrong[:KEEP]]
    return _result(FUNCTIONAL_EQUIVALENCE, c.ev, tally, route, listed, len(wrong))


def _content_invariance(c: _Conqueror, cubes: list[Cube], progress: bool) -> PropertyResult:
    """Per class: every member decides as the class's anchor (its first input in domain
    order) decides exactly, and that is no tie (as `Planner` and the screen route pair)."""
    task, runs = c.ev.task, c.ev.runs(c.ev.circuit)
    anchors = {}
    for cube in cubes:  # a class cube's first prompt is its class's first in domain order
        anchor = _first(cube)
        anchors[task.features(anchor)] = exact_decision(runs.row(anchor), task.candidates)
    tally = c.conquer(cubes, lambda cube: anchors[task.features(_first(cube))],
                      f"{task.name} content invariance (cubes)", progress)
    prompts, decision, route = c.leaves(tally)
    expected = np.array([anchors[task.features(tuple(p))] for p in prompts.tolist()],
                        dtype=np.int16)
    fails = np.flatnonzero((decision != expected) | (expected == TIE))
    listed = [_detail(c.ev, prompts[i]) for i in fails[:KEEP]]
    return _result(CONTENT_INVARIANCE, c.ev, tally, route, listed, len(fails))


def _first(cube: Cube) -> tuple[int, ...]:
    return tuple(ts[0] for ts in cube.tokens)


def _detail(ev: Evaluator, prompt: np.ndarray) -> dict[str, Any]:
    return ev.input_detail(ev.domain.index(tuple(prompt.tolist())))


def _result(prop: str, ev: Evaluator, tally: _Tally, leaf_routes: np.ndarray,
            listed: list[dict[str, Any]], failing: int) -> PropertyResult:
    result = fold(prop, ev.task.name, [], [])
    result.status = "FAILED" if failing else "VERIFIED"
    result.counterexamples, result.failing = listed, failing
    result.queries = sum(tally.statuses.values())
    result.unsat, result.sat = tally.statuses["unsat"], tally.statuses["sat"]
    result.unknown = tally.statuses["unknown"]
    result.wins = {s: tally.wins[s] for s in SOLVERS}
    result.solver_seconds = {s: tally.solver_seconds[s] for s in SOLVERS}
    counts = np.bincount(leaf_routes, minlength=len(ROUTES))
    routes = {"cube": sum(o.cube.size for o in tally.outcomes if o.how == "unsat"),
              "screen": int(counts[0]), "exact": int(counts[1])}
    result.routes = {r: n for r, n in routes.items() if n}
    result.cubes = [o.to_json() for o in tally.outcomes if o.how != "screen"]
    missed = tally.statuses["missed"]
    if tally.counterexamples or tally.too_wide or missed:
        result.problems = [*({"subject": e["subject"], "reason": "a SAT cube's counterexample, "
                              "replayed exactly; its cube was split"} for e in
                             tally.counterexamples[:KEEP]),
                           *([{"subject": f"{tally.too_wide} cubes", "reason": "no exact linear "
                               "encoding (two wide factors of a product): split"}]
                             if tally.too_wide else []),
                           *([{"subject": f"{missed} cube queries", "reason": "SAT on a prompt "
                               "that took a branch no hint took and decides as claimed: "
                               "learnt as a hint, the cube asked again"}] if missed else [])]
    return result
