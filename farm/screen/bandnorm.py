"""Signed L1 BandNorm (SPEC §2) over intervals, on the branch the midpoint takes.

BandNorm is discontinuous where its branch changes (the sign of a centred
coordinate, whether a side's sum exceeds half_high, the projection's support,
whether a side is lifted and onto which coordinates), so no interval bound holds
across a change of branch. Each row is evaluated on its midpoint's branch and
every decision of that branch is checked to hold over the whole box; a row where
one does not is reported not `ok`, and the screen calls its input not decisive.
On a certain branch every step is affine in x, and intervals pass through it.
"""

from __future__ import annotations

import numpy as np

from farm.screen.interval import (
    Iv,
    add,
    center,
    certainly_neg,
    certainly_pos,
    div,
    scale_shift,
    sub,
    total,
)


def _projection_guess(s: np.ndarray, sign: np.ndarray, half_high: float) -> np.ndarray:
    """The projection's support as the float midpoint sees it (verified afterwards)."""
    d = s.shape[-1]
    ordered = -np.sort(-s, axis=-1)
    cand = (np.cumsum(ordered, axis=-1) - half_high) / np.arange(1, d + 1)
    rho = np.clip(np.sum(ordered > cand, axis=-1) - 1, 0, d - 1)
    tau = np.take_along_axis(cand, rho[..., None], -1)
    return sign & (s > tau)


def _side(s: Iv, sign: np.ndarray, fallback: np.ndarray, half_low: Iv, half_high: Iv
          ) -> tuple[Iv, np.ndarray]:
    """One side (p or n) of step 3 on rows [..., d]; `sign` marks its nonzero coordinates
    (each certainly positive). Returns the side and where its branch is certain."""
    over = sub(total(s, sign), half_high)
    projected = certainly_pos(over)
    ok = projected | certainly_neg(over)
    # (a) the projection: tau = (Σ_A s − half_high)/|A| on a support A that must satisfy
    # s_i > tau exactly on A and s_i < tau on the rest of the side, over the whole box
    support = _projection_guess(s.m, sign, float(half_high.m))
    k = support.sum(-1)
    tau = div(sub(total(s, support), half_high), np.maximum(k, 1).astype(np.float64))
    gap = sub(s, Iv(tau.m[..., None], tau.r[..., None]))
    fits = np.all(np.where(support, certainly_pos(gap), ~sign | certainly_neg(gap)), axis=-1)
    ok &= ~projected | ((k >= 1) & fits)
    s = gap.zero_where(~support).where(projected[..., None], s)
    active = np.where(projected[..., None], support, sign)
    # (b) the lift: deficit = half_low − Σs spread over the active coordinates (or the
    # fallback mask where none is active)
    deficit = sub(half_low, total(s, active))
    lifted = certainly_pos(deficit)
    ok &= lifted | certainly_neg(deficit)
    lift_to = np.where(active.any(-1, keepdims=True), active, fallback)
    share = div(deficit, lift_to.sum(-1).astype(np.float64))
    raised = add(s, Iv(share.m[..., None], share.r[..., None]))
    return raised.where(lifted[..., None] & lift_to, s), ok


def band_norm(x: Iv, gain: np.ndarray, shift: np.ndarray, half_low: Iv, half_high: Iv
              ) -> tuple[Iv, np.ndarray]:
    """BandNorm of rows x [..., d] and where its branch is certain (bool [...])."""
    d = x.m.shape[-1]
    c = center(x)
    pos, neg = certainly_pos(c), certainly_neg(c)
    zero = (c.m == 0.0) & (c.r == 0.0)  # exactly zero: on neither side
    ok = np.all(pos | neg | zero, axis=-1)
    even = np.arange(d) % 2 == 0
    p, ok_p = _side(c.zero_where(~pos), pos, even, half_low, half_high)
    n, ok_n = _side(Iv(-c.m, c.r).zero_where(~neg), neg, ~even, half_low, half_high)
    z = center(sub(p, n))
    return scale_shift(z, gain, shift), ok & ok_p & ok_n
