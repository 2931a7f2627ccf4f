"""Checker actors: a distillation's candidate checks as units of work on Ray.

A unit is (program, index range) of the task's domain; each actor holds the circuit's
judge (screen and exact evaluator) once and checks the units sent to it
(`farm.distill.cegis.check_unit`). The driver keeps a bounded number of units in
flight, folds the answers in canonical order (so the result is the one a local check
gives), and replays every counterexample itself before the loop may use it: nothing
a remote process says about the circuit is taken on trust.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray

from farm.distill.cegis import KEEP, Check, Checker, Judge, check_unit, fold
from farm.distill.dsl import Program
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.gpt import GPTConfig
from farm.tasks.registry import get_task
from farm.tasks.task import Task

IN_FLIGHT = 2  # units queued per actor: one running, one ready


class CheckerActor:
    def __init__(self, config: GPTConfig, weights: dict[str, np.ndarray], circuit: Circuit,
                 task: str):
        self.judge = Judge(Checkpoint(config, weights), circuit, get_task(task))

    def check(self, program: Program, start: int, stop: int, keep: int) -> Check:
        return check_unit(program, self.judge, start, stop, keep)


def ray_checker(ckpt: Checkpoint, circuit: Circuit, task: Task, actors: int,
                unit: int = 16384) -> Checker:
    """A `Checker` for `farm.distill.distill` that spreads each check over `actors` Ray
    actors (one CPU each), `unit` domain inputs at a time."""
    pool = [ray.remote(CheckerActor).options(num_cpus=1).remote(
        ckpt.config, dict(ckpt.weights), circuit, task.name) for _ in range(actors)]
    local = Judge(ckpt, circuit, task)
    size = len(task.domain())

    def check(program: Program, stop_after: int | None,
              on_batch: Callable[[int], None]) -> Check:
        keep = stop_after or KEEP
        starts = iter(range(0, size, unit))
        pending: deque[Any] = deque()

        def results() -> Iterator[Check]:
            for i, first in enumerate(starts):  # bounded in flight, answered in order
                pending.append(pool[i % actors].check.remote(program, first, first + unit,
                                                             keep))
                if len(pending) >= IN_FLIGHT * actors:
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())

        total = fold(program, size, results(), stop_after, on_batch)
        # a refutation stops early; the units still in flight (at most IN_FLIGHT per
        # actor) are drained, not cancelled: cancelling a queued actor task leaves a gap
        # in the actor's call order, and its next call then times out waiting for it
        ray.get(list(pending))
        for cx in total.counterexamples:
            if local.replay(cx.index, cx.prompt, cx.program) != cx:
                raise FarmError(f"a checker actor's counterexample {cx.prompt} does not "
                                "replay here")
        return total

    return check
