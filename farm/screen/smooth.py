"""Sound interval extensions of the standard operators: softmax, LayerNorm and GELU.

The standard variant (`--attn softmax --norm layer_norm --activation gelu`) has no
exact rational semantics: exp, erf and a square root are irrational. Its circuit's
decision is still a fact about real numbers (the float32 weights taken exactly), and
these operators bound it: each returns an `Iv` whose interval contains the real
value of the operator on every point of its input's interval.

Assumptions, stated once (and held to high-precision reference values by
tests/test_screen_smooth.py):

- `np.exp` and `math.erf` on float64 are within a relative `LIBM` = 2^-44 of the
  real function (glibc and numpy document at most a few ulps; this is 2^9 ulps);
- `np.sqrt`, +, −, ×, ÷ are IEEE round-to-nearest (at most half an ulp);
- LayerNorm's ε is torch's default 1e-5, taken as any real between its float32 and
  its decimal value, so either reading of the model is covered.

Bounds are computed as interval ends, each pushed one ulp outwards after its last
rounding (the `Iv.ends` convention); an overflow becomes inf or nan, and the
screen then calls the input not decisive.
"""

from __future__ import annotations

import math

import numpy as np

from farm.screen.interval import TINY, U2, Iv, center, from_ends, gamma, scale_shift

LIBM = 2.0 ** -44  # assumed relative error of np.exp and math.erf (see above)
LAYER_NORM_EPS = (float(np.float32(1e-5)), 1e-5)  # torch's eps, read either way
GELU_MIN = -0.1699713  # below GELU's minimum −0.16997120…, at x* ≈ −0.7517916
GELU_FALLS_BEFORE, GELU_RISES_AFTER = -0.752, -0.751  # x* lies strictly between
_ERF = np.frompyfunc(math.erf, 1, 1)
_SQRT_HALF = math.sqrt(0.5)


def _down(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, -np.inf)


def _up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, np.inf)


def _spread(value: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[value − err, value + err], each end one rounding and one ulp outwards."""
    return _down(value - err), _up(value + err)


def exp_ends(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of exp over [lo, hi] (exp rises, so its ends' values)."""
    low, high = np.exp(lo), np.exp(hi)
    return np.maximum(_down(low - LIBM * low - TINY), 0.0), _up(high + LIBM * high + TINY)


def softmax(scores: Iv, mask: np.ndarray) -> Iv:
    """Softmax weights over the last axis (mask: the causal prefix), as intervals.

    p_j = 1 / (1 + Σ_{k≠j} exp(z_k − z_j)) rises with z_j and falls with every other
    z_k, so over the box of scores it lies between the values at the box's two
    corners for j: every difference at its largest (z_k high, z_j low) or smallest.
    Shifting by z_j first keeps exp's arguments where the true weights are small.
    """
    lo, hi = scores.ends()
    others = mask[..., None, :] & ~np.eye(lo.shape[-1], dtype=bool)  # [.., j, k]
    _, biggest = exp_ends(np.zeros(1), _up(hi[..., None, :] - lo[..., :, None]))
    smallest, _ = exp_ends(_down(lo[..., None, :] - hi[..., :, None]), np.zeros(1))
    g = 2.0 * gamma(lo.shape[-1])
    sum_hi = _up(np.where(others, biggest, 0.0).sum(-1) * (1.0 + g))
    sum_lo = np.maximum(_down(np.where(others, smallest, 0.0).sum(-1) * (1.0 - g)), 0.0)
    p_lo = _down(1.0 / _up(1.0 + sum_hi))
    p_hi = np.minimum(_up(1.0 / _down(1.0 + sum_lo)), 1.0)
    p_lo = np.where(mask, np.maximum(p_lo, 0.0), 0.0)
    return from_ends(p_lo, np.where(mask, p_hi, 0.0))


def layer_norm(x: Iv, weight: np.ndarray, bias: np.ndarray) -> Iv:
    """torch's LayerNorm over the last axis: (x − mean) / sqrt(var + ε) · weight + bias,
    var the biased variance. Each step is a rigorous interval step; the correlation
    between a coordinate and the spread it is divided by is given up, which costs
    little on concrete inputs, whose intervals are a few ulps wide."""
    d = x.m.shape[-1]
    c_lo, c_hi = center(x).ends()
    sq_hi = _up(np.maximum(c_lo * c_lo, c_hi * c_hi))
    sq_lo = np.where((c_lo > 0) | (c_hi < 0),
                     _down(np.minimum(c_lo * c_lo, c_hi * c_hi)), 0.0)
    sq_lo = np.maximum(sq_lo, 0.0)
    g = 2.0 * gamma(d)
    var_lo = np.maximum(_down(_down(sq_lo.sum(-1) * (1.0 - g)) / d), 0.0)
    var_hi = _up(_up(sq_hi.sum(-1) * (1.0 + g)) / d)
    s_lo = _down(np.sqrt(_down(var_lo + min(LAYER_NORM_EPS))))
    s_hi = _up(np.sqrt(_up(var_hi + max(LAYER_NORM_EPS))))
    corners = [c / s[..., None] for c in (c_lo, c_hi) for s in (s_lo, s_hi)]
    q_lo = _down(np.minimum.reduce(corners))
    q_hi = _up(np.maximum.reduce(corners))
    return scale_shift(from_ends(q_lo, q_hi), weight, bias)


def gelu_ends(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of GELU(x) = x·Φ(x) = x/2·(1 + erf(x/√2)) at float points x.

    Error of the float evaluation: x/√2 is off by ≤ 2u|x| relatively (a rounded 1/√2,
    a rounded product); erf is 2/√π ≤ 1.13-Lipschitz, so erf's argument error moves
    it by ≤ 3u|x|, and erf itself is off by ≤ LIBM; 1 + erf and the two products
    round once each. In all |value − GELU(x)| ≤ |x|(LIBM + 4u(1 + |x|)) + 4u|value|,
    u = 2^-53 (U2 = 2u below).
    """
    erf = _ERF(x * _SQRT_HALF).astype(np.float64)
    value = 0.5 * x * (1.0 + erf)
    ax = np.abs(x)
    err = ax * (LIBM + 2.0 * U2 * (1.0 + ax)) + 2.0 * U2 * np.abs(value) + TINY
    return _spread(value, _up(err * (1.0 + 2.0 ** -40)))


def gelu(x: Iv) -> Iv:
    """GELU over intervals: it falls to its minimum at x* ∈ (−0.752, −0.751) and rises
    after, so its largest value on [lo, hi] is at an end, and its smallest is at the
    end nearer x* unless the interval reaches into (−0.752, −0.751), where the
    global minimum's lower bound `GELU_MIN` serves."""
    lo, hi = x.ends()
    lo_lo, lo_hi = gelu_ends(lo)
    hi_lo, hi_hi = gelu_ends(hi)
    low = np.where(hi <= GELU_FALLS_BEFORE, hi_lo,
                   np.where(lo >= GELU_RISES_AFTER, lo_lo, GELU_MIN))
    return from_ends(low, np.maximum(lo_hi, hi_hi))
