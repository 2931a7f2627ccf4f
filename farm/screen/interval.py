"""Midpoint–radius interval arithmetic in float64 with rigorous rounding bounds.

An `Iv` holds arrays (m, r) with |exact − m| ≤ r elementwise, where "exact" is the
rational value the exact evaluator computes. numpy rounds to nearest and cannot
round upwards, so every bound here is derived for round-to-nearest:

- one operation: |fl(a ∘ b) − a ∘ b| ≤ u·|fl(a ∘ b)| (u = 2^-53), written `U2` = 2u
  below for headroom at power-of-two boundaries;
- a dot product of length n, in any summation order (BLAS blocking, FMA):
  |fl(Σ a_i b_i) − Σ a_i b_i| ≤ γ_n Σ|a_i b_i|, γ_n = n·u / (1 − n·u);
- a radius is a sum of non-negative terms computed in round-to-nearest, so the
  computed value may fall short of its exact value by a relative (1 − u)^N for N
  roundings; `up` multiplies by 1 + 2^-40 (enough for N up to about 2^12) and adds
  2^-1000 for products that underflowed.

Comparisons `m > r` are exact float comparisons, so `certainly_pos` never lies.
Only IEEE float64 arithmetic is assumed: any value that overflows becomes inf or
nan, and the screen reports such an input as not decisive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

U = 2.0 ** -53
U2 = 2.0 * U
TINY = 2.0 ** -1000
SLACK = 1.0 + 2.0 ** -40


def gamma(n: int) -> float:
    """γ_n: the relative error bound of an n-term dot product (plus one term of headroom)."""
    n += 1
    return n * U / (1.0 - n * U)


def up(r: np.ndarray) -> np.ndarray:
    """A radius computed in round-to-nearest, pushed up to bound its exact value."""
    return r * SLACK + TINY


def _up_inplace(r: np.ndarray) -> np.ndarray:
    """`up` on a fresh temporary, overwriting it (the same two roundings)."""
    r *= SLACK
    r += TINY
    return r


@dataclass(frozen=True)
class Iv:
    """Intervals as midpoint and radius arrays of one shape: |exact − m| ≤ r."""

    m: np.ndarray
    r: np.ndarray

    @classmethod
    def point(cls, values: np.ndarray) -> Iv:
        """Exact float64 values (a float32 weight widened is exact)."""
        values = np.asarray(values, dtype=np.float64)
        return cls(values, np.zeros_like(values))

    @classmethod
    def of_rational(cls, value: float) -> Iv:
        """A constant such as half_low = 22/5: its nearest float and one rounding."""
        m = np.float64(value)
        return cls(np.asarray(m), np.asarray(U2 * abs(m) + TINY))

    def __getitem__(self, index: object) -> Iv:
        return Iv(self.m[index], self.r[index])

    def where(self, mask: np.ndarray, other: Iv) -> Iv:
        """Self where mask holds, else other: picking one branch per row."""
        return Iv(np.where(mask, self.m, other.m), np.where(mask, self.r, other.r))

    def zero_where(self, mask: np.ndarray) -> Iv:
        """Exact zeros where mask holds (a side of BandNorm a coordinate is not on)."""
        return Iv(np.where(mask, 0.0, self.m), np.where(mask, 0.0, self.r))

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi] with lo ≤ exact ≤ hi: one step outwards covers m ± r's rounding."""
        return (np.nextafter(self.m - self.r, -np.inf), np.nextafter(self.m + self.r, np.inf))


def from_ends(lo: np.ndarray, hi: np.ndarray) -> Iv:
    """The interval [lo, hi] in midpoint–radius form."""
    m = 0.5 * lo + 0.5 * hi
    return Iv(m, np.nextafter(np.maximum(hi - m, m - lo), np.inf))


def certainly_pos(x: Iv) -> np.ndarray:
    return x.m > x.r


def certainly_neg(x: Iv) -> np.ndarray:
    return x.m < -x.r


def add(a: Iv, b: Iv) -> Iv:
    m = a.m + b.m
    return Iv(m, up(a.r + b.r + U2 * np.abs(m)))


def sub(a: Iv, b: Iv) -> Iv:
    m = a.m - b.m
    return Iv(m, up(a.r + b.r + U2 * np.abs(m)))


