"""Reducer: the one place answers arrive, are persisted, deduplicated and folded.

`Collector` is plain Python (tests and a local run use it directly); the actor
is that class under `ray.remote`, pinned to the driver's node so the Parquet
cache lives on the disk the job is resubmitted from. Every `add` writes one
part file before it returns: the solver actor waits for that, so "shard done"
means "on disk". Judging and folding are `farm.verify.fold` (which replays
every SAT model exactly); nothing here decides a verdict.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from encoders.cache import Record, ResultCache
from encoders.properties import Finding, PlannedQuery
from farm.exact import ExactModel
from farm.model import GPTConfig
from farm.verify import DEFINITIVE, PropertyResult, fold

Group = tuple[str, str]  # (property, task)


class Collector:
    """Answers by query hash for one job, backed by the shared results cache."""

    def __init__(self, cache_dir: str | os.PathLike[str], config: GPTConfig,
                 weights: dict[str, np.ndarray]) -> None:
        self.cache = ResultCache(cache_dir)
        self.model = ExactModel(config, weights)
        self.queries: dict[Group, list[PlannedQuery]] = {}
        self.records: dict[str, Record] = {}  # this job's answers, one per hash
        self.fresh: list[Record] = []  # the answers solved in this run
        self.expected: set[str] = set()
        self.duplicates = 0  # answers that arrived again (a shard rerun after a failure)

    def expect(self, queries: Sequence[PlannedQuery]) -> list[str]:
        """Register planned queries (text stripped); return the hashes still to solve.

        A cached sat/unsat answer is reused; a cached unknown is solved again
        (it may have been a short timeout); a hash already expected is not.
        """
        todo = []
        for q in queries:
            self.queries.setdefault((q.property, q.task), []).append(q)
            if q.hash in self.expected:
                continue
            self.expected.add(q.hash)
            hit = self.cache.get(q.hash)
            if hit is not None and hit.status in DEFINITIVE:
                self.records[q.hash] = hit
            else:
                todo.append(q.hash)
        return todo

    def add(self, records: Sequence[Record]) -> int:
        """Keep the first answer per hash and persist it now; an error is persisted only to
        mask a cached answer it contradicts (errors are solved again, never reused)."""
        new, persist = 0, []
        for r in records:
            old = self.records.get(r.query_hash)
            if old is None:
                self.records[r.query_hash] = r
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
                self.records[r.query_hash] = conflict
                persist.append(conflict)  # masks the cached answer: a rerun solves it again
        self.cache.put(persist)
        self.cache.flush()
        return new

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
            distinct = {q.hash for q in queries}
            results.append(fold(prop, task, queries, self.records, self.model,
                                findings.get((prop, task), []), len(distinct - fresh)))
        for group, found in findings.items():  # properties settled without any query
            if group not in self.queries:
                results.append(fold(*group, [], self.records, self.model, found, 0))
        return results

    def fresh_records(self) -> list[Record]:
        return list(self.fresh)


def reducer_actor(cache_dir: str, config: GPTConfig, weights: dict[str, np.ndarray]
                  ) -> tuple[Any, str]:
    """The collector as a named actor on this (the driver's) node; it needs no CPU slot.

    Solver actors find it by name, so their constructor arguments are plain
    strings a restart can always replay (a handle argument may be gone by then).
    """
    here = ray.get_runtime_context().get_node_id()
    name = f"farm-reducer-{uuid.uuid4().hex[:12]}"
    actor = ray.remote(Collector).options(
        name=name, num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(cache_dir, config, weights)
    return actor, name
