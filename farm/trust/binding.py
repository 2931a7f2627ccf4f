"""Claims bound to exact facts: every record planned again, every ground claim evaluated,
every counterexample replayed.

A certificate's sidecar says which query texts (by SHA-256) the solvers answered;
its predicate says which circuit, property and ε those answers speak of. Only
planning ties the two, so here the queries are planned again from the checkpoint
and the certified circuit, in exact arithmetic:

* bound: each unsat record must be, subject and hash, a query the planner writes
  for the instance its subject names (an input, a pair, an edge and its witness,
  robustness's input at the stated ε, first asked or asked again);
* true: a query about constant inputs (functional equivalence, content
  invariance, edge necessity's witness) states a ground fact, which the planner
  evaluates exactly; an unsat record of a claim that is false is an error the
  property must count (an honest farm reports ERROR), never a proof;
* covered: a VERIFIED property must have such a record for every instance of
  its plan (each input; each retained edge; each member of an opener class, or
  each pair where the plan asks pairs), and content invariance as many instances
  as its plan has, so a count of records cannot stand in for the instances;
* replayed: each counterexample is rebuilt exactly from what it names (the
  planned margins of its inputs, or robustness's η pushed through the final norm
  and lm_head) and must equal what is stated and refute the claim; an edge
  necessity finding (no witness) is searched for again over the whole domain.

What is left to trust is the signer's word that the hashes of queries with a free
η (robustness) were unsat. It costs planning and exact runs (seconds), never a solver.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    NO_WITNESS,
    ROBUSTNESS,
    Fixed,
    PlannedQuery,
    Planner,
)
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit, Edge
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.local import (
    QueryRecord,
    VerifyOptions,
    first_round_count,
    fixed_detail,
    replay_eta,
)

__all__ = ["claim_problems"]

_INPUT = re.compile(r"input (\d+) ")
_PAIR = re.compile(r"pair (\d+)~(\d+) ")
_EDGE_WITNESS = re.compile(r"edge (\S+)->(\S+) witness input (\d+) ")
_EDGE_FINDING = re.compile(r"edge (\S+)->(\S+)\Z")
ENCODINGS = ("guided", "full")  # as `farm verify --encoding` plans; guided tried first
MAX_NAMED = 3  # records or instances named per property; the rest are counted
PER_SUBJECT = (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE, EDGE_NECESSITY)  # asked once each


class Fact(NamedTuple):
    """What planning knows of one query: its exact truth and, for constant inputs, the
    counterexample `judge` would report (None where a solver's η is needed)."""

    holds: bool | None
    detail: dict[str, Any] | None


Table = dict[str, dict[str, Fact]]  # a plan: each subject's queries, by hash


def claim_problems(ckpt: Checkpoint, circuits: Mapping[str, Circuit],
                   entries: Sequence[Mapping[str, Any]], records: Sequence[QueryRecord]
                   ) -> list[str]:
    """Problems of the property `entries` (certificate form) against exact facts: records
    that are not a planned query, unsat answers to false claims, VERIFIED without
    coverage, content invariance's instance count, and counterexamples that do not replay.
    Entries are assumed well formed (the certificate's own checks come first)."""
    model = ExactModel(ckpt.config, ckpt.weights)
    epsilons = {e["task"]: _epsilon(e) for e in entries if e["property"] == ROBUSTNESS}
    problems: list[str] = []
    replanners: dict[str, _Replanner] = {}
    for entry in entries:
        prop, task, status = entry["property"], entry["task"], entry["status"]
        if task not in circuits:
            continue  # the certificate's own checks name a claim without a circuit
        if task not in replanners:
            replanners[task] = _Replanner(model, circuits[task], task, epsilons.get(task))
        replanner, name = replanners[task], f"property {prop}/{task}"
        all_mine = [r for r in records if (r.property, r.task) == (prop, task)]
        mine = [r for r in all_mine if r.verdict == "unsat"]
        if prop == CONTENT_INVARIANCE:  # asked pair by pair on request: records enough
            replanner.pairwise = len(all_mine) >= replanner.pairs()
        if prop in PER_SUBJECT and (twice := [s for s, n in Counter(
                r.subject for r in all_mine).items() if n > 1]):
            problems.append(f"{name}: {len(twice)} instance(s) have more than one query record "
                            f"(first: {_first(twice)})")
        facts = [replanner.fact(prop, r) for r in mine]
        unbound = [r.subject for r, f in zip(mine, facts, strict=True) if f is None]
        if unbound:
            problems.append(f"{name}: {len(unbound)} unsat record(s) are not the query their "
                            f"subject names for this circuit (first: {_first(unbound)})")
            continue
        false = [r.subject for r, f in zip(mine, facts, strict=True) if f.holds is False]
        errors = entry["counts"]["errors"] - sum(r.verdict == "error" for r in all_mine)
        if false and (status != "ERROR" or errors < len(false)):
            problems.append(f"{name}: {len(false)} unsat record(s) answer claims that exact "
                            f"evaluation refutes, and the property does not count them as "
                            f"errors (first: {_first(false)})")
        if status == "VERIFIED" and (missing := replanner.uncovered(prop, mine)):
            problems.append(f"{name}: VERIFIED, but {len(missing)} instance(s) of its plan "
                            f"have no unsat record (first: {_first(missing)})")
        if prop == CONTENT_INVARIANCE and (
                planned := replanner.instances()) != entry["counts"]["instances"]:
            problems.append(f"{name}: {entry['counts']['instances']} instances, but its plan "
                            f"for this circuit has {planned}")
        problems += replanner.counterexample_problems(prop, name, entry["counterexamples"],
                                                      all_mine)
    return problems


def _epsilon(entry: Mapping[str, Any]) -> Fraction | None:
    try:
        return Fraction(entry.get("epsilon"))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _first(items: Sequence[object]) -> str:
    return ", ".join(map(repr, items[:MAX_NAMED]))


class _Replanner:
    """Plans one circuit's queries again, by the instance a record names, in the encoding
    it was planned in (guided, or full where guided does not match). Plans are kept as
    subject -> hash -> `Fact` only: a query's text is hundreds of KB."""

    def __init__(self, model: ExactModel, circuit: Circuit, task: str,
                 epsilon: Fraction | None) -> None:
        self.circuit, self.epsilon, self.task = circuit, epsilon, task
        self.pairwise = False  # content invariance's records may be every pair
        self.planners = {mode: Planner(model, circuit, get_task(task), mode=mode)
                         for mode in ENCODINGS}  # cheap: exact runs happen when first read
        self.n = len(self.planners["guided"].prompts)
        self._tables: dict[tuple, Table] = {}

    def fact(self, prop: str, record: QueryRecord) -> Fact | None:
        """What the planner knows of this record's subject and hash; None if it writes no
        such query."""
        for mode in ENCODINGS:
            if (found := self._table(prop, record.subject, mode).get(record.subject, {}).get(
                    record.query_hash)) is not None:
                return found
        return None

    def uncovered(self, prop: str, records: Sequence[QueryRecord]) -> list[str]:
        """Instances of the property's plan that none of the (bound) records proves."""
        hashes = {r.query_hash for r in records}
        if prop == EDGE_NECESSITY:
            proved = {_edge(r.subject) for r in records}
            return [f"edge {a}->{b}" for a, b in self.circuit.ordered_edges()
                    if (a, b) not in proved]
        if prop == ROBUSTNESS:
            return [f"input {i}" for i in range(self.n)
                    if not any(hs.keys() & hashes for hs in self._robustness(i).values())]
        plans = [(prop, mode, False) for mode in ENCODINGS]
        if prop == CONTENT_INVARIANCE and self.pairwise:
            plans += [(prop, mode, True) for mode in ENCODINGS]
        missing: list[str] = []
        for plan in plans:
            left = [subject for subject, hs in self._plan(*plan).items()
                    if not hs.keys() & hashes]
            if not left:
                return []
            missing = missing or left
        return missing

    def instances(self) -> int:
        """Content invariance's instances: one per query of its plan (by anchors, or every
        pair), whatever the records count."""
        return self.pairs() if self.pairwise else len(
            self._plan(CONTENT_INVARIANCE, "guided", False))

    def counterexample_problems(self, prop: str, name: str, stated: Sequence[Any],
                                records: Sequence[QueryRecord]) -> list[str]:
        """Each counterexample rebuilt exactly from what it names; every disagreement named."""
        problems: list[str] = []
        subjects = [c.get("subject") if isinstance(c, Mapping) else None for c in stated]
        for k, (cx, subject) in enumerate(zip(stated, subjects, strict=True)):
            if not isinstance(subject, str):
                problems.append(f"{name}: counterexample {k} is {_short(cx)}, not an object "
                                "naming its subject")
                continue
            why = self._refutes(prop, subject, cx, records)
            if why:
                problems.append(f"{name}: counterexample {k} ({subject!r}) does not replay "
                                f"exactly: {why}")
        twice = [s for s, n in Counter(filter(None, subjects)).items() if n > 1]
        if twice:
            problems.append(f"{name}: counterexample(s) listed more than once (first: "
                            f"{_first(twice)})")
        return problems

    def _refutes(self, prop: str, subject: str, cx: Mapping[str, Any],
                 records: Sequence[QueryRecord]) -> str:
        """Why `cx` is not the counterexample exact replay gives for `subject` ("" if it is)."""
        if prop == EDGE_NECESSITY and (m := _EDGE_FINDING.match(subject)):
            edge = (m[1], m[2])
            if edge not in self.circuit.edges:
                return "the circuit has no such edge"
            if any(_edge(r.subject) == edge for r in records):
                return "a query was asked for this edge, so no finding settles it"
            found = self.planners["guided"].witness(self.circuit.without(edge))
            if found is not None:
                return (f"input {found[0]} changes the decision when the edge is removed, so "
                        "the edge is necessary")
            expected: dict[str, Any] | None = {"subject": subject, "reason": NO_WITNESS}
        elif prop == ROBUSTNESS:
            expected, why = self._eta_replay(subject, cx)
            if why:
                return why
        else:
            facts = [f for mode in ENCODINGS
                     for f in self._table(prop, subject, mode).get(subject, {}).values()]
            if not facts:
                return "no query of this circuit's plan has that subject"
            if facts[0].holds:
                return (f"the claim holds exactly (exact margins "
                        f"{facts[0].detail['exact_margins']})")
            expected = facts[0].detail
        if dict(cx) != expected:
            return f"it states {_short(cx)}, exact replay gives {_short(expected)}"
        return ""

    def _eta_replay(self, subject: str, cx: Mapping[str, Any]
                    ) -> tuple[dict[str, Any] | None, str]:
        """Robustness: the stated η added to r_E(x) and pushed through the final norm and
        lm_head in Fractions must stay in the ε-ball and move the decision off P(x)."""
        m = _INPUT.match(subject)
        if m is None or int(m[1]) >= self.n or subject not in self._robustness(int(m[1])):
            return None, "no robustness query of this circuit at the stated ε has that subject"
        p, i = self.planners["guided"], int(m[1])
        d = p.model.cfg.d_model
        eta = [_rational(e) for e in cx["eta"]] if isinstance(cx.get("eta"), list) else []
        if len(eta) != d or None in eta:
            return None, f"its η is not {d} exact rationals"
        margins, _, detail = replay_eta(p.model, self.task, subject, (p.prompts[i],),
                                        p.results[i].final_residual, self.epsilon, eta)
        if not margins:
            return None, f"its η leaves the ε-ball (ε = {self.epsilon})"
        if p.reference_sign(p.prompts[i]) * margins[0] > 0:
            return None, f"the decision at r_E(x) + η is still P(x) (exact margin " \
                         f"{detail['exact_margin']})"
        return detail, ""

    def _table(self, prop: str, subject: str, mode: str) -> Table:
        """Subject -> hash -> fact of the planned queries that may be the one `subject` names."""
        p = self.planners[mode]
        if prop == EDGE_NECESSITY:
            m = _EDGE_WITNESS.match(subject)
            if m is None:
                return {}
            edge, i = (m[1], m[2]), int(m[3])
            if edge not in self.circuit.edges or i >= self.n:
                return {}
            return self._memo(("en", mode, edge, i),
                              lambda: _by_subject([p.edge_witness_query(edge, i)]))
        if prop == ROBUSTNESS:
            m = _INPUT.match(subject)
            if mode != "guided" or m is None or int(m[1]) >= self.n:
                return {}  # robustness plans alike in both encodings
            return self._robustness(int(m[1]))
        if prop == CONTENT_INVARIANCE and _PAIR.match(subject):  # pairs only as a plan asks
            anchors = self._plan(prop, mode, False)  # them: a tied anchor's, or every pair
            return anchors if subject in anchors or not self.pairwise else self._plan(
                prop, mode, True)
        if prop in (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE):
            return self._plan(prop, mode, False)
        return {}

    def _plan(self, prop: str, mode: str, pairwise: bool) -> Table:
        """A whole plan: functional equivalence's, or content invariance's (by anchors,
        or every pair)."""
        p = self.planners[mode]
        return self._memo((prop, mode, pairwise), lambda: _by_subject(
            p.functional_equivalence() if prop == FUNCTIONAL_EQUIVALENCE
            else p.content_invariance(pairwise)))

    def _robustness(self, i: int) -> Table:
        """Input i's robustness queries at ε: as first asked, and as asked again (both
        full, they have one subject)."""
        if self.epsilon is None:
            return {}
        p, eps = self.planners["guided"], self.epsilon
        return self._memo(("rob", i), lambda: _by_subject(
            (p.robustness_query(i, eps), p.robustness_query(i, eps, encoding="full"))))

    def pairs(self) -> int:
        """How many queries content invariance asks pair by pair."""
        return first_round_count(self.planners["guided"], CONTENT_INVARIANCE,
                                 VerifyOptions(pairwise=True))

    def _memo(self, key: tuple, plan: Callable[[], Table]) -> Table:
        if key not in self._tables:
            self._tables[key] = plan()
        return self._tables[key]


def _by_subject(queries: Iterable[PlannedQuery]) -> Table:
    table: Table = {}
    for q in queries:
        table.setdefault(q.subject, {})[q.hash] = Fact(
            q.holds_exactly, fixed_detail(q) if isinstance(q.replay, Fixed) else None)
    return table


def _edge(subject: str) -> Edge | None:
    m = _EDGE_WITNESS.match(subject)
    return (m[1], m[2]) if m else None


def _rational(text: Any) -> Fraction | None:
    """An exact rational as `str(Fraction)` writes it, else None."""
    try:
        value = Fraction(text) if isinstance(text, str) else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value is not None and str(value) == text else None


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