def div(a: Iv, s: np.ndarray | float) -> Iv:
    """a / s for exact positive floats s (the attention scale, a support size)."""
    m = a.m / s
    return Iv(m, up(a.r / s + U2 * np.abs(m)))


def total(a: Iv, mask: np.ndarray | None = None) -> Iv:
    """Σ over the last axis (of the masked coordinates)."""
    m, r = (a.m, a.r) if mask is None else (np.where(mask, a.m, 0.0), np.where(mask, a.r, 0.0))
    n = a.m.shape[-1]
    s = m.sum(-1)
    return Iv(s, up(r.sum(-1) + gamma(n) * np.abs(m).sum(-1)))


def center(a: Iv) -> Iv:
    """a − mean(a) over the last axis: r_i + mean(r) bounds the spread (triangle inequality)."""
    d = a.m.shape[-1]
    s = total(a)
    mean = s.m / d
    m = a.m - mean[..., None]
    mean_r = s.r / d + U2 * np.abs(mean)
    r = up(a.r + mean_r[..., None] + U2 * np.abs(m))
    exact_zero = np.all((a.m == 0.0) & (a.r == 0.0), axis=-1, keepdims=True)
    return Iv(m, np.where(exact_zero, 0.0, r))  # a zero-ablated input centres to exact 0


@dataclass(frozen=True)
class Affine:
    """x ↦ x @ wt + bias for exact float64 weights wt [in, out] (a torch weight
    transposed), with |wt| and γ computed once rather than per call."""

    wt: np.ndarray
    bias: np.ndarray | None
    abs_wt: np.ndarray
    gamma: float

    @classmethod
    def of(cls, wt: np.ndarray, bias: np.ndarray | None) -> Affine:
        wt = np.ascontiguousarray(wt, dtype=np.float64)
        bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float64)
        return cls(wt, bias, np.abs(wt), gamma(wt.shape[0] + 1))

    def columns(self, cols: slice) -> Affine:
        """The maps onto output coordinates `cols` only (one head's q, k or v)."""
        return Affine.of(self.wt[:, cols], None if self.bias is None else self.bias[cols])

    def __call__(self, x: Iv) -> Iv:
        """|x@wt − x_m@wt| ≤ r_x@|wt|; the midpoint's dot product (n terms, plus the bias:
        n + 1) rounds by ≤ γ_{n+1}|x_m|@|wt|; the bias' addition rounds by ≤ u|m|. So
        r = (r_x + γ|x_m|)@|wt| + 2u|m|, the same bound as ever, computed with fewer
        temporaries (in-place operations round exactly as their out-of-place forms)."""
        m = x.m @ self.wt
        if self.bias is not None:
            m += self.bias
        r = np.abs(x.m)
        r *= self.gamma
        r += x.r
        r = r @ self.abs_wt
        mag = np.abs(m)
        mag *= U2
        r += mag
        return Iv(m, _up_inplace(r))


def scale_shift(x: Iv, gain: np.ndarray, shift: np.ndarray) -> Iv:
    """gain ⊙ x + shift elementwise (BandNorm's γ and β), exact float64 parameters."""
    g = gain * x.m
    m = g + shift
    return Iv(m, up(np.abs(gain) * x.r + U2 * (np.abs(g) + np.abs(m))))


@dataclass(frozen=True)
class Operand:
    """The right-hand side of `dot`, prepared once for any contraction of at most
    `length` terms: its midpoint m, ra = r + γ_length·|m| and rb = |m| + r. A key or
    value row of attention is prepared once and contracted against many queries."""

    m: np.ndarray
    ra: np.ndarray
    rb: np.ndarray

    @classmethod
    def of(cls, b: Iv, length: int) -> Operand:
        bm = np.abs(b.m)
        return cls(np.ascontiguousarray(b.m), b.r + gamma(length) * bm, bm + b.r)

    def rows(self, index: np.ndarray) -> Operand:
        """The rows `index` (any shape) of a 2-d operand: [*index.shape, columns]."""
        return Operand(*(np.take(a, index, axis=0) for a in (self.m, self.ra, self.rb)))

    def __getitem__(self, index: object) -> Operand:
        return Operand(self.m[index], self.ra[index], self.rb[index])


