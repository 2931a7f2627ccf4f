"""What every task is, whatever its family: the interface the model, the encoders, the
screen and the certificates rely on.

A task is a family instance (`quote_close:len=10,fillers=8`): a domain of prompts, a
reference program P over the whole prompt, a candidate set T (any size of at least
two), and the features P reads, which define the content-invariance relation: two
prompts are of one class when P reads the same features in both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable

import numpy as np

from farm.errors import FarmError
from farm.tasks.arrangement import RepeatedWindowDomain
from farm.tasks.domain import ProductDomain
from farm.tasks.vocab import VOCAB_SIZE

Prompt = tuple[int, ...]
Domain = ProductDomain | RepeatedWindowDomain  # both indexable, decoded by arithmetic


class Task(ABC):
    name: str  # the canonical spec: the family alone for its defaults, else family:k=v,...

    @property
    @abstractmethod
    def candidates(self) -> tuple[int, ...]:
        """The candidate set T, ascending: the decision is the argmax over it."""

    @abstractmethod
    def domain(self) -> Domain:
        """Every prompt, in canonical order, indexable and never materialised."""

    @abstractmethod
    def target(self, prompt: Prompt) -> int:
        """P(x): the reference program's answer, a function of the whole prompt."""

    @abstractmethod
    def features(self, prompt: Prompt) -> Hashable:
        """What P reads of the prompt: prompts with equal features are of one class."""

    def targets(self, prompts: np.ndarray) -> np.ndarray:
        """P over a batch [n, seq_len]; families override it with a vectorised program."""
        return np.fromiter((self.target(tuple(p)) for p in prompts.tolist()), np.int64,
                           len(prompts))

    def feature_codes(self, prompts: np.ndarray) -> np.ndarray:
        """An integer per prompt of a batch, equal exactly where `features` are equal: the
        classes of R, vectorised. Codes are this task object's own (never stored); the
        default numbers features in order of first sight, families with integer features
        override it."""
        seen = self.__dict__.setdefault("_feature_codes", {})
        return np.fromiter((seen.setdefault(self.features(tuple(p)), len(seen))
                            for p in prompts.tolist()), np.int64, len(prompts))

    @property
    def trained_positions(self) -> tuple[int, ...]:
        """The positions training puts a margin on, the last (where the task decides) last;
        a family may add earlier ones whose targets teach the mechanism."""
        return (self.seq_len - 1,)

    def position_targets(self, prompts: np.ndarray) -> np.ndarray:
        """The target at each trained position, for a batch [n, len(trained_positions)]."""
        return self.targets(prompts)[:, None]

    def rivals(self, targets: np.ndarray) -> np.ndarray:
        """Each target's other candidates [n, |T| − 1]: the margin is against the best."""
        candidates = np.asarray(self.candidates, dtype=np.int64)
        others = candidates[None, :] != np.asarray(targets)[:, None]
        if not (others.sum(1) == len(candidates) - 1).all():
            raise FarmError(f"task {self.name}: a target outside the candidates")
        return np.broadcast_to(candidates, others.shape)[others].reshape(len(others), -1)

    def alternates(self, targets: np.ndarray) -> np.ndarray:
        """The other candidate of each target in a batch (see `alternate`)."""
        low, high = self._pair()
        return np.where(targets == low, high, low)

    @property
    def seq_len(self) -> int:
        return self.domain().seq_len

    @property
    def vocab_size(self) -> int:
        """The vocabulary the task's token ids are drawn from: SPEC's, unless the family
        has its own."""
        return VOCAB_SIZE

    def same_class(self, a: Prompt, b: Prompt) -> bool:
        """The content-invariance relation R."""
        return self.features(a) == self.features(b)

    def alternate(self, prompt: Prompt) -> int:
        """The other candidate of a two-candidate task: what a wrong decision picks."""
        low, high = self._pair()
        return high if self.target(prompt) == low else low

    def _pair(self) -> tuple[int, int]:
        if len(self.candidates) != 2:
            raise FarmError(f"task {self.name} has {len(self.candidates)} candidates: its margin "
                            "is against the best other one, not one alternate")
        low, high = self.candidates
        return low, high

    def __repr__(self) -> str:
        return f"Task({self.name})"
