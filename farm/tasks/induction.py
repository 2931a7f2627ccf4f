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

That layout puts the answer at one position on every prompt, so a model may solve it
by attending there (trained ones do: their layer-0 head is no previous-token head).
With `len` set (`induction:vocab=7,period=3,len=8`), `OffsetInduction` fills a prompt
of that length with distinct tokens and places the pattern at any offset among them
(`RepeatedWindowDomain`): where the answer is depends on where the last token occurred
before, which only the tokens tell. It trains every query of the second copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from farm.errors import FarmError
from farm.tasks.arrangement import RepeatedWindowDomain
from farm.tasks.domain import ProductDomain
from farm.tasks.task import Domain, Prompt, Task
from farm.tasks.vocab import BOS, INDUCTION_POOL

FIRST = 1  # the position of p_1 in the fixed layout


class StripeEntry(NamedTuple):
    """One query of the induction stripe: where it should look and what it should copy."""

    query: int
    key: int  # the token after the previous occurrence of the query's
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
    def _domain(self) -> Domain:
        tokens = INDUCTION_POOL[:self.vocab]
        first = range(FIRST, FIRST + self.period)
        return ProductDomain(((BOS,), *[tokens] * (2 * self.period - 1)), tuple(first),
                             tuple((p + self.period, p) for p in first[:-1]))

    def domain(self) -> Domain:
        return self._domain

    @property
    def stripe_queries(self) -> tuple[int, ...]:
        """The positions of the second copy: each has an induction key and target."""
        return tuple(range(self.seq_len - self.period + 1, self.seq_len))

    def stripe_keys(self, prompts: np.ndarray) -> np.ndarray:
        """Each stripe query's key in each prompt of a batch [n, period − 1]: one period back."""
        keys = np.asarray(self.stripe_queries, dtype=np.int64) - self.period + 1
        return np.broadcast_to(keys, (len(prompts), len(keys)))

    def stripe(self, prompt: Prompt) -> tuple[StripeEntry, ...]:
        """Every query of the second copy, with its induction key and target."""
        keys = self.stripe_keys(np.asarray([prompt], dtype=np.int64))[0].tolist()
        return tuple(StripeEntry(q, k, prompt[k])
                     for q, k in zip(self.stripe_queries, keys, strict=True))

    def decision(self, prompt: Prompt) -> StripeEntry:
        """The stripe entry of the last position: the one the task decides."""
        return self.stripe(prompt)[-1]

    def target(self, prompt: Prompt) -> int:
        return self.decision(prompt).target

    def targets(self, prompts: np.ndarray) -> np.ndarray:
        key = self.stripe_keys(prompts)[:, -1]
        return prompts[np.arange(len(prompts)), key].astype(np.int64)

    def features(self, prompt: Prompt) -> int:
        return self.target(prompt)

    def feature_codes(self, prompts: np.ndarray) -> np.ndarray:
        return self.targets(prompts)


@dataclass(frozen=True, eq=False, repr=False)
class OffsetInduction(Induction):
    """BOS, `len` − period distinct tokens with the pattern (`period` of them) at any offset,
    then the pattern again up to its last token."""

    length: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        span = self.length - self.period
        if self.length < 2 * self.period + 1:
            raise FarmError(f"{self.name}: len must be at least 2·period + 1 = "
                            f"{2 * self.period + 1}, so that the pattern has two offsets")
        if span > self.vocab:
            raise FarmError(f"{self.name}: len − period = {span} distinct tokens need vocab "
                            f"at least {span}")

    @cached_property
    def _domain(self) -> RepeatedWindowDomain:
        return RepeatedWindowDomain(BOS, INDUCTION_POOL[:self.vocab], self.length - self.period,
                                    self.period - 1)

    def stripe_keys(self, prompts: np.ndarray) -> np.ndarray:
        """Each stripe query's key [n, period − 1]: after the copied token's one occurrence."""
        span = self._domain.span
        first = np.argmax(prompts[:, 1:span + 1] == prompts[:, span + 1, None], axis=1) + 1
        return first[:, None] + np.arange(1, self.period)

    @property
    def trained_positions(self) -> tuple[int, ...]:
        """Every query of the second copy: with the last alone trained, layer 0 attended
        to the last token's earlier occurrence about as much as to previous tokens; with
        every query, a previous-token head forms (docs/BENCHMARKS.md)."""
        return self.stripe_queries

    def position_targets(self, prompts: np.ndarray) -> np.ndarray:
        keys = self.stripe_keys(prompts)
        return prompts[np.arange(len(prompts))[:, None], keys].astype(np.int64)
