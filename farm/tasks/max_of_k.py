"""Max-of-K: the answer is the largest of K value tokens (Gross et al. 2024).

The family has its own vocabulary, not SPEC's: token id v *is* the value v, for
v in 0..vocab-1, and a prompt is K such tokens with no BOS (the paper's setup:
the answer is read at the last position). Every value token is a candidate. The
domain is all vocab^K prompts in lexicographic order (position 0 most
significant), so `max_of_k:k=4,vocab=64` indexes 16,777,216 prompts without
listing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from farm.errors import FarmError
from farm.tasks.domain import ProductDomain
from farm.tasks.task import Prompt, Task


@dataclass(frozen=True, eq=False, repr=False)
class MaxOfK(Task):
    name: str
    k: int = 4
    vocab: int = 64

    def __post_init__(self) -> None:
        if self.k < 2:
            raise FarmError(f"{self.name}: k must be at least 2 (one token has no maximum "
                            "to find)")
        if self.vocab < 2:
            raise FarmError(f"{self.name}: vocab must be at least 2 (one value leaves no "
                            "decision)")

    @property
    def vocab_size(self) -> int:
        return self.vocab

    @property
    def candidates(self) -> tuple[int, ...]:
        return tuple(range(self.vocab))

    @cached_property
    def _domain(self) -> ProductDomain:
        values = tuple(range(self.vocab))
        return ProductDomain((values,) * self.k, tuple(range(self.k)))

    def domain(self) -> ProductDomain:
        return self._domain

    def target(self, prompt: Prompt) -> int:
        return max(prompt)

    def targets(self, prompts: np.ndarray) -> np.ndarray:
        return prompts.max(axis=1).astype(np.int64)

    def features(self, prompt: Prompt) -> int:
        """P reads only which value is largest: prompts with one maximum share the answer."""
        return max(prompt)
