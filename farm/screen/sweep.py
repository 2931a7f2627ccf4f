"""A task's whole domain (or a prefix of it) through the screen, batch by batch.

The domain is decoded one batch at a time (`ProductDomain.batch`), so a sweep of
millions of inputs holds one batch of prompts and intervals in memory, never the
domain. What comes back is what a user or a planner needs next: how many inputs
the screen decided each way, and which it could not decide (those go to the exact
evaluator).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
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
          epsilon: Fraction | None = None, processes: int = 1) -> Sweep:
    """Screen the first `limit` inputs of `task`'s domain (all by default) under `circuit`
    (the full model by default), and with `epsilon` prove what it can of robustness;
    `on_batch` hears how many inputs each batch screened. `processes` > 1 screens
    batches in that many worker processes (one per core: numpy runs one thread)."""
    domain = task.domain()
    total = min(len(domain), limit if limit is not None else len(domain))
    out = Sweep(task.name, total, len(domain), 0, 0, epsilon=epsilon)
    firsts = range(0, total, batch)
    job = (ckpt.config, dict(ckpt.weights), circuit, task, batch, total, epsilon)
    start = time.perf_counter()
    if processes == 1:
        _fold(out, map(_Job(*job), firsts), on_batch)
    else:
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn"),
                                 initializer=_start_worker, initargs=job) as pool:
            _fold(out, pool.map(_in_worker, firsts), on_batch)
    out.seconds = time.perf_counter() - start
    return out


@dataclass
class _Batch:
    """What one batch adds to a `Sweep`: counts, and the first KEEP indices of each kind."""

    screened: int
    correct: int
    wrong: int
    robust: int
    kept: tuple[list[int], ...]  # undecided, wrong_at, not_robust_at
    widest: float


class _Job:
    """One sweep's screen, screening the batch that starts at a given index."""

    def __init__(self, config: GPTConfig, weights: dict, circuit: Circuit | None, task: Task,
                 batch: int, total: int, epsilon: Fraction | None):
        self.screen = Screen(config, weights, circuit)
        self.task, self.batch, self.total, self.epsilon = task, batch, total, epsilon

    def __call__(self, first: int) -> _Batch:
        task = self.task
        prompts = task.domain().batch(first, min(first + self.batch, self.total))
        result = self.screen.run(prompts, task.targets(prompts), task.candidates, self.epsilon)
        kinds = [~result.decisive, result.wrong,
                 result.correct & ~result.robust if result.robust is not None else []]
        widest = float((result.hi - result.lo)[result.decisive].max()) \
            if result.decisive.any() else 0.0
        return _Batch(len(prompts), int(result.correct.sum()), int(result.wrong.sum()),
                      0 if result.robust is None else int(result.robust.sum()),
                      tuple((first + np.flatnonzero(k)[:KEEP]).tolist() for k in kinds),
                      widest)


_job: list[_Job] = []  # a worker process's job, made once by `_start_worker`


def _start_worker(*job: object) -> None:
    _job.append(_Job(*job))  # type: ignore[arg-type]


def _in_worker(first: int) -> _Batch:
    return _job[0](first)


def _fold(out: Sweep, outcomes: Iterable[_Batch], on_batch: Callable[[int], None]) -> None:
    for b in outcomes:
        out.correct += b.correct
        out.wrong += b.wrong
        out.robust += b.robust
        for kept, found in zip((out.undecided, out.wrong_at, out.not_robust_at), b.kept,
                               strict=True):
            kept += found[:KEEP - len(kept)]
        out.widest = max(out.widest, b.widest)
        on_batch(b.screened)


def margin_floor(config: GPTConfig, weights: Mapping[str, np.ndarray], tasks: Sequence[Task],
                 batch: int = 16384, progress: bool = False, circuit: Circuit | None = None,
                 give_up_below: float = -np.inf) -> tuple[float, float]:
    """Over every input of the tasks' domains: a lower bound of the least exact margin of
    the model (or `circuit`), and the fraction of inputs decided correctly. The screen
    bounds each input; the few it cannot decide (a norm branch that may change inside
    their interval) are evaluated exactly. The pass ends early once the floor is below
    `give_up_below` (the fraction is then of the inputs seen): all a trainer needs to
    know to go on training.

    Never optimistic, so a trainer may stop on it: the floor is at most the true minimum.
    """
    screen = Screen(config, weights, circuit)
    runs = ExactModel(config, weights).runs(circuit)
    floor, correct, screened = np.inf, 0, 0
    total = sum(len(t.domain()) for t in tasks)
    with tqdm(total=total, desc="full pass (screen)", unit="in", leave=False,
              disable=not progress, dynamic_ncols=True) as bar:
        for task in tasks:
            domain = task.domain()
            for first in range(0, len(domain), batch):
                prompts = domain.batch(first, min(first + batch, len(domain)))
                targets = task.targets(prompts)
                found = screen.run(prompts, targets, task.candidates)
                lo = found.lo.copy()
                for k in np.flatnonzero(~found.decisive):
                    exact = runs.row(tuple(prompts[k].tolist())).best_margin(
                        targets[k], task.candidates)
                    lo[k] = math.nextafter(float(exact), -math.inf)  # rounded down
                floor = min(floor, float(lo.min()))
                correct += int((lo > 0).sum())
                screened += len(prompts)
                bar.update(len(prompts))
                if floor < give_up_below:
                    return floor, correct / screened
    return floor, correct / total


def training_pass(config: GPTConfig, cfg: TrainConfig) -> FullPass | None:
    """The full pass a minibatch trainer should stop on, where the screen is the faster
    one (a piecewise-linear model trained on CPU: one numpy pass instead of torch forwards
    in chunks, and the margins it bounds are the exact ones); None where the domain trains
    full-batch or torch's pass is the better one. Attention-only models keep torch's pass:
    the screen took them later, and switching would change how their checkpoints train."""
    found = get_tasks(cfg.tasks)
    if (sum(len(t.domain()) for t in found) <= cfg.full_batch_max
            or not config.is_piecewise_linear or config.attention_only
            or pick_device(cfg.device).type != "cpu"):
        return None

    def measure(model: VerifiableGPT, give_up_below: float) -> tuple[float, float]:
        weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        return margin_floor(config, weights, found, progress=True, give_up_below=give_up_below)

    return measure
