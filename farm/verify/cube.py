"""A cube of prompts: per position, the tokens it ranges over (one where it is fixed).

The unit a cube query proves a claim over (`encoders.cube`), and what a result
records per decided region of the domain, so it is a small value with a JSON form.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from farm.errors import FarmError
from farm.tasks.domain import ProductDomain

__all__ = ["Cube"]


@dataclass(frozen=True)
class Cube:
    tokens: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.tokens or not all(self.tokens):
            raise FarmError(f"a cube needs at least one token at every position, got "
                            f"{self.tokens}")
        if any(len(set(ts)) != len(ts) for ts in self.tokens):
            raise FarmError(f"a cube position repeats a token: {self.tokens}")

    @classmethod
    def of(cls, tokens: Sequence[Sequence[int]]) -> Cube:
        return cls(tuple(tuple(int(t) for t in ts) for ts in tokens))

    @classmethod
    def of_domain(cls, domain: ProductDomain) -> Cube:
        """A whole product domain as one cube (one with tied positions is no cube)."""
        if domain.ties:
            raise FarmError("a domain with tied positions is not a cube of independent tokens")
        return cls.of(domain.positions)

    @property
    def size(self) -> int:
        """How many prompts it holds."""
        return math.prod(len(ts) for ts in self.tokens)

    @property
    def symbolic(self) -> tuple[int, ...]:
        """The positions that range over more than one token."""
        return tuple(p for p, ts in enumerate(self.tokens) if len(ts) > 1)

    def fix(self, position: int, token: int) -> Cube:
        if token not in self.tokens[position]:
            raise FarmError(f"token {token} is not in the cube at position {position}")
        return Cube(tuple((token,) if p == position else ts for p, ts in enumerate(self.tokens)))

    def split(self, position: int) -> list[Cube]:
        """One cube per token of a symbolic position: together exactly this cube."""
        if len(self.tokens[position]) < 2:
            raise FarmError(f"position {position} of the cube is fixed: nothing to split")
        return [self.fix(position, t) for t in self.tokens[position]]

    def prompt_at(self, index: int) -> tuple[int, ...]:
        """The cube's prompt number `index` in product order (as `prompts`)."""
        if not 0 <= index < self.size:
            raise FarmError(f"prompt {index} of a cube of {self.size}")
        prompt = []
        for ts in reversed(self.tokens):
            index, digit = divmod(index, len(ts))
            prompt.append(ts[digit])
        return tuple(reversed(prompt))

    def sample(self, n: int, seed: int = 0) -> list[tuple[int, ...]]:
        """`n` distinct prompts of the cube (all of them if it holds no more): its first
        and last, the rest drawn with `seed`. The same cube always gives the same ones."""
        if self.size <= n:
            return [self.prompt_at(i) for i in range(self.size)]
        rng, picked = np.random.default_rng(seed), {0, self.size - 1}
        while len(picked) < n:
            picked.add(int(rng.integers(1, self.size - 1)))
        return [self.prompt_at(i) for i in sorted(picked)]

    def prompts(self) -> np.ndarray:
        """Every prompt of the cube as an int64 array [size, positions], in product order."""
        return np.array(list(itertools.product(*self.tokens)), dtype=np.int64).reshape(
            self.size, len(self.tokens))

    def __contains__(self, prompt: object) -> bool:
        return (isinstance(prompt, Sequence) and len(prompt) == len(self.tokens)
                and all(t in ts for t, ts in zip(prompt, self.tokens, strict=True)))

    def to_json(self) -> dict[str, Any]:
        return {"tokens": [list(ts) for ts in self.tokens]}

    @classmethod
    def from_json(cls, data: Any) -> Cube:
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(
                isinstance(ts, list) and all(type(t) is int for t in ts) for ts in tokens):
            raise FarmError(f"a cube is {{'tokens': [[int, ...], ...]}}, got {data!r}")
        return cls.of(tokens)

    def __str__(self) -> str:
        return "[" + ", ".join(str(ts[0]) if len(ts) == 1 else "{" + ",".join(map(str, ts)) + "}"
                               for ts in self.tokens) + "]"
