"""Robustness without a solver: a sound floor of the margin over the ε-ball of r_E(x).

SPEC §4's robustness asks that for every η with ‖η‖∞ ≤ ε the final norm and lm_head
on r_E(x) + η decide P(x). The screen knows r_E(x) only as an interval m ± r, so
the ball lies inside the box B = m ± R, R = r + ε. BandNorm is affine on each of its
branches; where one branch holds over a part of B, the margin there is

    margin(x) = margin_β(m) + a_β·(x − m),   margin_β that branch's affine map,

so it is at least margin_β(m) − Σ|a_β,i|R_i. margin_β(m) and the gradient a_β come
from interval arithmetic with rigorous rounding bounds (`interval`), so the floor is
a proof. Which branches B can meet: the signs of the centred coordinates are the
usual cause of a change of branch inside the ball (each moves by up to 2ε), so a
row with at most `UNSURE_SIGNS` coordinates of unsure sign is bounded on every
assignment of them (+, − or 0); every other fact of each such branch (projection,
support, lift) must be certain over B (`band_norm(signs=...)`), else the row is not
proved. Plain intervals through BandNorm lose the correlation between coordinates
(the centring, each side's sum) and give a looser floor; the larger is kept.

Where neither side can be lifted anywhere in B (each side's sum stays ≥ half_low),
BandNorm is continuous on B: max(±c, 0) and the Euclidean projection are, only the
lift's support jumps. A continuous piecewise-affine f satisfies f(x) − f(m) =
Σ_k a_βk·(x − m)Δt_k along the segment from m to x, each a_βk the gradient of a
piece the segment crosses, so f(x) ≥ f(m) − Σ_i A_i R_i for any A_i ≥ |a_β,i| over
all pieces. `_continuous_floor` bounds A over every sign, projection and support
B allows, without enumerating them, and needs only the branch at m itself: this
proves rows whose projection or support is unsure inside the ball.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.screen.bandnorm import band_norm
from farm.screen.interval import (
    Iv,
    add,
    center,
    certainly_neg,
    certainly_pos,
    div,
    dot,
    scale_shift,
    sub,
    total,
    up,
)

Pair = tuple[np.ndarray, Iv, Iv]  # rows, difference row of lm_head, difference of biases
Norm = tuple[np.ndarray, np.ndarray, Iv, Iv]  # gain, shift, half_low, half_high
UNSURE_SIGNS = 2  # a row with more centred coordinates of unknown sign is not proved


def radius_above(epsilon: Fraction) -> float:
    """The least float64 not below ε: a ball of that radius holds the ε-ball."""
    epsilon = Fraction(epsilon)
    if epsilon < 0:
        raise FarmError(f"epsilon must be at least 0, got {epsilon}")
    f = float(epsilon)
    return f if Fraction(f) >= epsilon else float(np.nextafter(f, np.inf))


def robust(residual: Iv, radius: float, norm: Norm | None, pairs: Sequence[Pair]
           ) -> np.ndarray:
    """Per row of `residual` [n, d] (intervals holding r_E(x)): whether every pair's
    margin is certainly positive on the whole ball of `radius` around r_E(x)."""
    box = Iv(residual.m, up(residual.r + radius))
    if norm is None:
        floor, certain = _floor(box, None, None, pairs)
        return certain & (floor > 0)
    c = center(box)
    pos, neg = certainly_pos(c), certainly_neg(c)
    unsure = ~(pos | neg)
    count = unsure.sum(-1)
    floor, certain = _continuous_floor(box, c, norm, pairs)
    proved = certain & (floor > 0)
    sure = count == 0
    floor, certain = _floor(box[sure], norm, (pos[sure], neg[sure]), _subset(pairs, sure))
    proved[sure] |= certain & (floor > 0)
    some = np.flatnonzero((count > 0) & (count <= UNSURE_SIGNS))
    if not len(some):
        return proved
    # the columns of each row's unsure coordinates (repeated where it has fewer)
    slots = np.argsort(~unsure[some], axis=-1, kind="stable")[:, :UNSURE_SIGNS]
    slots = np.where(np.arange(UNSURE_SIGNS) < count[some, None], slots, slots[:, :1])
    lowest = np.full(len(some), np.inf)
    every = np.ones(len(some), dtype=bool)
    rows = np.arange(len(some))[:, None]
    for assignment in itertools.product((1, -1, 0), repeat=UNSURE_SIGNS):
        p, n = pos[some], neg[some]
        p[rows, slots] = np.array(assignment) == 1
        n[rows, slots] = np.array(assignment) == -1
        f, ok = _floor(box[some], norm, (p, n), _subset(pairs, some))
        lowest, every = np.minimum(lowest, f), every & ok
    proved[some] |= every & (lowest > 0)
    return proved


def _subset(pairs: Sequence[Pair], rows: np.ndarray) -> list[Pair]:
    return [(where[rows], w, b) for where, w, b in pairs]


def _floor(box: Iv, norm: Norm | None, signs: tuple[np.ndarray, np.ndarray] | None,
           pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """The least margin over the box on the branches with `signs` (all of it without a
    norm), and where those branches are certain there."""
    centre = Iv.point(box.m)
    if norm is None:
        y_box, y_centre, branch = box, centre, None
        certain = np.ones(len(box.m), dtype=bool)
    else:
        y_box, branch = band_norm(box, *norm, signs=signs)
        y_centre, at_centre = band_norm(centre, *norm, signs=signs)
        certain = branch.certain & at_centre.certain
    d = box.m.shape[-1]
    floor = np.full(len(box.m), np.inf)
    for rows, w, b in pairs:
        if not rows.any():
            continue
        grad = w if branch is None else branch.rows(rows).pullback(w, norm[0])
        spread = up(((np.abs(grad.m) + grad.r) * box.r[rows]).sum(-1))
        at_m, _ = add(dot(y_centre[rows], w, "nd,d->n", d), b).ends()
        linear = np.nextafter(at_m - spread, -np.inf)
        plain, _ = add(dot(y_box[rows], w, "nd,d->n", d), b).ends()
        floor[rows] = np.minimum(floor[rows], np.maximum(linear, plain))
    return floor, certain


def _continuous_floor(box: Iv, c: Iv, norm: Norm, pairs: Sequence[Pair]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The least margin over the box where BandNorm is continuous on it (no side can be
    lifted), by the bound on the pieces' gradients in the module docstring; and where
    that holds (and m's own branch is certain)."""
    gain, shift, half_low, half_high = norm
    y_centre, at_centre = band_norm(Iv.point(box.m), *norm)
    c_lo, c_hi = c.ends()
    certain = at_centre.certain.copy()
    sides = []
    for lo, hi in ((c_lo, c_hi), (-c_hi, -c_lo)):  # p from c, n from −c
        s_lo, s_hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        least, most = total(Iv.point(s_lo)), total(Iv.point(s_hi))
        certain &= certainly_pos(sub(least, half_low))  # Σs ≥ half_low, and H > half_low
        sides.append((s_hi > 0, ~certainly_neg(sub(most, half_high)),
                      ~certainly_pos(sub(least, half_high))))
    d = box.m.shape[-1]
    floor = np.full(len(box.m), np.inf)
    for rows, w, b in pairs:
        if not rows.any():
            continue
        g_lo, g_hi = center(scale_shift(w, gain, np.zeros_like(gain))).ends()
        v_lo, v_hi = np.zeros((int(rows.sum()), d)), np.zeros((int(rows.sum()), d))
        for member, may_project, may_not in sides:
            member = member[rows]
            # a side's pullback: g_i (not projected), g_i − mean_K(g) (projected onto K)
            mean_lo = np.where(member, g_lo, np.inf).min(-1, keepdims=True)
            mean_hi = np.where(member, g_hi, -np.inf).max(-1, keepdims=True)
            proj = may_project[rows, None] & member
            plain = may_not[rows, None] & member
            v_lo = np.minimum(v_lo, np.where(proj, np.nextafter(g_lo - mean_hi, -np.inf), 0.0))
            v_hi = np.maximum(v_hi, np.where(proj, np.nextafter(g_hi - mean_lo, np.inf), 0.0))
            v_lo = np.minimum(v_lo, np.where(plain, g_lo, 0.0))
            v_hi = np.maximum(v_hi, np.where(plain, g_hi, 0.0))
        # the gradient is v − mean(v)
        _, top = div(total(Iv.point(v_hi)), float(d)).ends()
        bottom, _ = div(total(Iv.point(v_lo)), float(d)).ends()
        bound = np.maximum(np.abs(np.nextafter(v_lo - top[:, None], -np.inf)),
                           np.abs(np.nextafter(v_hi - bottom[:, None], np.inf)))
        spread = up((bound * box.r[rows]).sum(-1))
        at_m, _ = add(dot(y_centre[rows], w, "nd,d->n", d), b).ends()
        floor[rows] = np.minimum(floor[rows], np.nextafter(at_m - spread, -np.inf))
    return floor, certain
