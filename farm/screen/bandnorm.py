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

from dataclasses import dataclass, fields

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


@dataclass(frozen=True)
class Side:
    """The branch one side (p or n) of step 3 took, per row: `kept` its coordinates
    after (a) (the projection's support where `projected`, else the side's signs),
    `lift_to` those (b) raises where `lifted`."""

    kept: np.ndarray  # bool [..., d]
    projected: np.ndarray  # bool [...]
    lifted: np.ndarray  # bool [...]
    lift_to: np.ndarray  # bool [..., d]

    def pullback(self, g: Iv) -> Iv:
        """The gradient with respect to the side's input (c, or −c) of ⟨g, side⟩ on
        this branch, where the side is affine: (b) adds (half_low − Σs)/k to each of
        the k lifted coordinates, (a) subtracts (Σ_A s − half_high)/|A| on A."""
        lift = div(total(g, self.lift_to), self.lift_to.sum(-1).clip(1).astype(np.float64))
        g = sub(g, _column(lift)).where(self.lifted[..., None], g)
        share = div(total(g, self.kept), self.kept.sum(-1).clip(1).astype(np.float64))
        g = sub(g, _column(share)).where(self.projected[..., None], g)
        return g.zero_where(~self.kept)


@dataclass(frozen=True)
class Branch:
    """The branch a row's BandNorm took, and whether it is certain over the row's box."""

    p: Side
    n: Side
    certain: np.ndarray  # bool [...]

    def pullback(self, w: Iv, gain: np.ndarray) -> Iv:
        """The gradient of x ↦ ⟨w, BandNorm(x)⟩ on this branch (where BandNorm is
        affine in x): centring is its own adjoint, z = p(c) − n(−c)."""
        g = center(scale_shift(w, gain, np.zeros_like(gain)))
        return center(add(self.p.pullback(g), self.n.pullback(g)))

    def rows(self, index: np.ndarray) -> Branch:
        """The branches of rows `index` only."""
        def pick(side: Side) -> Side:
            return Side(*(getattr(side, f.name)[index] for f in fields(Side)))
        return Branch(pick(self.p), pick(self.n), self.certain[index])


def _column(x: Iv) -> Iv:
    return Iv(x.m[..., None], x.r[..., None])


def _side(s: Iv, sign: np.ndarray, fallback: np.ndarray, half_low: Iv, half_high: Iv,
          lifted: np.ndarray | None = None) -> tuple[Iv, Side, np.ndarray]:
    """One side (p or n) of step 3 on rows [..., d]; `sign` marks its nonzero coordinates
    (each certainly positive). Returns the side, its branch and where that is certain;
    a given `lifted` takes that branch of (b) wherever the deficit's sign lies."""
    over = sub(total(s, sign), half_high)
    projected = certainly_pos(over)
    ok = projected | certainly_neg(over)
    # (a) the projection: tau = (Σ_A s − half_high)/|A| on a support A that must satisfy
    # s_i > tau exactly on A and s_i < tau on the rest of the side, over the whole box;
    # worked out only on the rows that project (few: a side's sum is rarely that large)
    active = sign
    if projected.any():
        s_p, sign_p = s[projected], sign[projected]
        support = _projection_guess(s_p.m, sign_p, float(half_high.m))
        k = support.sum(-1)
        tau = div(sub(total(s_p, support), half_high), np.maximum(k, 1).astype(np.float64))
        gap = sub(s_p, Iv(tau.m[..., None], tau.r[..., None]))
        fits = np.all(np.where(support, certainly_pos(gap), ~sign_p | certainly_neg(gap)),
                      axis=-1)
        ok[projected] &= (k >= 1) & fits
        projected_s = gap.zero_where(~support)
        s = Iv(s.m.copy(), s.r.copy())
        s.m[projected], s.r[projected] = projected_s.m, projected_s.r
        active = sign.copy()
        active[projected] = support
    # (b) the lift: deficit = half_low − Σs spread over the active coordinates (or the
    # fallback mask where none is active)
    deficit = sub(half_low, total(s, active))
    if lifted is None:
        lifted = certainly_pos(deficit)
        ok &= lifted | certainly_neg(deficit)
    lift_to = np.where(active.any(-1, keepdims=True), active, fallback)
    share = div(deficit, lift_to.sum(-1).astype(np.float64))
    raised = add(s, _column(share))
    return (raised.where(lifted[..., None] & lift_to, s),
            Side(active, projected, lifted, lift_to), ok)


def band_norm(x: Iv, gain: np.ndarray, shift: np.ndarray, half_low: Iv, half_high: Iv,
              signs: tuple[np.ndarray, np.ndarray] | None = None,
              lifted: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Iv, Branch]:
    """BandNorm of rows x [..., d] and the branch it took (certain or not, per row).

    `signs` (masks of the centred coordinates taken as positive and as negative, the
    rest as zero) asks for the affine map of the branches with those signs instead,
    extended to the whole box: it is BandNorm on the part of the box where the
    signs hold, and the branch reported certain is certain there. `lifted` (per row,
    for p and for n) fixes step 3(b)'s branch the same way; its sign is not checked."""
    d = x.m.shape[-1]
    c = center(x)
    if signs is None:
        pos, neg = certainly_pos(c), certainly_neg(c)
        zero = (c.m == 0.0) & (c.r == 0.0)  # exactly zero: on neither side
        ok = np.all(pos | neg | zero, axis=-1)
    else:
        (pos, neg), ok = signs, True
    even = np.arange(d) % 2 == 0
    lift_p, lift_n = (None, None) if lifted is None else lifted
    p, p_side, ok_p = _side(c.zero_where(~pos), pos, even, half_low, half_high, lift_p)
    n, n_side, ok_n = _side(Iv(-c.m, c.r).zero_where(~neg), neg, ~even, half_low, half_high,
                            lift_n)
    z = center(sub(p, n))
    return scale_shift(z, gain, shift), Branch(p_side, n_side, ok & ok_p & ok_n)
