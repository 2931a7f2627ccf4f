"""Robustness without a solver: a sound floor of the margin over the ε-ball of r_E(x).

SPEC §4's robustness asks that for every η with ‖η‖∞ ≤ ε the final norm and lm_head
on r_E(x) + η decide P(x). The screen knows r_E(x) only as an interval m ± r and the
exact margin there as [lo, hi]; the ball lies inside the box B = m ± (r + ε).
BandNorm is piecewise affine, so on a segment inside one piece β the margin moves
by a_β·Δx, a_β that piece's gradient. Two floors, each a proof, the cheaper first:

1. Where no side can be lifted anywhere in B (each side's sum stays ≥ half_low),
   BandNorm is continuous on B: max(±c, 0) and the Euclidean projection are, only
   the lift's support jumps. Along the segment from r_E(x) to x the margin then
   moves by Σ_k a_βk·Δx_k over the pieces it crosses, so it is at least
   lo − Σ_i A_i ε for any A_i ≥ |a_β,i| over every piece B allows: bounded here
   from the signs, projections and supports B allows, without enumerating them.
2. Otherwise every branch that meets B is enumerated: each centred coordinate of
   unsure sign (at most `UNSURE_SIGNS` of them) taken +, − and 0, and each side
   lifted or not wherever both are possible in B. On one branch the margin is
   affine, at least its value at m less Σ|a_i|(r_i + ε). Each of the branch's
   other decisions (signs, whether a side projects and onto which support, whether
   it lifts) is the sign of an affine form Σ a_i c_i of c = x − mean(x), so it is
   settled over B from its value at m and its exact spread Σ|a_j − ā|(r_j + ε);
   plain intervals would lose the correlation centring puts between coordinates
   (a side's sum moves by at most 2ε·k(d − k)/d over B, intervals say 2εk), and on
   the length-10 quote model that loss left 43 % of inputs unproved.

Every quantity is an interval with rigorous rounding bounds (`interval`); an ε that
is not a float is widened to the next float above (`radius_above`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.screen.bandnorm import Branch, band_norm
from farm.screen.interval import (
    U2,
    Iv,
    add,
    center,
    certainly_neg,
    certainly_pos,
    div,
    dot,
    gamma,
    scale_shift,
    sub,
    total,
    up,
)

Pair = tuple[np.ndarray, Iv, Iv]  # rows, difference row of lm_head, difference of biases
Norm = tuple[np.ndarray, np.ndarray, Iv, Iv]  # gain, shift, half_low, half_high
UNSURE_SIGNS = 4  # floor 2 enumerates rows with at most this many unsure signs


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
    proved = _continuous_floor(center(box), lo, radius, norm, pairs) > 0
    rest = np.flatnonzero(~proved & (lo > 0))
    if len(rest):
        proved[rest] = _every_branch(box[rest], norm, _subset(pairs, rest))
    return proved


def _subset(pairs: Sequence[Pair], rows: np.ndarray) -> list[Pair]:
    return [(where[rows], w, b) for where, w, b in pairs]


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


def _linear(c: Iv, r: np.ndarray, a: np.ndarray, shared: bool = False) -> Iv:
    """Σ_i a_i c_i over the box m ± r, where c = x − mean(x) is `c` at the box's centre
    and a has integer entries: the form is Σ_j (a_j − ā) x_j, so it moves by at most
    Σ_j |a_j − ā| r_j (bounded here above its rounding) from its value at the centre.
    `a` is one form per row [n, d], or `shared` forms [k, d] of every row (then [n, k])."""
    d = a.shape[-1]
    value = dot(c, Iv.point(a), "nd,kd->nk" if shared else "...d,...d->...", d)
    mean = a.sum(-1, keepdims=True) / d
    weight = np.abs(a - mean)
    weight += U2 * (weight + np.abs(mean))
    moved = r @ weight.T if shared else (weight * r).sum(-1)
    spread = up(moved * (1.0 + gamma(d)))
    return Iv(value.m, up(value.r + spread))


def _every_branch(box: Iv, norm: Norm, pairs: Sequence[Pair]) -> np.ndarray:
    """Floor 2 (module docstring) on every row of `box`."""
    d = box.m.shape[-1]
    c = center(Iv.point(box.m))
    each = _linear(c, box.r, np.eye(d), shared=True)  # each c_i over the box
    pos, neg = certainly_pos(each), certainly_neg(each)
    unsure = ~(pos | neg)
    count = unsure.sum(-1)
    proved = np.zeros(len(box.m), dtype=bool)
    for k in range(UNSURE_SIGNS + 1):  # rows with k unsure signs, each sign case a copy
        rows = np.flatnonzero(count == k)
        if not len(rows):
            continue
        cases = np.array(list(itertools.product((1, -1, 0), repeat=k)), dtype=int)
        cases = cases.reshape(len(cases), k)
        copies = np.repeat(rows, len(cases))
        slots = np.argsort(~unsure[copies], axis=-1, kind="stable")[:, :k]
        taken = np.tile(cases, (len(rows), 1))
        at = np.arange(len(copies))[:, None]
        p, n = pos[copies], neg[copies]
        p[at, slots], n[at, slots] = taken == 1, taken == -1
        holds = _floor_on_signs(box[copies], c[copies], (p, n), norm, _subset(pairs, copies))
        proved[rows] = holds.reshape(len(rows), len(cases)).all(-1)
    return proved


def _floor_on_signs(box: Iv, c: Iv, signs: tuple[np.ndarray, np.ndarray], norm: Norm,
                    pairs: Sequence[Pair]) -> np.ndarray:
    """Whether every branch with these signs that meets the box keeps every pair's
    margin positive there: each possible lift of p and of n is taken in turn, and
    whether each side is projected must be settled over the box."""
    gain, shift, half_low, half_high = norm
    settled = np.ones(len(box.m), dtype=bool)
    projected, may = [], []
    for mask, sign in zip(signs, (1, -1), strict=True):
        side_sum = _linear(c, box.r, sign * mask)
        held, deficit = sub(side_sum, half_high), sub(half_low, side_sum)
        over, under = certainly_pos(held), certainly_neg(held)
        settled &= over | under
        projected.append(over)  # then Σs = half_high > half_low after it: no lift
        may.append({True: under & ~certainly_neg(deficit), False: over | ~certainly_pos(deficit)})
    centre = Iv.point(box.m)
    holds = settled.copy()
    for lift_p, lift_n in itertools.product((True, False), repeat=2):
        at = np.flatnonzero(settled & may[0][lift_p] & may[1][lift_n])
        if not len(at):
            continue
        here = (signs[0][at], signs[1][at])
        lifted = (np.full(len(at), lift_p), np.full(len(at), lift_n))
        y, branch = band_norm(centre[at], gain, shift, half_low, half_high, here, lifted)
        floor = np.full(len(at), np.inf)
        for where, w, b in _subset(pairs, at):
            if where.any():
                grad = branch.rows(where).pullback(w, gain)
                fall = up(((np.abs(grad.m) + grad.r) * box.r[at][where]).sum(-1))
                at_m, _ = add(dot(y[where], w, "nd,d->n", len(w.m)), b).ends()
                floor[where] = np.minimum(floor[where], np.nextafter(at_m - fall, -np.inf))
        same = (branch.p.projected == projected[0][at]) & (branch.n.projected == projected[1][at])
        fits = _supports_fit(c[at], box.r[at], branch, here, half_high)
        holds[at] &= same & fits & (floor > 0)
    return holds


def _supports_fit(c: Iv, r: np.ndarray, branch: Branch, signs: tuple[np.ndarray, np.ndarray],
                  half_high: Iv) -> np.ndarray:
    """Whether each projected side's support S is its support over the whole box:
    |S|·s_i − Σ_S s + half_high (|S| times s_i − τ) is positive on S and negative on the
    rest of the side."""
    d = c.m.shape[-1]
    ok = np.ones(len(c.m), dtype=bool)
    for side, mask, sign in ((branch.p, signs[0], 1), (branch.n, signs[1], -1)):
        rows = np.flatnonzero(side.projected)
        if len(rows):
            support = side.kept[rows]
            forms = sign * (support.sum(-1)[:, None, None] * np.eye(d) - support[:, None, :])
            gap = add(_linear(c[rows][:, None, :], r[rows][:, None, :], forms), half_high)
            fits = np.where(support, certainly_pos(gap), ~mask[rows] | certainly_neg(gap))
            ok[rows] &= fits.all(-1)
    return ok
