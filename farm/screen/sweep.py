"""A task's whole domain (or a prefix of it) through the screen, batch by batch.

The domain is decoded one batch at a time (`ProductDomain.batch`), so a sweep of
millions of inputs holds one batch of prompts and intervals in memory, never the
domain. What comes back is what a user or a planner needs next: how many inputs
the screen decided each way, and which it could not decide (those go to the exact
evaluator).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from tqdm import tqdm

from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.model.train import FullPass, TrainConfig, pick_device
from farm.screen.forward import Screen
from farm.tasks.registry import get_tasks
from farm.tasks.task import Task

KEEP = 1000  # indices of undecided and wrong inputs kept, per kind: enough to name them


@dataclass
class Sweep:
    task: str
    screened: int  # inputs screened (the domain, or the first `limit`)
    domain: int  # inputs in the domain
    correct: int  # certainly decided as P decides (exact margin > 0)
    wrong: int  # certainly not (exact margin ≤ 0)
    undecided: list[int] = field(default_factory=list)  # domain indices, the first KEEP
    wrong_at: list[int] = field(default_factory=list)  # domain indices, the first KEEP
    widest: float = 0.0  # the widest decisive interval: how tight the bound ran
    seconds: float = 0.0
    epsilon: Fraction | None = None  # the robustness radius asked for, if any
    robust: int = 0  # proved to decide P(x) on the whole ε-ball of r_E(x)
    not_robust_at: list[int] = field(default_factory=list)  # correct, not proved; first KEEP

    @property
    def not_decisive(self) -> int:
        return self.screened - self.correct - self.wrong

    @property
    def rate(self) -> float:
        return self.screened / self.seconds if self.seconds > 0 else 0.0


def sweep(ckpt: Checkpoint, task: Task, circuit: Circuit | None = None, batch: int = 16384,
          limit: int | None = None, on_batch: Callable[[int], None] = lambda n: None,
          epsilon: Fraction | None = None) -> Sweep:
    """Screen the first `limit` inputs of `task`'s domain (all by default) under `circuit`
    (the full model by default), and with `epsilon` prove what it can of robustness;
    `on_batch` hears how many inputs each batch screened."""
    domain = task.domain()
    total = min(len(domain), limit if limit is not None else len(domain))
    screen = Screen(ckpt.config, dict(ckpt.weights), circuit)
    out = Sweep(task.name, total, len(domain), 0, 0, epsilon=epsilon)
    start = time.perf_counter()
    for first in range(0, total, batch):
        prompts = domain.batch(first, min(first + batch, total))
        result = screen.run(prompts, task.targets(prompts), task.candidates, epsilon)
        out.correct += int(result.correct.sum())
        out.wrong += int(result.wrong.sum())
        kinds = [(out.undecided, ~result.decisive), (out.wrong_at, result.wrong)]
        if result.robust is not None:
            out.robust += int(result.robust.sum())
            kinds.append((out.not_robust_at, result.correct & ~result.robust))
        for kept, where in kinds:
            kept += (first + np.flatnonzero(where)[:KEEP - len(kept)]).tolist()
        if result.decisive.any():
            out.widest = max(out.widest, float((result.hi - result.lo)[result.decisive].max()))
        on_batch(len(prompts))
    out.seconds = time.perf_counter() - start
    return out


def margin_floor(config: GPTConfig, weights: Mapping[str, np.ndarray], tasks: Sequence[Task],
                 batch: int = 65536, progress: bool = False, circuit: Circuit | None = None
                 ) -> tuple[float, float]:
    """Over every input of the tasks' domains: the least lower bound the screen proves on
    the exact margin of the model (or `circuit`), −inf where it cannot decide, and the
    fraction it proves correct.

    Never optimistic, so a trainer may stop on it: the floor is at most the true minimum.
    """
    screen = Screen(config, weights, circuit)
    floor, correct, total = np.inf, 0, sum(len(t.domain()) for t in tasks)
    with tqdm(total=total, desc="full pass (screen)", unit="in", leave=False,
              disable=not progress, dynamic_ncols=True) as bar:
        for task in tasks:
            domain = task.domain()
            for first in range(0, len(domain), batch):
                prompts = domain.batch(first, min(first + batch, len(domain)))
                found = screen.run(prompts, task.targets(prompts), task.candidates)
                floor = min(floor, float(found.lo.min()))
                correct += int(found.correct.sum())
                bar.update(len(prompts))
    return floor, correct / total


def training_pass(config: GPTConfig, cfg: TrainConfig) -> FullPass | None:
    """The full pass a minibatch trainer should stop on, where the screen is the faster
    one (a piecewise-linear model trained on CPU: one numpy pass instead of torch forwards
    in chunks, and the margins it bounds are the exact ones); None where the domain trains
    full-batch or torch's pass is the better one."""
    found = get_tasks(cfg.tasks)
    if (sum(len(t.domain()) for t in found) <= cfg.full_batch_max
            or not config.is_piecewise_linear or pick_device(cfg.device).type != "cpu"):
        return None

    def measure(model: VerifiableGPT) -> tuple[float, float]:
        weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        return margin_floor(config, weights, found, progress=True)

    return measure
