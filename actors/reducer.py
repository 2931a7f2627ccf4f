"""Reducer: the one place answers arrive, are persisted, deduplicated and folded.

`Collector` is plain Python (tests and a local run use it directly); the actor
is that class under `ray.remote`, pinned to the driver's node so the Parquet
cache lives on the disk the job is resubmitted from. Every `accept` writes one
part file before it returns, and the dispatcher counts a shard done only then,
so "shard done" means "on disk". Each answer is judged as it arrives
(`farm.verify.local.judge`, which replays every SAT model exactly) and the job's
results are `farm.verify.local.fold`; nothing here decides a verdict. First
robustness queries judged inconclusive are reported by `escalations` so the
driver can plan their fully encoded second tier, as `farm verify` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from encoders.cache import Record, ResultCache
from encoders.properties import RADIUS, Finding, PlannedQuery
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.verify.jobs import ShardReport, ShardResult
from farm.verify.local import DEFINITIVE, Outcome, PropertyResult, fold, judge, reusable

Group = tuple[str, str]  # (property, task)
Key = tuple[str, str, str, str]  # (hash, property, task, subject): one planned query


def key(q: PlannedQuery) -> Key:
    return q.hash, q.property, q.task, q.subject


class Collector:
    """Answers by query hash for one job, backed by the shared results cache."""

    def __init__(self, cache_dir: str | os.PathLike[str], config: GPTConfig,
                 weights: dict[str, np.ndarray]) -> None:
        self.cache = ResultCache(cache_dir)
        self.model = ExactModel(config, weights)
        self.queries: dict[Group, list[PlannedQuery]] = {}
        self.by_hash: dict[str, list[PlannedQuery]] = {}  # identical texts share an answer
        self.records: dict[str, Record] = {}  # this job's answers, one per hash
        self.outcomes: dict[Key, Outcome] = {}  # per query (its replay), judged on arrival
        self.escalated: set[Key] = set()
        self.fresh: list[Record] = []  # the answers solved in this run
        self.expected: set[str] = set()
        self.duplicates = 0  # answers that arrived again (a shard rerun after a failure)
        self.discarded = 0  # cached sat/unsat answers that did not replay: asked again

    def expect(self, queries: Sequence[PlannedQuery], retry_undecided: bool = False
               ) -> list[str]:
        """Register planned queries (text stripped); return the hashes still to solve.

        A cached sat/unsat answer is reused only if it replays (`reusable`: a bad
        answer on disk is asked again, never trusted); a cached unknown is solved
        again (it may have been a short timeout); a hash already expected is not,
        unless `retry_undecided` asks again one this job answered unknown or
        error (the radius search, on solvers of its own, once the properties
        are folded: its answer replaces the undecided one).
        """
        todo = []
        for q in queries:
            self.queries.setdefault((q.property, q.task), []).append(q)
            self.by_hash.setdefault(q.hash, []).append(q)
            answer = self.records.get(q.hash)
            if retry_undecided and answer is not None and answer.status not in DEFINITIVE:
                del self.records[q.hash]
                todo.append(q.hash)
                continue
            if q.hash in self.expected:
                if q.hash in self.records:  # answered already: judge this query's replay too
                    self.outcomes[key(q)] = judge(q, self.records[q.hash], self.model)
                continue
            self.expected.add(q.hash)
            hit = self.cache.get(q.hash)
            if reusable(q, hit, self.model):
                self._keep(hit)
            else:
                self.discarded += int(hit is not None and hit.status in DEFINITIVE)
                todo.append(q.hash)
        return todo

    def accept(self, result: ShardResult) -> ShardReport:
        """A solved shard from a solver actor: persisted before the report goes back."""
        self.add(result.records)
        return result.report

    def add(self, records: Sequence[Record]) -> int:
        """Keep the first answer per hash and persist it now; an error is persisted only to
        mask a cached answer it contradicts (errors are solved again, never reused)."""
        new, persist = 0, []
        for r in records:
            old = self.records.get(r.query_hash)
            if old is None:
                self._keep(r)
                self.fresh.append(r)
                new += 1
                if r.status != "error":
                    persist.append(r)
                continue
            self.duplicates += 1
            if {old.status, r.status} == {"sat", "unsat"}:  # never resolved by choice
                conflict = Record(r.query_hash, r.property, r.task, r.subject, "error", None,
                                  r.z3_seconds, r.cvc5_seconds, {}, "repeated solve "
                                  f"disagrees: {old.status} then {r.status}", r.created_at)
                self._keep(conflict)
                persist.append(conflict)  # masks the cached answer: a rerun solves it again
        self.cache.put(persist)
        self.cache.flush()
        return new

    def _keep(self, r: Record) -> None:
        self.records[r.query_hash] = r
        for q in self.by_hash[r.query_hash]:
            self.outcomes[key(q)] = judge(q, r, self.model)

    def escalations(self) -> list[tuple[str, str, int, Fraction]]:
        """(property, task, input, ε) of first robustness queries judged inconclusive, each
        once."""
        out = []
        for k, o in self.outcomes.items():
            if o.kind == "inconclusive" and k not in self.escalated:
                self.escalated.add(k)
                q = next(q for q in self.by_hash[k[0]] if key(q) == k)
                out.append((q.property, q.task, q.replay.index, q.replay.epsilon))
        return out

    def answers(self, hashes: Sequence[str]) -> dict[str, Record]:
        """This job's answers to `hashes` (each expected, and answered by now)."""
        return {h: self.records[h] for h in hashes}

    def missing(self) -> list[str]:
        return sorted(self.expected - set(self.records))

    def finish(self, findings: dict[Group, list[Finding]]) -> list[PropertyResult]:
        """Judge every answer exactly and fold one result per (property, task)."""
        gone = self.missing()
        if gone:
            raise RuntimeError(f"{len(gone)} planned queries have no answer (first {gone[0]})")
        fresh = {r.query_hash for r in self.fresh}
        results = []
        for (prop, task), queries in self.queries.items():
            if prop == RADIUS:
                continue  # bisection steps: the radius is reported with robustness
            judged = [(q, self.records[q.hash], self.outcomes[key(q)]) for q in queries]
            distinct = {q.hash for q in queries}
            results.append(fold(prop, task, judged, findings.get((prop, task), []),
                                len(distinct - fresh)))
        for group, found in findings.items():  # properties settled without any query
            if group not in self.queries:
                results.append(fold(*group, [], found, 0))
        return results

    def fresh_records(self) -> list[Record]:
        return list(self.fresh)

    def cache_warnings(self) -> list[str]:
        """Damaged cache parts set aside on opening, one line each, for the driver to show
        (the actor's own output does not reach the user)."""
        return list(self.cache.warnings)

    def discarded_warning(self) -> str | None:
        """A line for the driver if cached answers did not replay and were asked again."""
        if not self.discarded:
            return None
        return (f"{self.discarded} cached answer(s) in {self.cache.root} did not replay "
                "exactly; asked again")


def reducer_actor(cache_dir: str, config: GPTConfig, weights: dict[str, np.ndarray]) -> Any:
    """The collector as an actor on this (the driver's) node; it needs no CPU slot."""
    here = ray.get_runtime_context().get_node_id()
    return ray.remote(Collector).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(cache_dir, config, weights)
