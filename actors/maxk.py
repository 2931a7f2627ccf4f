"""Brute-force actors: a Max-of-K brute force as units of the domain on Ray, resumable.

A unit is a range of (query token, maximum) pairs, cut to hold about the same number
of prompts as the others (`farm.proofs.maxk.journal.plan_units`; decided by
`BruteForce.decide`). Each actor builds the proof's tables once and decides the units
sent to it. The driver keeps two units in flight per actor and records each tally in
the journal the moment it arrives (`journal.Journal`), so a killed job loses only the
units in flight, and a rerun sends only what the journal lacks. The bound is the sum
of the journal's tallies, each unit counted once.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from farm.model.checkpoint import Checkpoint
from farm.model.gpt import GPTConfig
from farm.proofs.maxk.bound import AccuracyBound
from farm.proofs.maxk.brute import BruteForce, Tally, accuracy_bound, table_flops
from farm.proofs.maxk.journal import Journal, plan_units
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.registry import get_task

IN_FLIGHT = 2  # units queued per actor: one running, one ready


class BruteForceActor:
    """Builds the proof's tables on its first unit, so that starting actors costs only
    their processes, and the tables are built in parallel, inside the run."""

    def __init__(self, config: GPTConfig, weights: dict[str, np.ndarray], task: str):
        self.model = (config, weights, get_task(task))
        self.proof: BruteForce | None = None

    def unit(self, first: int, stop: int) -> tuple[int, int, Tally]:
        self.proof = self.proof or BruteForce(*self.model)
        return first, stop, self.proof.decide(first, stop)

    def peak_rss(self) -> int:
        """This worker's peak resident memory in bytes (Linux reports KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class FarmBruteForce:
    bound: AccuracyBound  # its seconds: this run's wall time with actors started, tables
    # included (built on each actor, in parallel)
    units: int
    resumed: int  # units the journal held already: not sent again
    peak_rss: int  # the largest peak resident memory of the driver and each actor, summed


def start_actors(ckpt: Checkpoint, task: MaxOfK, actors: int) -> list[Any]:
    """`actors` brute-force actors (one CPU each), started and answering."""
    pool = [ray.remote(BruteForceActor).options(num_cpus=1).remote(
        ckpt.config, dict(ckpt.weights), task.name) for _ in range(actors)]
    ray.get([actor.peak_rss.remote() for actor in pool])
    return pool


def brute_force_on_ray(pool: list[Any], ckpt: Checkpoint, task: MaxOfK, journal: str | Path,
                       units: int = 64, progress: bool = True) -> FarmBruteForce:
    """The brute force of `ckpt` on `task` over the actors of `pool` (`start_actors`),
    the domain cut into about `units` units, resuming from `journal` where it holds units
    of this proof already."""
    start = time.perf_counter()
    plan = plan_units(task, units)
    book = Journal.open(journal, ckpt.sha256, task.name, plan)
    todo = [u for u in plan if u not in book.done]
    resumed = len(plan) - len(todo)
    pending: dict[Any, Any] = {}  # result ref -> the actor deciding it
    free = [actor for actor in pool for _ in range(IN_FLIGHT)]
    bar = tqdm(total=len(plan), initial=resumed, desc=f"brute force {task.name}",
               disable=not progress, unit="unit")
    while todo or pending:
        while todo and free:
            actor = free.pop(0)
            pending[actor.unit.remote(*todo.pop(0))] = actor
        [ready], _ = ray.wait(list(pending), num_returns=1)
        first, stop, tally = ray.get(ready)
        book.record((first, stop), tally)  # durable before another unit is sent
        free.append(pending.pop(ready))
        bar.update()
    bar.close()
    bound = accuracy_bound(task, Tally(flops=table_flops(ckpt.config, task)) + book.total(),
                           time.perf_counter() - start)
    peak = sum(ray.get([a.peak_rss.remote() for a in pool]))
    peak += resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return FarmBruteForce(bound, len(plan), resumed, peak)
