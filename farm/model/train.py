"""Training to a certified-looking margin, not just to the first perfect step.

Upstream stopped at the first step with 100% candidate accuracy, leaving minimum
margins near 0.02: one float rounding away from a tie, and no room for the
robustness ball. We train with a hinge on the candidate margin and stop only when
the *smallest* margin over the whole domain clears the goal: full-batch where the
domain is small (every step sees every input), by random minibatches drawn from
the streamed domain where it is not (millions of inputs), checked by full passes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from farm.errors import FarmError
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.tasks.registry import DEFAULT_TASKS, get_tasks
from farm.tasks.task import Task


@dataclass(frozen=True)
class TrainConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    seed: int = 0
    max_steps: int = 4000
    lr: float = 3e-3
    weight_decay: float = 0.0
    margin_goal: float = 1.0  # stop once every row's margin (each trained position's) is this
    hinge: float = 1.5  # margins below this are pushed up (a little above the goal)
    # a domain up to full_batch_max inputs trains full-batch; a larger one by random
    # minibatches of batch_size, and stops only once a full pass clears the goal (tried
    # when a minibatch does, at most once every check_every steps: a pass is costly)
    full_batch_max: int = 65536
    batch_size: int = 4096
    check_every: int = 100
    device: str = "auto"  # "auto" picks CUDA when present
    # measure the result with a float pass over the whole domain; off where a sound
    # proof measures it instead (Max-of-K at K = 5: a billion forwards)
    final_pass: bool = True


@dataclass
class TrainResult:
    model: VerifiableGPT
    steps: int
    min_margin: float  # float32 margin over the domain at the end (NaN: no final pass)
    accuracy: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # step, loss, min m


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise FarmError(f"device {requested!r} requested but no CUDA GPU is available")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise FarmError(f"unknown device {requested!r}: expected auto, cpu, cuda or cuda:N"
                        ) from None


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """On CPU, run torch on one thread. The model is tiny, so thread hand-offs cost more
    than the arithmetic (ACDC's forwards were 7-15x slower on 2 threads of a busy
    machine), and a float reduction split over threads rounds differently: training
    on 1 and on 2 threads gave different weights, so one thread also makes a seed's
    checkpoint the same wherever it is trained (a Ray actor gets OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class DomainStream:
    """The tasks' domains as one index space (task after task, each in canonical order),
    decoded on demand: a random minibatch, or the whole in chunks, never a list. Each row
    has a target at every trained position (`Task.trained_positions`, the decision last)."""

    def __init__(self, tasks: Sequence[str], device: torch.device) -> None:
        self.tasks, self.device = get_tasks(tasks), device
        for attribute, what in (("seq_len", "length"), ("vocab_size", "vocabulary"),
                                ("trained_positions", "set of trained positions")):
            values = {t.name: getattr(t, attribute) for t in self.tasks}
            if len(set(values.values())) > 1:
                raise FarmError(f"tasks trained together need one {what}, not {values}")
        self.seq_len, self.vocab_size = self.tasks[0].seq_len, self.tasks[0].vocab_size
        self.positions = self.tasks[0].trained_positions
        self.offsets = np.cumsum([0, *(t.domain().size for t in self.tasks)])
        self.size = int(self.offsets[-1])
        self.rival_count = max(len(t.candidates) for t in self.tasks) - 1

    def rows(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts [n, seq_len], targets [n, positions] and rivals [n, positions, rivals] (each
        target's other candidates, a task with fewer padded by repeating its first) of the
        rows at `indices`."""
        which = np.searchsorted(self.offsets, indices, side="right") - 1
        k = len(self.positions)
        prompts = np.empty((len(indices), self.seq_len), dtype=np.int64)
        targets = np.empty((len(indices), k), np.int64)
        rivals = np.empty((len(indices), k, self.rival_count), np.int64)
        for t, task in enumerate(self.tasks):
            if (mine := which == t).any():
                prompts[mine] = task.domain().take(indices[mine] - self.offsets[t])
                targets[mine] = task.position_targets(prompts[mine])
                rivals[mine] = _rivals(task, targets[mine], self.rival_count)
        return tuple(torch.from_numpy(a).to(self.device) for a in (prompts, targets, rivals))

    def minibatch(self, draw: np.random.Generator, n: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n rows drawn uniformly; a domain past int64 indices (Max-of-K at K = 20, one
        task alone) is drawn position by position."""
        if self.size < 2 ** 63:
            return self.rows(draw.integers(0, self.size, n))
        if len(self.tasks) > 1:
            raise FarmError(f"a domain of {self.size:.3g} inputs trains on its own, not "
                            "beside other tasks")
        task = self.tasks[0]
        prompts = task.domain().sample(draw, n)
        targets = task.position_targets(prompts)
        return tuple(torch.from_numpy(a).to(self.device)
                     for a in (prompts, targets, _rivals(task, targets, self.rival_count)))

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for start in range(0, self.size, size):
            yield self.rows(np.arange(start, min(start + size, self.size)))


def _rivals(task: Task, targets: np.ndarray, count: int) -> np.ndarray:
    """Each target's other candidates [n, positions, count], padded by repeating the first."""
    own = task.rivals(targets.reshape(-1))
    own = np.pad(own, ((0, 0), (0, count - own.shape[1])), mode="edge")
    return own.reshape(*targets.shape, count)


def domain_tensors(tasks: Sequence[str], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts, targets and rivals of the whole domain at the decision (the last position),
    in canonical order."""
    stream = DomainStream(tasks, device)
    prompts, targets, rivals = stream.rows(np.arange(stream.size))
    return prompts, targets[:, -1], rivals[:, -1]


def candidate_margins(logits: torch.Tensor, targets: torch.Tensor,
                      rivals: torch.Tensor) -> torch.Tensor:
    """logit[target] − the best rival's logit at the last position, per row (with two
    candidates, the one alternate's)."""
    return position_margins(logits, (-1,), targets[:, None], rivals[:, None])[:, 0]


def position_margins(logits: torch.Tensor, positions: Sequence[int], targets: torch.Tensor,
                     rivals: torch.Tensor) -> torch.Tensor:
    """The same at each of `positions` [n, positions], targets [n, positions] and rivals
    [n, positions, rivals]."""
    at = logits[:, list(positions)]
    return at.gather(2, targets[..., None])[..., 0] - at.gather(2, rivals).max(2).values


# (model, give_up_below) -> (min margin, accuracy); it may stop early (and say only that
# the minimum is below) once the minimum is below give_up_below
FullPass = Callable[[VerifiableGPT, float], tuple[float, float]]


def train(model_cfg: GPTConfig, cfg: TrainConfig = TrainConfig(), progress: bool = True,
          full_pass: FullPass | None = None) -> TrainResult:
    """Train until 100% candidate accuracy with minimum margin ≥ margin_goal.

    `full_pass` measures a minibatch-trained model over the whole domain (default: the
    torch forward in chunks). A caller may give a faster one that is never optimistic,
    e.g. the sound screen's lower bounds on the exact margins (`farm train` does on CPU).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    device = pick_device(cfg.device)
    with single_thread(device):
        return _train(model_cfg, cfg, device, progress, full_pass)


def _train(model_cfg: GPTConfig, cfg: TrainConfig, device: torch.device, progress: bool,
           full_pass: FullPass | None) -> TrainResult:
    model = VerifiableGPT(model_cfg).to(device)
    stream = DomainStream(cfg.tasks, device)
    if stream.seq_len > model_cfg.seq_len:
        raise FarmError(f"tasks need seq_len {stream.seq_len}, model has {model_cfg.seq_len}")
    if stream.vocab_size != model_cfg.vocab_size:
        raise FarmError(f"tasks need vocab_size {stream.vocab_size}, model has "
                        f"{model_cfg.vocab_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[tuple[int, float, float]] = []
    full = stream.size <= cfg.full_batch_max  # the whole domain in every step
    checked = -cfg.check_every
    whole = stream.rows(np.arange(stream.size)) if full else None
    draw = np.random.default_rng(cfg.seed)
    if len(stream.positions) > 1:
        full_pass = None  # a given pass (the screen's) measures the decision alone
    measure = full_pass or (lambda m, _: _pass(m, stream, cfg))
    passed: tuple[float, float] | None = None  # the full pass that stopped training
    bar = tqdm(range(1, cfg.max_steps + 1), desc="train", disable=not progress, leave=False)
    for step in bar:
        prompts, targets, rivals = whole or stream.minibatch(draw, cfg.batch_size)
        margins = position_margins(model(prompts), stream.positions, targets, rivals)
        loss = F.softplus(-margins).mean() + F.relu(cfg.hinge - margins).mean()
        min_margin = margins.min().item()
        history.append((step, loss.item(), min_margin))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", min_margin=f"{min_margin:.3f}")
        if min_margin >= cfg.margin_goal and (full or step - checked >= cfg.check_every):
            checked = step  # before stepping: the returned model is the one just measured
            if full:
                break
            if (found := measure(model, cfg.margin_goal))[0] >= cfg.margin_goal:
                passed = found  # a whole pass: the final one would say the same
                break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    bar.close()
    model.eval()
    if not cfg.final_pass:
        min_margin, accuracy = math.nan, math.nan
    else:
        min_margin, accuracy = (_pass(model, stream, cfg) if full
                                else passed or measure(model, -math.inf))
    return TrainResult(model.cpu(), step, min_margin, accuracy, history)


def _pass(model: VerifiableGPT, stream: DomainStream, cfg: TrainConfig) -> tuple[float, float]:
    """Minimum margin (over every trained position) and accuracy (the rows right at each)
    over the whole domain: a minibatch's margins say nothing of the inputs it did not
    draw, so only a full pass may stop training."""
    low, right = math.inf, 0
    with torch.no_grad():
        for prompts, targets, rivals in stream.chunks(max(cfg.batch_size,
                                                              cfg.full_batch_max)):
            margins = position_margins(model(prompts), stream.positions, targets, rivals)
            low = min(low, margins.min().item())
            right += int((margins > 0).all(1).sum())
    return low, right / stream.size
