"""Rational enclosures of exp: lo ≤ e^x ≤ hi for a rational x, both rational.

Softmax weights are irrational; a sound statement about them needs exp bounded by
numbers we can compute exactly. For 0 ≤ y ≤ 1/2 the Taylor polynomial T_n(y) =
Σ_{i≤n} y^i/i! is below e^y (every dropped term is positive) and, by Lagrange's
remainder, e^y − T_n(y) = e^ξ y^{n+1}/(n+1)! ≤ 2·y^{n+1}/(n+1)! (e^{1/2} < 2). A
larger x is halved m times to such a y and the bounds squared back m times
(squaring is increasing on positives, and doubles a relative error, so the work
carries m more bits); a negative x is 1/e^{−x}. The work is in integers (fixed
point), every step rounding lo down and hi up, so the numbers stay small and the
enclosure stays sound; its relative width is below 2^(2−bits).
"""

from __future__ import annotations

import math
from fractions import Fraction

BITS = 80
LIMIT = 1024  # softmax needs e^x only for x ≤ 0, and below e^-LIMIT only that it is tiny


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
    """(lo, hi), rationals with lo ≤ e^x ≤ hi and hi/lo − 1 < 2^(2−bits); below −LIMIT,
    (0, a bound on e^−LIMIT ≈ 2^−1477), not e^x's own digits. |x| ≤ LIMIT otherwise."""
    if x < -LIMIT:
        return Fraction(0), exp_bounds(Fraction(-LIMIT), bits)[1]
    if x > LIMIT:
        raise ValueError(f"exp_bounds({float(x):.6g}): e^x above e^{LIMIT} is not needed here")
    if x < 0:
        lo, hi = exp_bounds(-x, bits)
        return round_down(1 / hi, bits), round_up(1 / lo, bits)
    if x == 0:
        return Fraction(1), Fraction(1)
    halvings = max(0, math.ceil(math.log2(float(x))) + 1)  # y = x / 2^m ≤ 1/2
    work = bits + halvings + 8  # fixed point: e^y ≥ 1, so 2^-work is a relative error too
    scaled = x * (1 << work) / (1 << halvings)
    lo, hi = _taylor(math.floor(scaled), work, upper=False), _taylor(math.ceil(scaled), work,
                                                                     upper=True)
    for _ in range(halvings):
        lo, hi = (lo * lo) >> work, -((-hi * hi) >> work)
    return round_down(Fraction(lo, 1 << work), bits), round_up(Fraction(hi, 1 << work), bits)


def _taylor(y: int, work: int, upper: bool) -> int:
    """2^work·e^(y/2^work) for 0 ≤ y/2^work ≤ 1/2, rounded down (T_n, every term rounded
    down) or up (every term rounded up, plus the remainder bound 2·y^n/n!); n makes the
    last term at most one unit."""
    one = 1 << work
    total, term, n = 0, one, 0
    while term > 1:
        total += term
        n += 1
        term = term * y // (one * n) if not upper else -(-term * y // (one * n))
    return total + 2 * term if upper else total + term
