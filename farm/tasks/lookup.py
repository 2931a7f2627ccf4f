"""Lookup families: the answer is a fixed function of one decisive token (SPEC §1).

`[BOS, task_token, x_1, opener, x_2, …, x_{len-3}]`, every x a filler: quote_close
closes the quote it opened, bracket_type the bracket. `len` 6 and 4 fillers are
SPEC's tasks, row for row; other sizes follow the same canonical order (fillers
outermost, lexicographic; opener innermost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from farm.errors import FarmError
from farm.tasks.domain import ProductDomain
from farm.tasks.task import Prompt, Task
from farm.tasks.vocab import BOS, FILLER_POOL, fillers

OPENER_POSITION = 3


@dataclass(frozen=True, eq=False, repr=False)
class Lookup(Task):
    name: str
    task_token: int
    program: Mapping[int, int]  # opener -> target: the reference program P
    length: int = 6
    n_fillers: int = 4

    def __post_init__(self) -> None:
        if not 4 <= self.length:
            raise FarmError(f"{self.name}: len must be at least 4 (BOS, task, filler, opener)")
        if not 1 <= self.n_fillers <= len(FILLER_POOL):
            raise FarmError(f"{self.name}: fillers must be 1..{len(FILLER_POOL)}")
        object.__setattr__(self, "program", dict(self.program))  # a copy: P cannot change

    @property
    def openers(self) -> tuple[int, ...]:
        return tuple(self.program)

    @property
    def candidates(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.program.values())))

    @property
    def opener_position(self) -> int:
        return OPENER_POSITION

    @cached_property
    def _domain(self) -> ProductDomain:
        filler = fillers(self.n_fillers)
        positions = [(BOS,), (self.task_token,), filler, self.openers,
                     *[filler] * (self.length - 4)]
        slots = [p for p in range(2, self.length) if p != OPENER_POSITION]
        return ProductDomain(tuple(positions), (*slots, OPENER_POSITION))

    def domain(self) -> ProductDomain:
        return self._domain

    def target(self, prompt: Prompt) -> int:
        return self.program[prompt[OPENER_POSITION]]

    def targets(self, prompts: np.ndarray) -> np.ndarray:
        table = np.zeros(max(self.program) + 1, dtype=np.int64)
        table[list(self.program)] = list(self.program.values())
        return table[prompts[:, OPENER_POSITION]]

    def features(self, prompt: Prompt) -> int:
        return prompt[OPENER_POSITION]

    def feature_codes(self, prompts: np.ndarray) -> np.ndarray:
        return prompts[:, OPENER_POSITION].astype(np.int64)
