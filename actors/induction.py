"""Certifier actors: an induction job's units of prompts on Ray.

Each actor builds the head's prover once (`farm.proofs.induction`) and certifies the
units sent to it; the driver keeps a bounded number in flight per actor and takes
the answers in the order it sent them, so the folder and its aggregates are the ones
one process writes. A unit's certificates are not trusted for being ours: `farm
check` re-derives every number of them from the checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import ray

from farm.model.checkpoint import Checkpoint
from farm.model.gpt import GPTConfig
from farm.proofs.induction.derive import HeadRef, InductionProver
from farm.proofs.induction.domain import Runner, Unit, certify_unit
from farm.tasks.registry import get_task

IN_FLIGHT = 2  # units queued per actor: one running, one ready


class CertifierActor:
    def __init__(self, config: GPTConfig, weights: dict[str, np.ndarray], task: str,
                 head: HeadRef):
        self.prover = InductionProver(Checkpoint(config, weights), get_task(task), head)

    def certify(self, indices: Sequence[int]) -> Unit:
        return certify_unit(self.prover, indices)


def ray_runner(checkpoint: Checkpoint, task: str, head: HeadRef, actors: int) -> Runner:
    """A `Runner` for `certify_domain` that spreads the units over `actors` Ray actors (one
    CPU each); Ray must be initialised."""
    weights = ray.put(dict(checkpoint.weights))
    pool = [ray.remote(CertifierActor).options(num_cpus=1).remote(
        checkpoint.config, weights, task, head) for _ in range(actors)]

    def run(units: Sequence[Sequence[int]]) -> Iterator[Unit]:
        pending: deque[Any] = deque()
        for i, unit in enumerate(units):
            pending.append(pool[i % actors].certify.remote(tuple(unit)))
            if len(pending) >= IN_FLIGHT * actors:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    return run
