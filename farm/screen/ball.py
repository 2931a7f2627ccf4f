"""Robustness without a solver: a sound floor of the margin over the ε-ball of r_E(x).

SPEC §4's robustness asks that for every η with ‖η‖∞ ≤ ε the final norm and lm_head
on r_E(x) + η decide P(x). The screen knows r_E(x) only as an interval m ± r and the
exact margin there as [lo, hi]; the ball lies inside the box B = m ± (r + ε).
BandNorm is piecewise affine, so on a segment inside one piece β the margin moves
by a_β·Δx, a_β that piece's gradient. Three floors, each a proof, tried from the
cheapest on the rows still open:

1. Where no side can be lifted anywhere in B (each side's sum stays ≥ half_low),
   BandNorm is continuous on B: max(±c, 0) and the Euclidean projection are, only
   the lift's support jumps. Along the segment from r_E(x) to x the margin then
   moves by Σ_k a_βk·Δx_k over the pieces it crosses, so it is at least
   lo − Σ_i A_i ε for any A_i ≥ |a_β,i| over every piece B allows: bounded here
   from the signs, projections and supports B allows, without enumerating them.
2. Where one branch holds over all of B (checked as `band_norm` checks any box),
   margin(x) = margin(r_E) + a·(x − r_E) exactly: lo − Σ|a_i|ε. Plain intervals
   through BandNorm on B give another floor; the larger is kept.
3. A row with at most `UNSURE_SIGNS` centred coordinates of unsure sign is bounded
   on every assignment of them (+, − or 0): on the branches with those signs
   (`band_norm(signs=...)`, every other fact certain over B) the margin is an
   affine map's, at least its value at m less Σ|a_i|(r_i + ε).

Every quantity is an interval with rigorous rounding bounds (`interval`); an ε that
is not a float is widened to the next float above (`radius_above`).
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
UNSURE_SIGNS = 2  # floor 3 is tried on rows with at most this many unsure signs


def radius_above(epsilon: Fraction) -> float:
    """The least float64 not below ε: a ball of that radius holds the ε-ball."""
    epsilon = Fraction(epsilon)
    if epsilon < 0:
        raise FarmError(f"epsilon must be at least 0, got {epsilon}")
    f = float(epsilon)
    return f if Fraction(f) >= epsilon else float(np.nextafter(f, np.inf))


def robust(residual: Iv, lo: np.ndarray, radius: float, norm: Norm | None,
           pairs: Sequence[Pair]) -> np.ndarray:
    """Per row of `residual` [n, d] (intervals holding r_E(x)), with `lo` a lower bound
    of the exact margin at r_E(x) (−inf where unknown): whether every pair's margin is
    certainly positive on the whole ball of `radius` around r_E(x)."""
    box = Iv(residual.m, up(residual.r + radius))
    if norm is None:  # the margin is affine in x: lo − Σ|w_i|ε over every pair
        return _drop(lo, [(rows, w) for rows, w, _ in pairs], radius) > 0
    c = center(box)
    proved = _continuous_floor(c, lo, radius, norm, pairs) > 0
    pos, neg = certainly_pos(c), certainly_neg(c)
    unsure = (~(pos | neg)).sum(-1)
    rest = np.flatnonzero(~proved & (unsure == 0) & (lo > 0))
    sub_pairs = _subset(pairs, rest)
    y_box, branch = band_norm(box[rest], *norm)
    floor = _drop(lo[rest], [(rows, branch.rows(rows).pullback(w, norm[0]))
                             for rows, w, _ in sub_pairs], radius)
    floor = np.maximum(floor, _floor_of(y_box, sub_pairs))
    proved[rest] = branch.certain & (floor > 0)
    rest = np.flatnonzero(~proved & (unsure > 0) & (unsure <= UNSURE_SIGNS) & (lo > 0))
    if len(rest):
        proved[rest] = _every_sign(box[rest], pos[rest], neg[rest], norm, _subset(pairs, rest))
    return proved


def _subset(pairs: Sequence[Pair], rows: np.ndarray) -> list[Pair]:
    return [(where[rows], w, b) for where, w, b in pairs]


def _floor_of(y: Iv, pairs: Sequence[Pair]) -> np.ndarray:
    """The least of the pairs' margins over the normed rows y (lower interval ends)."""
    floor = np.full(len(y.m), np.inf)
    for rows, w, b in pairs:
        if rows.any():
            end, _ = add(dot(y[rows], w, "nd,d->n", len(w.m)), b).ends()
            floor[rows] = np.minimum(floor[rows], end)
    return floor


