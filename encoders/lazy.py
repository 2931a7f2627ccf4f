"""A sequence whose items are computed when first read, then kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class Lazy(Sequence[T]):
    """`item(i)` for i in range(n), each computed on first access: a property reads two
    of the vocabulary's logits, and planning starts before every exact run is done."""

    def __init__(self, n: int, item: Callable[[int], T]) -> None:
        self._n, self._item = n, item
        self._items: dict[int, T] = {}

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        i = range(self._n)[i]  # negative indices; IndexError past the end
        if (item := self._items.get(i)) is None:
            item = self._items[i] = self._item(i)
        return item
