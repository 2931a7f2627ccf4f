"""Domains as indexable product spaces: a million prompts, never a list of them.

A task's domain is the product of what each position may hold (one token where it
is fixed). Its canonical order is a mixed-radix count: `significance` lists the
positions from the most significant digit to the least, and each digit runs over
its position's tokens in the order given. Today's lookup tasks (SPEC §1: fillers
outermost in lexicographic order, opener innermost) are the filler positions left
to right, then the opener. Index ↔ prompt is arithmetic, so shards are index
ranges and a batch is one vectorised decode. A position may be *tied* to an earlier
one (the induction task's second copy of its pattern): it holds whatever its source
holds, so it adds no digit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


class IndexedDomain(Sequence[tuple[int, ...]]):
    """What a domain derives from its exact `size`, its `index` of a prompt and its
    vectorised `take` of indices: length, membership and batches of consecutive prompts."""

    size: int
    index: Callable[..., int]
    take: Callable[[np.ndarray], np.ndarray]

    def __len__(self) -> int:
        return self.size

    def __contains__(self, prompt: object) -> bool:
        try:
            self.index(prompt)
        except (ValueError, TypeError):
            return False
        return True

    def batch(self, start: int, stop: int) -> np.ndarray:
        """Prompts start..stop-1 as an int64 array [stop - start, seq_len], decoded at once."""
        return self.take(np.arange(start, max(start, min(stop, len(self))), dtype=np.int64))

    @overload
    def __getitem__(self, index: int) -> tuple[int, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, ...] | list[tuple[int, ...]]:
        if isinstance(index, slice):
            return [tuple(p) for p in self.take(np.arange(*index.indices(len(self)))).tolist()]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is outside a domain of {len(self)} prompts")
        return tuple(self.take(np.array([index % len(self)]))[0].tolist())


@dataclass(frozen=True)
class ProductDomain(IndexedDomain):
    positions: tuple[tuple[int, ...], ...]  # the tokens each position ranges over, in order
    significance: tuple[int, ...]  # the varying positions, most significant first
    ties: tuple[tuple[int, int], ...] = ()  # (position, earlier source it repeats)

    def __post_init__(self) -> None:
        tied = {position for position, _ in self.ties}
        for position, source in self.ties:
            if not (0 <= source < position < len(self.positions)) or source in tied or \
                    self.positions[position] != self.positions[source]:
                raise ValueError(f"tie {position} <- {source}: a later position repeats an "
                                 "earlier untied one, with the same tokens")
        varying = {i for i, tokens in enumerate(self.positions) if len(tokens) > 1} - tied
        if sorted(self.significance) != sorted(varying) or not all(self.positions):
            raise ValueError(f"significance {self.significance} must list each varying "
                             f"position of {self.positions} once")
        for tokens in self.positions:
            if len(set(tokens)) != len(tokens):
                raise ValueError(f"a position repeats a token: {tokens}")

    @property
    def seq_len(self) -> int:
        return len(self.positions)

    @property
    def size(self) -> int:
        """The number of prompts, exact: `len` fails past 2^63 (Max-of-K at K = 20)."""
        tied = {position for position, _ in self.ties}
        return math.prod(len(tokens) for i, tokens in enumerate(self.positions)
                         if i not in tied)

    def index(self, prompt: Sequence[int], start: int = 0, stop: int | None = None) -> int:
        """The canonical index of `prompt`; ValueError if it is not in the domain."""
        if len(prompt) != self.seq_len:
            raise ValueError(f"{tuple(prompt)} has {len(prompt)} tokens, the domain "
                             f"{self.seq_len}")
        for position, tokens in enumerate(self.positions):
            if prompt[position] not in tokens:
                raise ValueError(f"{tuple(prompt)} is not in the domain: position {position} "
                                 f"holds one of {tokens}")
        for position, source in self.ties:
            if prompt[position] != prompt[source]:
                raise ValueError(f"{tuple(prompt)} is not in the domain: position {position} "
                                 f"repeats position {source}")
        index = 0
        for position in self.significance:
            tokens = self.positions[position]
            index = index * len(tokens) + tokens.index(prompt[position])
        if not (start <= index < (len(self) if stop is None else stop)):
            raise ValueError(f"{tuple(prompt)} is not in positions {start}..{stop}")
        return index

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        prompt = [tokens[0] for tokens in self.positions]
        for digits in itertools.product(*(self.positions[p] for p in self.significance)):
            for position, token in zip(self.significance, digits, strict=True):
                prompt[position] = token
            for position, source in self.ties:
                prompt[position] = prompt[source]
            yield tuple(prompt)

    def sample(self, draw: np.random.Generator, n: int) -> np.ndarray:
        """n prompts drawn uniformly, position by position: for a domain too large for
        int64 indices (uniform indices would draw the same distribution)."""
        out = np.empty((n, self.seq_len), dtype=np.int64)
        for position, tokens in enumerate(self.positions):
            out[:, position] = np.asarray(tokens, dtype=np.int64)[
                draw.integers(0, len(tokens), n)]
        for position, source in self.ties:
            out[:, position] = out[:, source]
        return out

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The prompts at `indices` (any order: a random minibatch) as an int64 array."""
        rest = np.asarray(indices, dtype=np.int64)
        if rest.size and (rest.min() < 0 or rest.max() >= len(self)):
            raise IndexError(f"indices outside a domain of {len(self)} prompts")
        out = np.empty((len(rest), self.seq_len), dtype=np.int64)
        for position, tokens in enumerate(self.positions):
            out[:, position] = tokens[0]
        for position in reversed(self.significance):
            tokens = np.asarray(self.positions[position], dtype=np.int64)
            rest, digit = np.divmod(rest, len(tokens))
            out[:, position] = tokens[digit]
        for position, source in self.ties:
            out[:, position] = out[:, source]
        return out
