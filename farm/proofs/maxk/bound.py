"""What every Max-of-K proof strategy ends in: a count of inputs proved correct."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class AccuracyBound:
    """`correct` of `total` inputs are proved correct: accuracy ≥ correct/total, exactly.

    Brute force decides every input, so it also reports the rest: exact ties (the
    target's logit equals a rival's: not correct) and inputs decided wrong.
    """

    strategy: str
    task: str
    correct: int
    total: int
    flops: int
    seconds: float
    ties: int | None = None
    wrong: int | None = None

    @property
    def accuracy(self) -> Fraction:
        return Fraction(self.correct, self.total)