def dot(a: Iv, b: Iv | Operand, spec: str, length: int | None = None) -> Iv:
    """An einsum contraction of two interval arrays over at most `length` terms.

    |ab − a_m b_m| ≤ |a_m| r_b + r_a |b_m| + r_a r_b, plus γ Σ|a_m||b_m| for the
    rounding of the midpoint's sum; folded into two contractions:
    Σ|a_m|(r_b + γ|b_m|) + Σ r_a(|b_m| + r_b). γ_n grows with n, so an Operand
    prepared for a longer contraction than it meets still bounds the rounding.
    """
    if isinstance(b, Iv):
        assert length is not None
        b = Operand.of(b, length)
    m = np.einsum(spec, a.m, b.m)
    r = np.einsum(spec, np.abs(a.m), b.ra)
    r += np.einsum(spec, a.r, b.rb)
    return Iv(m, _up_inplace(r))


def leaky_relu(x: Iv, slope_den: int) -> Iv:
    """LeakyReLU with slope 1/slope_den: 1-Lipschitz, and exactly x/slope_den where
    certainly negative, so the radius shrinks there."""
    m = np.where(x.m >= 0, x.m, x.m / slope_den)
    r = np.where(certainly_neg(x), x.r / slope_den, x.r)
    return Iv(m, up(r + U2 * np.abs(m)))


def _tau_bounds(z: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigorous bounds on sparsemax's threshold τ of exact float scores z [..., k].

    τ solves g(τ) = Σ max(z_j − τ, 0) = 1; g falls with slope ≤ −1 wherever it is
    positive, so |τ − τ̂| ≤ |g(τ̂) − 1| for a float estimate τ̂ with g(τ̂) > 0. g(τ̂)
    is evaluated with its own rounding bound E. Always τ ∈ [max z − 1, max z], which
    is the answer where the residual bound does not apply.
    """
    zs = np.where(mask, z, -np.inf)
    top = zs.max(-1)
    ordered = -np.sort(-zs, axis=-1)
    ks = np.arange(1, z.shape[-1] + 1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        cums = np.cumsum(ordered, axis=-1)
        k = np.maximum(np.sum(1.0 + ks * ordered > cums, axis=-1), 1)
    tau_hat = (np.take_along_axis(cums, k[..., None] - 1, -1)[..., 0] - 1.0) / k
    d = np.where(mask, z - tau_hat[..., None], 0.0)
    g = np.maximum(d, 0.0).sum(-1)
    err = up(U2 * np.abs(d).sum(-1) + gamma(z.shape[-1]) * g)
    valid = (g - err > 0) & np.isfinite(g)
    delta = up(np.abs(g - 1.0) + err)
    floor = np.nextafter(top - 1.0, -np.inf)
    lo = np.where(valid, np.maximum(np.nextafter(tau_hat - delta, -np.inf), floor), floor)
    hi = np.where(valid, np.minimum(np.nextafter(tau_hat + delta, np.inf), top), top)
    return lo, hi


def sparsemax(scores: Iv, mask: np.ndarray) -> Iv:
    """Sparsemax weights over the last axis (mask: the causal prefix), as intervals.

    τ is increasing in every score, so over the box of scores τ ∈ [τ(lo), τ(hi)] and
    p_j = max(z_j − τ, 0) ∈ [max(lo_j − τ(hi), 0), max(hi_j − τ(lo), 0)] ∩ [0, 1].
    The correlation between z_j and τ is given up; the radii it costs are as small
    as the scores' own.
    """
    lo, hi = scores.ends()
    tau_lo, _ = _tau_bounds(lo, mask)
    _, tau_hi = _tau_bounds(hi, mask)
    p_lo = np.maximum(np.nextafter(lo - tau_hi[..., None], -np.inf), 0.0)
    p_hi = np.minimum(np.maximum(np.nextafter(hi - tau_lo[..., None], np.inf), 0.0), 1.0)
    p_lo = np.where(mask, np.minimum(p_lo, p_hi), 0.0)
    p_hi = np.where(mask, p_hi, 0.0)
    return from_ends(p_lo, p_hi)
