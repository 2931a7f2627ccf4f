"""Exact QF_LRA encodings of the piecewise-linear operators (SPEC §2).

Each operator comes in two modes that share its math:

* *guided*: the branch recorded by `farm.model.exact` is taken, so the output is an
  affine term on that branch, and the branch's conditions are returned as
  *guards* (the encoding is exact wherever they hold; the caller decides how
  they enter the query, never as assumptions about the model).
* *full*: every case split is left to the solver as an `ite`, so the encoding
  is exact for every input; nothing is taken from the trace.

Both rest on one idea: a threshold τ with `Σ max(s_i − τ, 0) = total` is
sparsemax (total 1) and BandNorm's projection (total half_high) alike. Guided,
τ is affine on the recorded support; full, τ is a variable the solver finds,
with no sorting. Definitions always determine every variable uniquely, so
asserting them never makes a query vacuous.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

from encoders.smtlib import (
    FALSE,
    TRUE,
    Affine,
    Formula,
    Query,
    eq,
    ge,
    gt,
    implies,
    ite,
    le,
    lt,
    not_,
    or_,
)
from farm.model.exact import BandNormBranch, SideBranch
from farm.model.gpt import LEAKY_SLOPE

__all__ = [
    "Guarded", "Settled", "band_norm_full", "band_norm_guided", "leaky_relu_full",
    "leaky_relu_guided", "positive_part", "sparsemax_full", "sparsemax_guided",
    "threshold_full", "threshold_guided",
]

Vec = list[Affine]
Guarded = tuple[Vec, list[Formula]]  # (output terms, conditions under which they are exact)
_ZERO, _ONE = Fraction(0), Fraction(1)


def _is_zero(a: Affine) -> bool:
    return not a.nums and not a.num0


def _holding(*fs: Formula) -> list[Formula]:
    """Guards worth stating: a guard folded to `true` says nothing (`false` is kept)."""
    return [f for f in fs if f is not TRUE]


def positive_part(q: Query, name: str, a: Affine) -> Affine:
    """max(a, 0) as a named `ite`: the one case split every operator here is made of."""
    return q.define(name, ite(gt(a, 0), a, 0))


# --------------------------------------------------------------------------- thresholds


def threshold_guided(q: Query, s: Sequence[Affine], support: Sequence[int], total: Fraction,
                     *, tag: str) -> Guarded:
    """max(s − τ, 0) with Σ = total, on a known support S: τ = (Σ_S s − total)/|S|.

    τ is unique (Σ max(s_i − τ, 0) is strictly decreasing while positive), so the
    support conditions s_i > τ on S and s_i ≤ τ off S pin the branch exactly.
    τ is named, so each condition costs a few symbols, not the whole sum.
    """
    inside = set(support)
    tau = q.define(f"{tag}.tau",
                   (Affine.sum(s[i] for i in support) - total) * Fraction(1, len(support)))
    out = [s_i - tau if i in inside else Affine() for i, s_i in enumerate(s)]
    guards = _holding(*((gt if i in inside else le)(s_i, tau) for i, s_i in enumerate(s)))
    return out, guards


def threshold_full(q: Query, s: Sequence[Affine], total: Fraction, *, tag: str,
                   when: Formula | None = None, inside: frozenset[int] = frozenset(),
                   outside: frozenset[int] = frozenset()) -> Guarded:
    """max(s − τ, 0) with τ a variable fixed by Σ = total (only `when` it holds; else τ = 0).

    With τ = 0 and s ≥ 0 (BandNorm's sides) the output is s itself, so the
    projection needs no second case split on whether it applies. Indices a
    caller knows to be `inside` the support (s_i > τ) or `outside` it (s_i ≤ τ)
    over its whole input region (only where the threshold always applies) need
    no split either; each comes back as a guard for the negated claim.
    """
    if when is not None and (inside or outside):
        raise ValueError("a support is settled only where the threshold always applies")
    tau = q.real(f"{tag}.tau")
    out = [s_i - tau if i in inside else Affine() if i in outside
           else positive_part(q, f"{tag}.w{i}", s_i - tau) for i, s_i in enumerate(s)]
    balanced = eq(Affine.sum(out), total)
    if when is None:
        q.add(balanced)
    else:
        q.add(implies(when, balanced), implies(not_(when), eq(tau, 0)))
    return out, _holding(*(gt(s[i], tau) for i in sorted(inside)),
                         *(le(s[i], tau) for i in sorted(outside)))


# --------------------------------------------------------------------------- sparsemax


def sparsemax_guided(q: Query, z: Sequence[Affine], support: Sequence[int], *,
                     tag: str) -> Guarded:
    """Sparsemax on its recorded support (the indices with positive weight)."""
    return threshold_guided(q, z, support, _ONE, tag=tag)


def sparsemax_full(q: Query, z: Sequence[Affine], *, tag: str) -> Vec:
    """Sparsemax for every support, τ found by the solver."""
    return threshold_full(q, z, _ONE, tag=tag)[0]


# --------------------------------------------------------------------------- LeakyReLU


def leaky_relu_guided(x: Sequence[Affine], signs: Sequence[bool]) -> Guarded:
    """LeakyReLU on the recorded sign pattern (True where x ≥ 0, as `farm.model.exact`)."""
    out = [x_i if s else x_i * LEAKY_SLOPE for x_i, s in zip(x, signs, strict=True)]
    guards = _holding(*((ge if s else lt)(x_i, 0) for x_i, s in zip(x, signs, strict=True)))
    return out, guards


def leaky_relu_full(q: Query, x: Sequence[Affine], *, tag: str) -> Vec:
    return [q.define(f"{tag}{i}", ite(ge(x_i, 0), x_i, x_i * LEAKY_SLOPE))
            for i, x_i in enumerate(x)]


# --------------------------------------------------------------------------- BandNorm


def _centre(q: Query, x: Sequence[Affine], *, tag: str) -> Vec:
    """x − mean(x), the mean named so each coordinate is two symbols."""
    mean = q.define(f"{tag}.mean", Affine.sum(x) * Fraction(1, len(x)))
    return [v - mean for v in x]


def _fallbacks(d: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The lift's fallback masks: even indices for p, odd for n."""
    return tuple(range(0, d, 2)), tuple(range(1, d, 2))


def _band_output(q: Query, p: Sequence[Affine], n: Sequence[Affine],
                 gamma: Sequence[Fraction], beta: Sequence[Fraction], *, tag: str) -> Vec:
    """γ ⊙ (z − mean z) + β with z = p − n."""
    z = _centre(q, [a - b for a, b in zip(p, n, strict=True)], tag=f"{tag}.z")
    return [z_i * g + b for z_i, g, b in zip(z, gamma, beta, strict=True)]


def band_norm_guided(q: Query, x: Sequence[Affine], gamma: Sequence[Fraction],
                     beta: Sequence[Fraction], half_low: Fraction, half_high: Fraction,
                     branch: BandNormBranch, *, tag: str) -> Guarded:
    """Signed L1 BandNorm on its recorded branch: signs, projection support, lift support."""
    c = _centre(q, x, tag=tag)
    guards = _holding(*((gt if s > 0 else lt if s < 0 else eq)(c_i, 0)
                        for c_i, s in zip(c, branch.signs, strict=True)))
    p = [c_i if s > 0 else Affine() for c_i, s in zip(c, branch.signs, strict=True)]
    n = [-c_i if s < 0 else Affine() for c_i, s in zip(c, branch.signs, strict=True)]
    p = _band_side_guided(q, p, branch.p, half_low, half_high, guards, tag=f"{tag}.P")
    n = _band_side_guided(q, n, branch.n, half_low, half_high, guards, tag=f"{tag}.N")
    return _band_output(q, p, n, gamma, beta, tag=tag), guards


def _band_side_guided(q: Query, s: Vec, branch: SideBranch, half_low: Fraction,
                      half_high: Fraction, guards: list[Formula], *, tag: str) -> Vec:
    """One side on its branch; its conditions are appended to `guards`.

    A projected side keeps Σ = half_high > half_low, so it is never lifted and
    its recorded support (the active set) is the projection's support.
    """
    total = Affine.sum(s)
    if branch.projected:
        s, projection = threshold_guided(q, s, branch.support, half_high, tag=tag)
        guards += _holding(gt(total, half_high), *projection)
    else:
        guards += _holding(le(total, half_high))
    deficit = half_low - Affine.sum(s)
    if not branch.lifted:
        guards += _holding(le(deficit, 0))
        return s
    active = () if branch.fallback else branch.support
    guards += _holding(gt(deficit, 0), *((gt if i in active else le)(s_i, 0)
                                         for i, s_i in enumerate(s)))
    share = q.define(f"{tag}.share", deficit * Fraction(1, len(branch.support)))
    return [s_i + share if i in branch.support else s_i for i, s_i in enumerate(s)]


class Settled(NamedTuple):
    """What a caller proved of one BandNorm side over its whole input region:
    True/False when the projection (or lift) always/never happens, None if either;
    where it always happens, the coordinates it always keeps (`inside` its support)
    and always zeroes (`outside`)."""

    projected: bool | None = None
    lifted: bool | None = None
    inside: frozenset[int] = frozenset()
    outside: frozenset[int] = frozenset()


def band_norm_full(q: Query, x: Sequence[Affine], gamma: Sequence[Fraction],
                   beta: Sequence[Fraction], half_low: Fraction, half_high: Fraction, *,
                   tag: str, fixed_signs: Mapping[int, int] | None = None,
                   settled: Mapping[str, Settled] | None = None) -> Guarded:
    """Signed L1 BandNorm for every branch, as case splits the solver explores.

    A caller that bounds x (robustness: a box around a point) may settle parts
    of the branch in advance; each settled part comes back as a guard to put
    in the negated claim, so the solver checks the caller's bounds too.
    `fixed_signs` (coordinate -> ±1) are centred coordinates of constant sign:
    their split is dropped, a coordinate fixed at zero drops out of that side,
    and one fixed positive on an unprojected side is always active in the lift.
    `settled` ("p", "n" -> Settled) drops a side's projection or lift split.
    """
    fixed, settled = fixed_signs or {}, settled or {}
    c = _centre(q, x, tag=tag)
    guards = _holding(*((gt if s > 0 else lt)(c[i], 0) for i, s in fixed.items()))
    p = [c_i if fixed.get(i) == 1 else Affine() if fixed.get(i) == -1
         else positive_part(q, f"{tag}.p{i}", c_i) for i, c_i in enumerate(c)]
    n = [p_i - c_i for p_i, c_i in zip(p, c, strict=True)]  # max(−c, 0) = max(c, 0) − c
    even, odd = _fallbacks(len(c))
    sides = {}
    for name, side, fallback, orient in (("p", p, even, 1), ("n", n, odd, -1)):
        positive = frozenset(i for i, s in fixed.items() if s == orient)
        sides[name], side_guards = _band_side_full(
            q, side, fallback, half_low, half_high, settled.get(name, Settled()), positive,
            tag=f"{tag}.{name.upper()}")
        guards += side_guards
    return _band_output(q, sides["p"], sides["n"], gamma, beta, tag=tag), guards


def _band_side_full(q: Query, s: Vec, fallback: tuple[int, ...], half_low: Fraction,
                    half_high: Fraction, settled: Settled, positive: frozenset[int], *,
                    tag: str) -> Guarded:
    """Project (τ = 0 when Σs ≤ half_high), then lift by deficit/k with k = |active|.

    Coordinates identically zero stay zero (τ ≥ 0) and are never active, so
    only the live ones enter the case splits; k is split only over the live
    coordinates not known to be positive.
    """
    guards: list[Formula] = []
    live = [i for i, s_i in enumerate(s) if not _is_zero(s_i)]
    total = Affine.sum(s)
    if settled.projected is False:
        guards += _holding(le(total, half_high))
    else:
        positive = frozenset()  # a projection may zero any coordinate
        if settled.projected:
            guards += _holding(gt(total, half_high))
        projected, support_guards = threshold_full(
            q, [s[i] for i in live], half_high, tag=tag,
            when=None if settled.projected else gt(total, half_high),
            inside=frozenset(k for k, i in enumerate(live) if i in settled.inside),
            outside=frozenset(k for k, i in enumerate(live) if i in settled.outside))
        guards += support_guards
        s = list(s)
        for i, v in zip(live, projected, strict=True):
            s[i] = v
        total = Affine.sum(s)
    if settled.lifted is False or settled.projected:  # a projected side sums to half_high
        guards += _holding(ge(total, half_low))
        return s, guards
    if settled.lifted:
        guards += _holding(lt(total, half_low))
        deficit = q.define(f"{tag}.def", half_low - total)
    else:
        deficit = positive_part(q, f"{tag}.def", half_low - total)
    sure = [i for i in live if i in positive]
    active = {i: gt(s[i], 0) for i in live if i not in positive}
    count = Affine.sum([Affine(const=len(sure)),
                        *(q.define(f"{tag}.a{i}", ite(f, 1, 0)) for i, f in active.items())])
    share = q.real(f"{tag}.share")
    none_active = eq(count, 0) if not sure else FALSE
    if none_active is not FALSE:
        q.add(implies(none_active, eq(share * len(fallback), deficit)))
    q.add(*(implies(eq(count, k), eq(share * k, deficit))
            for k in range(max(1, len(sure)), len(live) + 1)))
    lifts = []
    for i in range(len(s)):
        lifted = TRUE if i in positive and i in live else or_(
            *([active[i]] if i in active else []),
            *([none_active] if i in fallback and none_active is not FALSE else []))
        if lifted is not FALSE:
            lifts.append(share if lifted is TRUE else
                         q.define(f"{tag}.l{i}", ite(lifted, share, 0)))
            s[i] = s[i] + lifts[-1]
    # Implied by the splits above, for any branch and any guard: the lifts add up to
    # the deficit, and where it is max(half_low − Σs, 0), share = deficit/k lies
    # between deficit/k_max and deficit/k_min. Stated linearly they cut the
    # solvers' search: robustness of quote input 0 at ε = 0.3, cvc5 3.9 -> 0.2 s.
    q.add(eq(Affine.sum(lifts), deficit))
    if settled.lifted is None:
        q.add(ge(share, 0), le(share * max(1, len(sure)), deficit),
              ge(share * max(len(live), len(fallback)), deficit))
    return s, guards