def _drop(lo: np.ndarray, grads: Sequence[tuple[np.ndarray, Iv]], radius: float
          ) -> np.ndarray:
    """lo less the most any pair's margin can fall over an ∞-ball of `radius` on which
    its gradient is `grad`: Σ|grad_i|·radius, rounded down."""
    floor = np.full(len(lo), np.inf)
    for rows, grad in grads:
        if rows.any():
            fall = up((np.abs(grad.m) + grad.r).sum(-1) * radius)
            floor[rows] = np.nextafter(lo[rows] - fall, -np.inf)
    return floor


def _continuous_floor(c: Iv, lo: np.ndarray, radius: float, norm: Norm,
                      pairs: Sequence[Pair]) -> np.ndarray:
    """Floor 1 (module docstring) from the centred box c; −inf where a side may lift."""
    gain, _, half_low, half_high = norm
    c_lo, c_hi = c.ends()
    continuous = np.ones(len(lo), dtype=bool)
    sides = []
    for s_lo, s_hi in ((c_lo, c_hi), (-c_hi, -c_lo)):  # p from c, n from −c
        s_lo, s_hi = np.maximum(s_lo, 0.0), np.maximum(s_hi, 0.0)
        least, most = total(Iv.point(s_lo)), total(Iv.point(s_hi))
        continuous &= certainly_pos(sub(least, half_low))  # and projected: Σ = H > half_low
        sides.append((s_hi > 0, ~certainly_neg(sub(most, half_high)),
                      ~certainly_pos(sub(least, half_high))))
    d = c.m.shape[-1]
    grads = []
    for rows, w, _ in pairs:
        # ⟨w, BandNorm⟩'s gradient is centre(v), v_i = Σ_sides J_side^T g, g = centre(w ⊙ γ):
        # g_i on a side's kept coordinates K, or g_i − mean_K(g) where the side projects
        # onto K; K ⊆ the side's possible coordinates; 0 off K
        g_lo, g_hi = center(scale_shift(w, gain, np.zeros_like(gain))).ends()
        v_lo = v_hi = np.zeros((int(rows.sum()), d))
        for member, may_project, may_not in sides:
            member = member[rows]
            mean_lo = np.where(member, g_lo, np.inf).min(-1, keepdims=True)
            mean_hi = np.where(member, g_hi, -np.inf).max(-1, keepdims=True)
            proj = may_project[rows, None] & member
            plain = may_not[rows, None] & member
            v_lo = np.minimum(v_lo, np.where(proj, np.nextafter(g_lo - mean_hi, -np.inf), 0.0))
            v_hi = np.maximum(v_hi, np.where(proj, np.nextafter(g_hi - mean_lo, np.inf), 0.0))
            v_lo = np.minimum(v_lo, np.where(plain, g_lo, 0.0))
            v_hi = np.maximum(v_hi, np.where(plain, g_hi, 0.0))
        _, top = div(total(Iv.point(v_hi)), float(d)).ends()
        bottom, _ = div(total(Iv.point(v_lo)), float(d)).ends()
        bound = np.maximum(np.abs(np.nextafter(v_lo - top[:, None], -np.inf)),
                           np.abs(np.nextafter(v_hi - bottom[:, None], np.inf)))
        grads.append((rows, Iv(bound, np.zeros_like(bound))))
    return np.where(continuous, _drop(lo, grads, radius), -np.inf)


def _every_sign(box: Iv, pos: np.ndarray, neg: np.ndarray, norm: Norm,
                pairs: Sequence[Pair]) -> np.ndarray:
    """Floor 3 (module docstring) on rows with 1..UNSURE_SIGNS unsure signs."""
    unsure = ~(pos | neg)
    count = unsure.sum(-1)
    # the columns of each row's unsure coordinates (the first repeated where fewer)
    slots = np.argsort(~unsure, axis=-1, kind="stable")[:, :UNSURE_SIGNS]
    slots = np.where(np.arange(UNSURE_SIGNS) < count[:, None], slots, slots[:, :1])
    rows = np.arange(len(box.m))[:, None]
    centre = Iv.point(box.m)
    proved = np.ones(len(box.m), dtype=bool)
    for assignment in itertools.product((1, -1, 0), repeat=UNSURE_SIGNS):
        p, n = pos.copy(), neg.copy()
        p[rows, slots] = np.array(assignment) == 1
        n[rows, slots] = np.array(assignment) == -1
        _, branch = band_norm(box, *norm, signs=(p, n))
        y_centre, at_centre = band_norm(centre, *norm, signs=(p, n))
        floor = np.full(len(box.m), np.inf)
        for where, w, b in pairs:
            if where.any():
                grad = branch.rows(where).pullback(w, norm[0])
                fall = up(((np.abs(grad.m) + grad.r) * box.r[where]).sum(-1))
                at_m, _ = add(dot(y_centre[where], w, "nd,d->n", len(w.m)), b).ends()
                floor[where] = np.minimum(floor[where], np.nextafter(at_m - fall, -np.inf))
        proved &= branch.certain & at_centre.certain & (floor > 0)
    return proved
