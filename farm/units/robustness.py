"""Robustness by units: the ball bound first, the solvers where the unit is decided.

A unit's pass bounds every input's ε-ball (`Decisions.robust`); each input the bound
leaves is asked of Z3/cvc5 on the same actor (`ask_robustness`: the exact query, guided,
then re-asked fully where inconclusive; every SAT model replayed exactly; a timeout is
UNKNOWN and a disagreement an ERROR). The verdict keeps, per such input, each query's
hash and answer, and a counterexample's η exactly, so that a checker re-derives the
bound's decisions, plans every query again and compares its hash, replays every η and
holds every proof to the input's own decision; only an UNSAT answer itself it takes on
the signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from encoders.properties import ROBUSTNESS, Planner
from encoders.solvers import SolverUnavailable
from farm.errors import FarmError
from farm.verify.evaluate import Answers, Evaluator, ask_robustness
from farm.verify.local import Farm, LocalFarm, replay_eta

OUTCOMES = ("proved", "counterexample", "unknown", "error", "undecided")  # undecided: the
# solvers were not asked (over a budget), so UNKNOWN too
ROUNDS = ("first", "full")  # a first query, then one re-asked fully encoded where inconclusive


@dataclass(frozen=True)
class Answer:
    """One solver query: its identity and what it was told."""

    hash: str  # sha256 of the query's text
    verdict: str  # sat, unsat, unknown or error
    winner: str | None


@dataclass(frozen=True)
class Asked:
    """An input the ball bound left, as the solvers decided it."""

    input: int
    outcome: str  # one of OUTCOMES
    answers: tuple[Answer, ...]  # in the order asked (see ROUNDS)
    eta: tuple[str, ...] = ()  # a counterexample's η, exactly: a checker replays it
    reason: str = ""  # unknown or error: why


@dataclass(frozen=True)
class UnitRobustness:
    """A unit's robustness at ε: how many inputs the ball bound proved, and the rest."""

    epsilon: str
    bound: int
    asked: tuple[Asked, ...]  # every input the bound left, in input order

    def count(self, *outcomes: str) -> int:
        return sum(a.outcome in outcomes for a in self.asked)

    def counts(self) -> dict[str, int]:
        """Per route: the bound's proofs, the solvers' proofs, counterexamples, the rest."""
        return {"bound": self.bound, "proved": self.count("proved"),
                "counterexample": self.count("counterexample"),
                "unknown": self.count("unknown", "error", "undecided")}

    def to_json(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "bound": self.bound, "asked": [
            [a.input, a.outcome, [[x.hash, x.verdict, x.winner] for x in a.answers],
             list(a.eta), a.reason] for a in self.asked]}

    @classmethod
    def from_json(cls, data: Any, where: str) -> UnitRobustness:
        try:
            asked = tuple(Asked(int(i), str(outcome), tuple(
                Answer(str(h), str(v), None if w is None else str(w)) for h, v, w in answers),
                tuple(map(str, eta)), str(reason))
                for i, outcome, answers, eta, reason in data["asked"])
            found = cls(str(data["epsilon"]), int(data["bound"]), asked)
        except (KeyError, TypeError, ValueError) as err:
            raise FarmError(f"{where}: malformed robustness ({err})") from None
        if bad := [a.outcome for a in asked if a.outcome not in OUTCOMES]:
            raise FarmError(f"{where}: robustness outcome {bad[0]!r} is not one of "
                            f"{', '.join(OUTCOMES)}")
        return found


Ask = Callable[[Sequence[int]], Answers]  # inputs -> what the solvers said of each


def unit_robustness(epsilon: Fraction, start: int, robust: np.ndarray,
                    ask: Ask | None = None) -> UnitRobustness:
    """The robustness of a unit whose first input is `start` and whose ball bound held
    on `robust`; the inputs it leaves are asked (`ask`), or left undecided without it."""
    left = [start + int(k) for k in np.flatnonzero(~robust)]
    answers = ask(left) if ask is not None and left else {}
    return UnitRobustness(str(epsilon), int(robust.sum()), tuple(
        asked(i, *answers[i]) if i in answers else Asked(i, "undecided", ()) for i in left))


def asked(i: int, judged: Sequence[Any], outcome: Any) -> Asked:
    """One input's judged queries and final outcome (`Answers`), as a verdict keeps them."""
    kind = "unknown" if outcome.kind == "inconclusive" else outcome.kind
    return Asked(i, kind, tuple(Answer(q.hash, rec.status, rec.winner) for q, rec, _ in judged),
                 tuple(outcome.detail["eta"]) if kind == "counterexample" else (),
                 str(outcome.detail.get("reason", "")) if kind in ("unknown", "error") else "")


