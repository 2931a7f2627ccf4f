"""A domain of distinct tokens with a window of them repeated: where induction must search.

A prompt is BOS, an arrangement of `span` distinct tokens of `pool` (x_1..x_span), then
a copy of `copy` consecutive ones, x_s..x_{s+copy-1}, for an offset s from 1 to
span − copy (so x_{s+copy}, the token after the window, exists). The tokens being
distinct, each copied token occurred exactly once before, and where it did depends on
s: no position or count of the prompt gives it away, only the token itself.

The canonical order is the offset first, then the arrangement lexicographically over
the pool's order (its Lehmer code as mixed-radix digits), so an index decodes by
arithmetic, as `ProductDomain`'s do, and the domain is never listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from farm.tasks.domain import IndexedDomain


@dataclass(frozen=True)
class RepeatedWindowDomain(IndexedDomain):
    bos: int
    pool: tuple[int, ...]  # the tokens the arrangement draws from, in canonical order
    span: int  # distinct tokens after BOS
    copy: int  # tokens repeated at the end

    def __post_init__(self) -> None:
        if len(set(self.pool)) != len(self.pool) or self.bos in self.pool:
            raise ValueError(f"pool {self.pool} repeats a token or holds BOS")
        if not 1 <= self.copy < self.span <= len(self.pool):
            raise ValueError(f"need 1 <= copy ({self.copy}) < span ({self.span}) <= "
                             f"{len(self.pool)} pool tokens")

    @property
    def seq_len(self) -> int:
        return 1 + self.span + self.copy

    @property
    def offsets(self) -> range:
        """Where the copied window may start: 1 .. span − copy."""
        return range(1, self.span - self.copy + 1)

    @cached_property
    def arrangements(self) -> int:
        """Arrangements per offset: pool!/(pool − span)!."""
        return math.perm(len(self.pool), self.span)

    @property
    def size(self) -> int:
        return len(self.offsets) * self.arrangements

    @property
    def positions(self) -> tuple[tuple[int, ...], ...]:
        """The tokens each position may hold (BOS, then any pool token)."""
        return ((self.bos,), *[self.pool] * (self.span + self.copy))

    def offset_of(self, prompt: Sequence[int]) -> int:
        """s: where the window copied at the end starts (ValueError if nowhere)."""
        first = self.span + 1
        body = list(prompt[1:first])
        if prompt[first] not in body:
            raise ValueError(f"{tuple(prompt)}: its copied token {prompt[first]} is not in "
                             "the arrangement")
        return body.index(prompt[first]) + 1

    def index(self, prompt: Sequence[int], start: int = 0, stop: int | None = None) -> int:
        """The canonical index of `prompt`; ValueError if it is not in the domain."""
        prompt = tuple(prompt)
        if len(prompt) != self.seq_len or prompt[0] != self.bos:
            raise ValueError(f"{prompt} is not BOS and {self.seq_len - 1} tokens")
        body = prompt[1:self.span + 1]
        if len(set(body)) != self.span or not set(body) <= set(self.pool):
            raise ValueError(f"{prompt}: positions 1..{self.span} are not distinct pool tokens")
        s = self.offset_of(prompt)
        if s not in self.offsets or prompt[self.span + 1:] != body[s - 1:s - 1 + self.copy]:
            raise ValueError(f"{prompt}: the end is not a copy of a window with a token after")
        free, code = list(self.pool), 0
        for token in body:
            code = code * len(free) + free.index(token)
            free.remove(token)
        index = (s - 1) * self.arrangements + code
        if not (start <= index < (len(self) if stop is None else stop)):
            raise ValueError(f"{prompt} is not in positions {start}..{stop}")
        return index

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        for start in range(0, len(self), 4096):
            yield from (tuple(p) for p in self.batch(start, start + 4096).tolist())

    def sample(self, draw: np.random.Generator, n: int) -> np.ndarray:
        """n prompts drawn uniformly."""
        return self.take(draw.integers(0, len(self), n))

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The prompts at `indices` (any order) as an int64 array."""
        rest = np.asarray(indices, dtype=np.int64)
        if rest.size and (rest.min() < 0 or rest.max() >= len(self)):
            raise IndexError(f"indices outside a domain of {len(self)} prompts")
        offset, rest = np.divmod(rest, self.arrangements)
        digits = np.empty((len(rest), self.span), dtype=np.int64)
        for i in reversed(range(self.span)):  # Lehmer code: digit i ranks among pool − i
            rest, digits[:, i] = np.divmod(rest, len(self.pool) - i)
        pool = np.asarray(self.pool, dtype=np.int64)
        used = np.zeros((len(rest), len(pool)), dtype=bool)
        out = np.empty((len(rest), self.seq_len), dtype=np.int64)
        out[:, 0] = self.bos
        rows = np.arange(len(rest))
        for i in range(self.span):  # the digits[i]-th token not used yet
            rank = np.cumsum(~used, axis=1) - 1
            pick = np.argmax((rank == digits[:, i, None]) & ~used, axis=1)
            used[rows, pick] = True
            out[:, 1 + i] = pool[pick]
        window = offset[:, None] + 1 + np.arange(self.copy)  # positions s..s+copy-1
        out[:, self.span + 1:] = out[rows[:, None], window]
        return out
