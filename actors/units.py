"""Unit actors: each builds its evaluators once and decides whole units where it runs.

The checkpoint travels once through the object store (`ray.put` on the driver, the
reference given to every actor, restarted ones included); each actor keeps one
`Evaluator` per task, so its screen and exact prefix memo are built once, not per
unit. With robustness asked, the inputs a unit's ball bound leaves go to the actor's own
solvers (Z3 racing cvc5, one warm pool started at the first such input). The driver
only splits the domain and schedules (`farm.verify.jobs.dispatch`, with its rerouting of
lost shards and its pinging of restarting actors); the ledger actor persists each
shard's verdicts before the shard counts as done.
Verdicts travel actor → ledger by reference, never through the driver.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.solver import RESTART_OPTIONS
from encoders.solvers import SolverUnavailable
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.tasks.registry import get_task
from farm.units.ledger import Ledger, UnitShard, UnitShardReport, UnitShardResult
from farm.units.robustness import Ask, SolverAsk
from farm.units.unit import Unit, circuit_hash, split
from farm.units.verdict import UnitVerdict, decide_unit
from farm.units.witness import witnessed
from farm.verify.evaluate import Evaluator
from farm.verify.jobs import ShardReport, dispatch


class UnitActor:
    def __init__(self, checkpoint: Checkpoint, circuits: dict[str, Circuit],
                 robustness: Robustness | None = None) -> None:
        eps = None if robustness is None else robustness.epsilon
        self.evaluators = {task: Evaluator(checkpoint, circuit, get_task(task), progress=False,
                                           epsilon=eps)
                           for task, circuit in circuits.items()}
        for evaluator in self.evaluators.values():
            evaluator.screen(evaluator.circuit)  # built once, before the first unit
        self.solvers = None if robustness is None else SolverAsk(robustness.solver,
                                                                 robustness.timeout)
        context = ray.get_runtime_context()
        self.node = context.get_node_id()[:8]
        self.name = f"{context.get_actor_id()[:8]}@{self.node}"

    def ping(self) -> str:
        return self.name

    def solve(self, shard: UnitShard) -> UnitShardResult:
        t0 = time.perf_counter()
        try:
            verdicts = tuple(decide_unit(self.evaluators[u.task], u, self._ask(u.task),
                                         [e for t, e in shard.search if t == u.task])
                             for u in shard.units)
        except SolverUnavailable:
            if self.solvers is None or not self.solvers.started:
                raise  # never worked here: the environment, which the job error names
            os._exit(1)  # killed under it: Ray restarts the actor, the shard goes elsewhere
        found = {(v.unit.task, e) for v in verdicts for e in witnessed(v.searched)}
        report = UnitShardReport(shard.index, tuple(u.key for u in shard.units),
                                 time.perf_counter() - t0, self.name, self.node,
                                 tuple(sorted(found)))
        return UnitShardResult(report, verdicts)

    def _ask(self, task: str) -> Ask | None:
        return None if self.solvers is None else self.solvers(self.evaluators[task])


@dataclass(frozen=True)
class Robustness:
    """Robustness asked of the unit actors: at ε, with the solvers in this mode and time
    limit (per query) for the inputs the ball bound leaves."""

    epsilon: Fraction
    solver: str = "race"
    timeout: float = 60.0


def unit_actor(checkpoint: Any, circuits: dict[str, Circuit],
               robustness: Robustness | None = None, **options: Any) -> Any:
    """One unit actor on a node offering a `solver` slot; `checkpoint` may be an ObjectRef
    (Ray hands the actor the object itself)."""
    remote = ray.remote(UnitActor).options(
        num_cpus=1, resources={"solver": 1}, **RESTART_OPTIONS, **options)
    return remote.remote(checkpoint, circuits, robustness)


def ledger_actor(root: str | Path) -> Any:
    """The ledger on this (the driver's) node, where the job is resubmitted from."""
    here = ray.get_runtime_context().get_node_id()
    return ray.remote(Ledger).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(str(root))


@dataclass(frozen=True)
class UnitRun:
    """What a unit run decided: every task's verdicts, in domain order, and how."""

    verdicts: dict[str, list[UnitVerdict]]
    reports: list[ShardReport]  # the shards decided in this run
    reused: int  # units whose verdict was on disk already
    duplicates: int  # verdicts that arrived twice (a rerouted shard), ignored
    warnings: list[str]


@dataclass(frozen=True)
class UnitActors:
    """Unit actors and the checkpoint they were started from, kept referenced here: Ray
    restarts a dead actor from this object, which must stay in scope as long as they live."""

    workers: list[Any]
    checkpoint: Any  # ray.ObjectRef

    def kill(self) -> None:
        for w in self.workers:
            ray.kill(w)


def start_unit_actors(checkpoint: Checkpoint, circuits: dict[str, Circuit], n: int,
                      robustness: Robustness | None = None, **options: Any) -> UnitActors:
    """`n` unit actors sharing one copy of the checkpoint in the object store; with
    `robustness`, each decides its units' robustness too, on solvers of its own."""
    ref = ray.put(checkpoint)
    return UnitActors([unit_actor(ref, circuits, robustness, **options) for _ in range(n)],
                      ref)


def run_units(actors: UnitActors, circuits: dict[str, Circuit], ledger_dir: str | Path,
              unit_size: int, shard_units: int = 1, in_flight: int = 2,
              on_done: Callable[[UnitShard, ShardReport], None] = lambda s, r: None,
              on_planned: Callable[[int], None] = lambda n: None,
              ledger: Any = None, search: bool = False) -> UnitRun:
    """Decide every input of every task's domain on the unit actors, resuming from the
    verdicts in `ledger_dir` (or those of `ledger`, a started `ledger_actor`, which this
    run then kills). With `search`, each unit also searches its range for a witness of
    every circuit edge that has none yet when its shard is handed out (a ledger folder
    is one job's: an edge without a witness at the end was searched by every unit).
    `on_planned` hears how many inputs are left to decide; `on_done` each shard once the
    ledger has persisted it."""
    ledger = ledger or ledger_actor(ledger_dir)
    try:
        units = {task: split(task, circuit_hash(circuit), len(get_task(task).domain()),
                             unit_size) for task, circuit in circuits.items()}
        every = [u for us in units.values() for u in us]
        todo: list[Unit] = ray.get(ledger.expect.remote(every))
        found = set(ray.get(ledger.witnessed.remote(every))) if search else set()
        wanted = {task: [e for e in c.ordered_edges() if (task, e) not in found]
                  for task, c in circuits.items()} if search else {}
        on_planned(sum(len(u) for u in todo))

        def shards() -> Iterator[UnitShard]:  # lazily: each asks for what is still wanted
            for i, a in enumerate(range(0, len(todo), shard_units)):
                batch = tuple(todo[a:a + shard_units])
                yield UnitShard(i, batch, tuple((t, e) for t in dict.fromkeys(
                    u.task for u in batch) for e in wanted.get(t, ())))

        def done(shard: UnitShard, report: ShardReport) -> None:
            assert isinstance(report, UnitShardReport)
            for task, edge in report.witnessed:
                if edge in wanted[task]:
                    wanted[task].remove(edge)
            on_done(shard, report)

        reports = dispatch(shards(), actors.workers, ledger, in_flight, on_done=done)
        verdicts = {t: ray.get(ledger.collect.remote(us)) for t, us in units.items()}
        state = ray.get(ledger.state.remote())
    finally:
        ray.kill(ledger)
    total = sum(len(us) for us in units.values())
    return UnitRun(verdicts, reports, total - len(todo), state["duplicates"], state["warnings"])