class SolverAsk:
    """`Ask` on this process's own solvers (a unit actor's): one planner per evaluator, and
    one warm pool, started when a unit first leaves an input (solvers take seconds)."""

    def __init__(self, mode: str, timeout: float) -> None:
        self.mode, self.timeout = mode, timeout
        self.farm: LocalFarm | None = None
        self.planners: dict[int, Planner] = {}

    def __call__(self, evaluator: Evaluator) -> Ask:
        assert evaluator.epsilon is not None, "robustness needs the evaluator's ε"
        eps = evaluator.epsilon

        def ask(inputs: Sequence[int]) -> Answers:
            answers = ask_robustness(self.planner(evaluator), inputs, eps, self.solvers())
            if any(o.kind == "error" and str(o.detail.get("reason", "")).startswith(
                    SolverUnavailable.__name__) for _, o in answers.values()):
                raise SolverUnavailable("a solver process died while a unit was asked: the "
                                        "unit's host decides (an actor restarts)")
            return answers
        return ask

    @property
    def started(self) -> bool:
        """Whether its solvers ever ran here (if they die later, something killed them)."""
        return self.farm is not None and any(p.started for p in self.farm.pools)

    def planner(self, evaluator: Evaluator) -> Planner:
        if id(evaluator) not in self.planners:
            self.planners[id(evaluator)] = planner_of(evaluator)
        return self.planners[id(evaluator)]

    def solvers(self) -> Farm:
        if self.farm is None:
            self.farm = LocalFarm(self.mode, self.timeout, jobs=1)
        return self.farm

    def close(self) -> None:
        if self.farm is not None:
            self.farm.close()


def planner_of(evaluator: Evaluator) -> Planner:
    """Robustness queries as units plan them, and a checker plans them again: from the
    circuit's own exact runs (no recorded trace)."""
    return Planner(evaluator.model, evaluator.circuit, evaluator.task)


def query(planner: Planner, i: int, epsilon: Fraction, round_: int) -> Any:
    """The query of input i asked in round `round_` (0: first, 1: re-asked fully)."""
    return planner.robustness_query(i, epsilon, ROBUSTNESS, None if round_ == 0 else "full")


def counterexample_detail(planner: Planner, a: Asked, epsilon: Fraction) -> dict[str, Any]:
    """A counterexample as `judge` reported it, rebuilt from its η by exact replay."""
    q = query(planner, a.input, epsilon, len(a.answers) - 1)
    residual = planner.results[a.input].final_residual
    _, _, detail = replay_eta(planner.model, q.task, q.subject, q.prompts, residual, epsilon,
                              [Fraction(e) for e in a.eta])
    return detail


def robustness_problems(planner: Planner, recorded: UnitRobustness, derived: UnitRobustness,
                        where: str) -> list[str]:
    """What a checker finds wrong with a unit's recorded robustness: the bound's decisions
    against `derived` (decided again, nothing asked), every query's hash against the query
    planned again, every counterexample's η replayed, every proof against the input's own
    decision (an input decided wrongly is refuted at η = 0)."""
    if (recorded.epsilon, recorded.bound, [a.input for a in recorded.asked]) != (
            derived.epsilon, derived.bound, [a.input for a in derived.asked]):
        return [f"{where}: the ball bound re-derives differently (eps {derived.epsilon}: "
                f"{derived.bound} proved, {len(derived.asked)} left; recorded eps "
                f"{recorded.epsilon}: {recorded.bound} proved, {len(recorded.asked)} left)"]
    eps, problems = Fraction(recorded.epsilon), []
    for a in recorded.asked:
        name = f"{where}: input {a.input}"
        if a.outcome == "undecided":
            if a.answers:
                problems.append(f"{name} is undecided but lists solver answers")
            continue
        if not 1 <= len(a.answers) <= len(ROUNDS):
            problems.append(f"{name} lists {len(a.answers)} solver queries")
            continue
        planned = [query(planner, a.input, eps, k) for k in range(len(a.answers))]
        problems += [f"{name}: its {ROUNDS[k]} query's hash is not that of the query planned "
                     "again" for k, (q, answer) in enumerate(zip(planned, a.answers,
                                                                 strict=True))
                     if q.hash != answer.hash]
        last, q = a.answers[-1].verdict, planned[-1]
        residual = planner.results[a.input].final_residual
        if a.outcome == "proved":
            if last != "unsat" or not q.claim.holds([planner.margin(planner.results[a.input])]):
                problems.append(f"{name} is stated robust, but "
                                + ("its last query was not unsat" if last != "unsat" else
                                   "it is refuted at η = 0 (its own decision is wrong)"))
        elif a.outcome == "counterexample":
            try:
                margins, _, _ = replay_eta(planner.model, q.task, q.subject, q.prompts,
                                           residual, eps, [Fraction(e) for e in a.eta])
            except (ValueError, ZeroDivisionError):  # an η of the wrong length, or no number
                margins = ()
            if last != "sat" or not margins or q.claim.holds(margins):
                problems.append(f"{name}: its counterexample does not replay (η outside the "
                                "ε-ball, or the decision unchanged)")
    return problems
