"""bracket_depth: a counting task, whose answer depends on the nesting depth.

`[BOS, TASK_DEPTH, s_1, …, s_{len-2}]`, each s one of `(`, `)` or a filler. May the
next token be `)`? Yes (target `)`) exactly when the brackets so far are well
nested (the running depth never drops below zero) and one is still open (the
final depth is positive); otherwise the target is `(`. The program reads only
those two features, so they are the content-invariance classes. Canonical
order: lexicographic over s_1..s_{len-2} with `(`, `)`, then the fillers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from farm.errors import FarmError
from farm.tasks.domain import ProductDomain
from farm.tasks.task import Prompt, Task
from farm.tasks.vocab import BOS, CLOSE_PAREN, FILLER_POOL, OPEN_PAREN, TASK_DEPTH, fillers


@dataclass(frozen=True, eq=False, repr=False)
class BracketDepth(Task):
    name: str
    length: int = 6
    n_fillers: int = 1

    def __post_init__(self) -> None:
        if self.length < 3:
            raise FarmError(f"{self.name}: len must be at least 3 (BOS, task, one symbol)")
        if not 0 <= self.n_fillers <= len(FILLER_POOL):
            raise FarmError(f"{self.name}: fillers must be 0..{len(FILLER_POOL)}")

    @property
    def candidates(self) -> tuple[int, ...]:
        return (OPEN_PAREN, CLOSE_PAREN)

    @cached_property
    def _domain(self) -> ProductDomain:
        symbols = (OPEN_PAREN, CLOSE_PAREN, *fillers(self.n_fillers))
        return ProductDomain(((BOS,), (TASK_DEPTH,), *[symbols] * (self.length - 2)),
                             tuple(range(2, self.length)))

    def domain(self) -> ProductDomain:
        return self._domain

    def features(self, prompt: Prompt) -> tuple[bool, int]:
        """(well nested so far, final depth)."""
        depth, nested = 0, True
        for token in prompt[2:]:
            depth += int(token == OPEN_PAREN) - int(token == CLOSE_PAREN)
            nested = nested and depth >= 0
        return nested, depth

    def _depths(self, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`features` of a batch: (well nested so far, final depth) per prompt."""
        steps = (prompts[:, 2:] == OPEN_PAREN).astype(np.int64) - (prompts[:, 2:] == CLOSE_PAREN)
        depth = np.cumsum(steps, axis=1)
        return depth.min(axis=1) >= 0, depth[:, -1]

    def targets(self, prompts: np.ndarray) -> np.ndarray:
        nested, depth = self._depths(prompts)
        return np.where(nested & (depth > 0), CLOSE_PAREN, OPEN_PAREN)

    def feature_codes(self, prompts: np.ndarray) -> np.ndarray:
        nested, depth = self._depths(prompts)
        return nested * (2 * self.length + 1) + depth + self.length

    def target(self, prompt: Prompt) -> int:
        nested, depth = self.features(prompt)
        return CLOSE_PAREN if nested and depth > 0 else OPEN_PAREN
