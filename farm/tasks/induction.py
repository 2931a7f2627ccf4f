"""induction: a pattern of tokens, shown again up to its last token; what comes next?

`[BOS, p_1, …, p_period, p_1, …, p_{period-1}]`, each p one of `vocab` pattern
tokens (INDUCTION_POOL: for vocab 8 the ids 21..28; repeats allowed): the
literature's repeated-pattern diagnostic. An induction head reads it one period
back: from each position q of the second copy it attends to q − period + 1, the
token after the previous (period-aligned) occurrence of the token at q, and copies
it: the next pattern token.

Our tasks decide at the last position. The second copy stops one token short of
the pattern, so that every query of it, the last included, sees its answer exactly
once (after a whole second copy, p_1 would stand both one and two periods back, and
a head could read position 1 and never look one period back). The answer is
p_period; every position of the second copy has such a target (`stripe` lists them)
and a certificate may speak of any of them; the task's decision is the last, the
only one `farm train` trains, so it is the one certified by default (`decision`).
The domain is every pattern, lexicographic over p_1..p_period (vocab 8, period 4:
4,096 prompts), the second copy tied to the first. The program reads only
p_period, so p_period is the content-invariance class.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from farm.errors import FarmError
from farm.tasks.domain import ProductDomain
from farm.tasks.task import Prompt, Task
from farm.tasks.vocab import BOS, INDUCTION_POOL

FIRST = 1  # the position of p_1


class StripeEntry(NamedTuple):
    """One query of the induction stripe: where it should look and what it should copy."""

    query: int
    key: int  # query − period + 1: the token after the previous occurrence of the query's
    target: int  # the token at `key`: the continuation to copy


@dataclass(frozen=True, eq=False, repr=False)
class Induction(Task):
    name: str
    vocab: int = 8
    period: int = 4

    def __post_init__(self) -> None:
        if not 2 <= self.vocab <= len(INDUCTION_POOL):
            raise FarmError(f"{self.name}: vocab must be 2..{len(INDUCTION_POOL)}")
        if self.period < 2:
            raise FarmError(f"{self.name}: period must be at least 2 (a second copy to read)")

    @property
    def candidates(self) -> tuple[int, ...]:
        return tuple(sorted(INDUCTION_POOL[:self.vocab]))

    @cached_property
    def _domain(self) -> ProductDomain:
        tokens = INDUCTION_POOL[:self.vocab]
        first = range(FIRST, FIRST + self.period)
        return ProductDomain(((BOS,), *[tokens] * (2 * self.period - 1)), tuple(first),
                             tuple((p + self.period, p) for p in first[:-1]))

    def domain(self) -> ProductDomain:
        return self._domain

    def stripe(self, prompt: Prompt) -> tuple[StripeEntry, ...]:
        """Every query of the second copy, with its induction key and target."""
        return tuple(StripeEntry(q, q - self.period + 1, prompt[q - self.period + 1])
                     for q in range(FIRST + self.period, len(prompt)))

    def decision(self, prompt: Prompt) -> StripeEntry:
        """The stripe entry of the last position: the one the task decides."""
        return self.stripe(prompt)[-1]

    def target(self, prompt: Prompt) -> int:
        return prompt[self.period]

    def targets(self, prompts: np.ndarray) -> np.ndarray:
        return prompts[:, self.period].copy()

    def features(self, prompt: Prompt) -> int:
        return prompt[self.period]
