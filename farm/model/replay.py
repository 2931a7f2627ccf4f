"""Replay the whole domain in exact arithmetic: the ground-truth report on a checkpoint.

Each row gets its exact margin (a rational), whether the decision is right, and
the gap between the runtime float32 logits and the exact ones, which SPEC
requires us to state rather than hide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from farm.model.checkpoint import Checkpoint
from farm.model.exact import ExactModel
from farm.tasks.registry import DEFAULT_TASKS, Row, domain_rows


@dataclass(frozen=True)
class RowReplay:
    row: Row
    margin: Fraction  # exact logit[target] − logit[alternate]

    @property
    def passed(self) -> bool:
        return self.margin > 0  # a tie is a failure


@dataclass(frozen=True)
class TaskSummary:
    task: str
    passed: int
    total: int
    min_margin: Fraction


@dataclass(frozen=True)
class ReplayReport:
    rows: list[RowReplay]
    float32_gap: float  # max |float32 logit − exact logit| over the domain

    def by_task(self) -> list[TaskSummary]:
        names = list(dict.fromkeys(r.row.task.name for r in self.rows))
        out = []
        for name in names:
            rows = [r for r in self.rows if r.row.task.name == name]
            out.append(TaskSummary(name, sum(r.passed for r in rows), len(rows),
                                   min(r.margin for r in rows)))
        return out

    @property
    def min_margin(self) -> Fraction:
        return min(r.margin for r in self.rows)

    @property
    def all_passed(self) -> bool:
        return all(r.passed for r in self.rows)


def replay(ckpt: Checkpoint, tasks: Sequence[str] = DEFAULT_TASKS) -> ReplayReport:
    """Exact margins for every domain row, plus the float32 runtime's distance from them."""
    rows = domain_rows(tasks)
    prompts = [r.prompt for r in rows]
    results = ExactModel(ckpt.config, ckpt.weights).run(prompts)
    with torch.no_grad():
        runtime = ckpt.to_model()(torch.tensor(prompts))[:, -1].double().numpy()
    exact_logits = np.array([[float(v) for v in r.logits] for r in results])
    gap = float(np.abs(runtime - exact_logits).max()) if np.isfinite(runtime).all() else math.inf
    return ReplayReport([RowReplay(row, res.margin(row.target, row.alternate))
                         for row, res in zip(rows, results, strict=True)], gap)
