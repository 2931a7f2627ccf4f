"""Solver actor: one warm `SolverPool` per actor, answering whole shards.

The actor is placed by the custom resource `solver` (a node offers as many
as it should run, e.g. `ray start --resources='{"solver": 4}'`), so users decide
per node how many solvers it hosts. It returns a shard's records and is free
for the next shard at once; the dispatcher passes the result on to the reducer
by reference, so answers never travel through the driver.

Restarts: `max_restarts=-1` brings a dead actor back wherever a `solver` slot
is free (its pool starts warm again in `__init__`). `max_task_retries=0` on
purpose: Ray would otherwise hold a lost shard until *this* actor restarts,
which never happens if its node is gone and no slot is free; the dispatcher
instead reroutes the shard to a live actor at once (shards are idempotent).
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
from ray.util import metrics

from encoders.solvers import SolverPool, SolverUnavailable
from farm.verify.jobs import Shard, ShardReport, ShardResult, solve_shard

RESTART_OPTIONS = {"max_restarts": -1, "max_task_retries": 0}


class SolverActor:
    """A warm pool plus counters; every decision is made by the library below it."""

    def __init__(self, mode: str, timeout: float) -> None:
        self.pool = SolverPool(mode, timeout)
        context = ray.get_runtime_context()
        self.node = context.get_node_id()[:8]
        self.name = f"{context.get_actor_id()[:8]}@{self.node}"
        tags = ("solver",)
        self.done = metrics.Counter("farm_queries_done", "queries answered by a solver")
        self.wins = metrics.Counter("farm_solver_wins", "definitive answers per solver", tags)
        self.timeouts = metrics.Counter("farm_query_timeouts", "queries that hit the timeout")
        self.unknowns = metrics.Counter("farm_query_unknowns", "UNKNOWN answers (timeouts too)")

    def ping(self) -> str:
        """Answers once the actor is (again) alive: the dispatcher's readiness probe."""
        return self.name

    def solve(self, shard: Shard) -> ShardResult:
        t0 = time.perf_counter()
        try:
            records = solve_shard(self.pool, shard)
        except SolverUnavailable:
            if not self.pool.started:
                raise  # never worked here: the environment, which the job error names
            # Its solver processes ran, then something killed them (Ray killing this
            # actor's process tree, say): exit, so that Ray restarts the actor and the
            # dispatcher gives the shard to another, instead of an error record answering.
            os._exit(1)
        for r in records:
            self.done.inc()
            if r.winner:
                self.wins.inc(tags={"solver": r.winner})
            if r.status == "unknown":
                self.unknowns.inc()
                if "timeout" in r.reason:
                    self.timeouts.inc()
        report = ShardReport(shard.index, tuple(r.query_hash for r in records),
                             time.perf_counter() - t0, self.name, self.node)
        return ShardResult(report, tuple(records))

    def solve_direct(self, text: str, model_vars: tuple[str, ...]) -> str:
        """One query, nothing else: the benchmark's measure of Ray's per-call overhead."""
        return self.pool.solve(text, model_vars).status


def solver_actor(mode: str, timeout: float, **options: Any) -> Any:
    """Start one solver actor on a node offering a `solver` slot."""
    remote = ray.remote(SolverActor).options(
        num_cpus=1, resources={"solver": 1}, **RESTART_OPTIONS, **options)
    return remote.remote(mode, timeout)
