"""Rational enclosures of exp: lo ≤ e^x ≤ hi for a rational x, both rational.

Softmax weights are irrational; a sound statement about them needs exp bounded by
numbers we can compute exactly. For 0 ≤ y ≤ 1/2 the Taylor polynomial T_n(y) =
Σ_{i≤n} y^i/i! is below e^y (every dropped term is positive) and, by Lagrange's
remainder, e^y − T_n(y) = e^ξ y^{n+1}/(n+1)! ≤ 2·y^{n+1}/(n+1)! (e^{1/2} < 2). A
larger x is halved m times to such a y and the bounds squared back m times
(squaring is increasing on positives, and doubles a relative error, so the work
carries m more bits); a negative x is 1/e^{−x}. Every step rounds lo down and hi up
to a fixed number of significant bits, so the numbers stay small and the enclosure
stays sound; its relative width is below 2^(2−bits).
"""

from __future__ import annotations

import math
from fractions import Fraction

BITS = 80


def round_down(x: Fraction, bits: int = BITS) -> Fraction:
    """The largest number of `bits` significant bits (times a power of 2) ≤ x, for x > 0."""
    shift = bits - (x.numerator.bit_length() - x.denominator.bit_length())
    if shift >= 0:
        return Fraction((x.numerator << shift) // x.denominator, 1 << shift)
    return Fraction(x.numerator // (x.denominator << -shift) << -shift)


def round_up(x: Fraction, bits: int = BITS) -> Fraction:
    """The smallest such number ≥ x, for x > 0."""
    shift = bits - (x.numerator.bit_length() - x.denominator.bit_length())
    if shift >= 0:
        return Fraction(-((-x.numerator << shift) // x.denominator), 1 << shift)
    return Fraction(-(-x.numerator // (x.denominator << -shift)) << -shift)


def exp_bounds(x: Fraction, bits: int = BITS) -> tuple[Fraction, Fraction]:
    """(lo, hi), rationals with lo ≤ e^x ≤ hi and hi/lo − 1 < 2^(2−bits)."""
    if x < 0:
        lo, hi = exp_bounds(-x, bits)
        return round_down(1 / hi, bits), round_up(1 / lo, bits)
    if x == 0:
        return Fraction(1), Fraction(1)
    halvings = max(0, math.ceil(math.log2(float(x))) + 1)  # y = x / 2^m ≤ 1/2
    work = bits + halvings + 8
    y = x / (1 << halvings)
    lo, hi = _taylor(round_down(y, work), work, upper=False), _taylor(round_up(y, work), work,
                                                                      upper=True)
    for _ in range(halvings):
        lo, hi = round_down(lo * lo, work), round_up(hi * hi, work)
    return round_down(lo, bits), round_up(hi, bits)


def _taylor(y: Fraction, bits: int, upper: bool) -> Fraction:
    """T_n(y), plus the remainder bound when `upper`, for 0 ≤ y ≤ 1/2, rounded to `bits`;
    n makes the remainder below 2^(−bits)."""
    total, term, n = Fraction(0), Fraction(1), 0
    while True:
        total += term
        n += 1
        term = term * y / n
        if term == 0 or 2 * term < Fraction(1, 1 << bits):
            break
    return round_up(total + 2 * term, bits) if upper else round_down(total, bits)
