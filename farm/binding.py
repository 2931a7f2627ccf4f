"""Query records bound to the claims they prove: every unsat record re-planned.

A certificate's sidecar says which query texts (by SHA-256) the solvers answered
unsat; its predicate says which circuit, property and ε those answers prove.
Only planning ties the two. So here the query each unsat record names by its
subject (an input, a pair, an edge and its witness) is planned again from the
checkpoint and the certified circuit, in exact arithmetic, and its hash must be
the record's: an answer about another circuit, task, property, input or ε proves
nothing here, however it is signed. It costs planning (seconds), never a solver.

Sat, unknown and error records are not bound: they never make a claim VERIFIED,
and a counterexample is replayed exactly where it is judged.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction

from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    ROBUSTNESS,
    Planner,
)
from farm.checkpoint import Checkpoint
from farm.circuits import Circuit
from farm.exact import ExactModel
from farm.tasks import get_task
from farm.verify import QueryRecord

__all__ = ["unbound_records"]

_INPUT = re.compile(r"input (\d+) ")
_PAIR = re.compile(r"pair (\d+)~(\d+) ")
_EDGE_WITNESS = re.compile(r"edge (\S+)->(\S+) witness input (\d+) ")
MAX_NAMED = 3  # unbound records named per property; the rest are counted


def unbound_records(ckpt: Checkpoint, circuits: Mapping[str, Circuit],
                    epsilons: Mapping[str, Fraction], records: Sequence[QueryRecord]
                    ) -> list[str]:
    """Problems: unsat records whose hash is not the query their subject names, planned
    for the task's circuit (`epsilons`: robustness's ε per task), and subjects proved
    twice (counts of unsat records must be counts of instances)."""
    model = ExactModel(ckpt.config, ckpt.weights)
    problems = []
    replanners: dict[str, _Replanner] = {}
    by_claim: dict[tuple[str, str], list[QueryRecord]] = {}
    for r in records:
        if r.verdict == "unsat":
            by_claim.setdefault((r.property, r.task), []).append(r)
    for (prop, task), mine in by_claim.items():
        if task not in circuits:
            continue  # the certificate's own checks name a record without a circuit
        if task not in replanners:
            replanners[task] = _Replanner(model, circuits[task], task, epsilons.get(task))
        replanner, name = replanners[task], f"property {prop}/{task}"
        unbound = [r.subject for r in mine
                   if not replanner.matches(prop, r.subject, r.query_hash)]
        if unbound:
            problems.append(f"{name}: {len(unbound)} unsat record(s) are not the query their "
                            f"subject names for this circuit (first: "
                            f"{', '.join(map(repr, unbound[:MAX_NAMED]))})")
        twice = [s for s, n in Counter(r.subject for r in mine).items() if n > 1]
        if twice:
            problems.append(f"{name}: {len(twice)} subject(s) proved twice (first: "
                            f"{twice[0]!r})")
    return problems


class _Replanner:
    """Plans one circuit's queries again, by subject, in the mode a record was planned in
    (guided, or full as `farm verify --encoding full` plans: tried only when guided
    does not match)."""

    MODES = ("guided", "full")

    def __init__(self, model: ExactModel, circuit: Circuit, task: str,
                 epsilon: Fraction | None) -> None:
        self.model, self.circuit, self.task, self.epsilon = model, circuit, get_task(task), \
            epsilon
        self._planners: dict[str, Planner] = {}
        self._tables: dict[tuple[str, str], dict[str, str]] = {}

    def planner(self, mode: str) -> Planner:
        if mode not in self._planners:
            self._planners[mode] = Planner(self.model, self.circuit, self.task, mode=mode)
        return self._planners[mode]

    def matches(self, prop: str, subject: str, query_hash: str) -> bool:
        return any(query_hash in self._hashes(prop, subject, mode) for mode in self.MODES)

    def _hashes(self, prop: str, subject: str, mode: str) -> set[str]:
        """The hashes of the queries `subject` names for `prop` in one mode."""
        p = self.planner(mode)
        n = len(p.prompts)
        if prop == EDGE_NECESSITY:
            m = _EDGE_WITNESS.match(subject)
            edge = m and (m[1], m[2])
            return ({p.edge_witness_query(edge, int(m[3])).hash}
                    if edge in self.circuit.edges and int(m[3]) < n else set())
        if prop == CONTENT_INVARIANCE and (m := _PAIR.match(subject)):
            a, b = int(m[1]), int(m[2])
            return {p.pair_query(a, b).hash} if max(a, b) < n and a != b else set()
        if prop == ROBUSTNESS:
            m = _INPUT.match(subject)
            if mode != "guided" or m is None or int(m[1]) >= n or self.epsilon is None:
                return set()  # robustness plans alike in both modes
            i = int(m[1])
            return {p.robustness_query(i, self.epsilon).hash,  # first tier, then re-asked
                    p.robustness_query(i, self.epsilon, encoding="full").hash}
        if prop in (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE):
            if (prop, mode) not in self._tables:
                queries = (p.functional_equivalence() if prop == FUNCTIONAL_EQUIVALENCE
                           else p.content_invariance())
                self._tables[prop, mode] = {q.subject: q.hash for q in queries}
            found = self._tables[prop, mode].get(subject)
            return {found} if found is not None else set()
        return set()
