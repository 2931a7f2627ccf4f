"""Query records bound to the claims they prove: every unsat record planned again.

A certificate's sidecar says which query texts (by SHA-256) the solvers answered
unsat; its predicate says which circuit, property and ε those answers prove.
Only planning ties the two, so here the queries are planned again from the
checkpoint and the certified circuit, in exact arithmetic:

* bound: each unsat record must be, subject and hash, a query the planner writes
  for the instance its subject names (an input, a pair, an edge and its witness,
  robustness's input at the stated ε, first asked or asked again);
* covered: a VERIFIED property must have such a record for every instance of
  its plan (each input; each retained edge; each member of an opener class, or
  each pair where the plan asks pairs), so a count of records cannot stand in
  for the instances they should prove.

What is left to trust is the signer's word that these hashes were unsat. Sat,
unknown and error records are not bound: they never make a claim VERIFIED, and
a counterexample is replayed exactly where it is judged. It costs planning
(seconds), never a solver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction

from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    ROBUSTNESS,
    PlannedQuery,
    Planner,
)
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit, Edge
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.local import QueryRecord, VerifyOptions, first_round_count

__all__ = ["Stated", "unplanned_records"]

_INPUT = re.compile(r"input (\d+) ")
_PAIR = re.compile(r"pair (\d+)~(\d+) ")
_EDGE_WITNESS = re.compile(r"edge (\S+)->(\S+) witness input (\d+) ")
ENCODINGS = ("guided", "full")  # as `farm verify --encoding` plans; guided tried first
MAX_NAMED = 3  # records or instances named per property; the rest are counted

Stated = tuple[str, Fraction | None]  # a property's status and (robustness) ε
Table = dict[str, set[str]]  # a plan: each subject's query hashes


def unplanned_records(ckpt: Checkpoint, circuits: Mapping[str, Circuit],
                      claims: Mapping[tuple[str, str], Stated], records: Sequence[QueryRecord]
                      ) -> list[str]:
    """Problems: unsat records that are not a query the planner writes for their subject,
    and VERIFIED properties (`claims`, by (property, task)) with an instance of their
    plan that no bound unsat record proves."""
    model = ExactModel(ckpt.config, ckpt.weights)
    epsilons = {task: eps for (prop, task), (_, eps) in claims.items() if prop == ROBUSTNESS}
    problems: list[str] = []
    replanners: dict[str, _Replanner] = {}
    for (prop, task), (status, _) in claims.items():
        if task not in circuits:
            continue  # the certificate's own checks name a claim without a circuit
        if task not in replanners:
            replanners[task] = _Replanner(model, circuits[task], task, epsilons.get(task))
        replanner, name = replanners[task], f"property {prop}/{task}"
        mine = [r for r in records if (r.property, r.task, r.verdict) == (prop, task, "unsat")]
        if prop == CONTENT_INVARIANCE:  # asked pair by pair on request: records enough
            replanner.pairwise = len(mine) >= replanner.pairs()
        unbound = [r.subject for r in mine if not replanner.plans(prop, r)]
        if unbound:
            problems.append(f"{name}: {len(unbound)} unsat record(s) are not the query their "
                            f"subject names for this circuit (first: {_first(unbound)})")
        elif status == "VERIFIED" and (missing := replanner.uncovered(prop, mine)):
            problems.append(f"{name}: VERIFIED, but {len(missing)} instance(s) of its plan "
                            f"have no unsat record (first: {_first(missing)})")
    return problems


def _first(items: Sequence[object]) -> str:
    return ", ".join(map(repr, items[:MAX_NAMED]))


class _Replanner:
    """Plans one circuit's queries again, by the instance a record names, in the encoding
    it was planned in (guided, or full where guided does not match). Plans are kept as
    subject -> hashes only: a query's text is hundreds of KB."""

    def __init__(self, model: ExactModel, circuit: Circuit, task: str,
                 epsilon: Fraction | None) -> None:
        self.circuit, self.epsilon = circuit, epsilon  # ε: robustness's, as its claim states
        self.pairwise = False  # content invariance's records may be every pair
        self.planners = {mode: Planner(model, circuit, get_task(task), mode=mode)
                         for mode in ENCODINGS}  # cheap: exact runs happen when first read
        self.n = len(self.planners["guided"].prompts)
        self._tables: dict[tuple, Table] = {}

    def plans(self, prop: str, record: QueryRecord) -> bool:
        """Whether the planner writes this record's subject and hash."""
        return any(record.query_hash in self._table(prop, record.subject, mode).get(
            record.subject, ()) for mode in ENCODINGS)

    def uncovered(self, prop: str, records: Sequence[QueryRecord]) -> list[str]:
        """Instances of the property's plan that none of the (bound) records proves."""
        hashes = {r.query_hash for r in records}
        if prop == EDGE_NECESSITY:
            proved = {_edge(r.subject) for r in records}
            return [f"edge {a}->{b}" for a, b in self.circuit.ordered_edges()
                    if (a, b) not in proved]
        if prop == ROBUSTNESS:
            return [f"input {i}" for i in range(self.n)
                    if not hashes & set().union(*self._robustness(i).values())]
        plans = [(prop, mode, False) for mode in ENCODINGS]
        if prop == CONTENT_INVARIANCE and self.pairwise:
            plans += [(prop, mode, True) for mode in ENCODINGS]
        missing: list[str] = []
        for plan in plans:
            left = [subject for subject, hs in self._plan(*plan).items() if not hs & hashes]
            if not left:
                return []
            missing = missing or left
        return missing

    def _table(self, prop: str, subject: str, mode: str) -> Table:
        """Subject -> hashes of the planned queries that may be the one `subject` names."""
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
        table.setdefault(q.subject, set()).add(q.hash)
    return table


def _edge(subject: str) -> Edge | None:
    m = _EDGE_WITNESS.match(subject)
    return (m[1], m[2]) if m else None
