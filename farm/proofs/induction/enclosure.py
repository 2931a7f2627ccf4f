"""Sound bounds on a softmax attention-only model's run of one prompt.

Softmax weights are irrational, so from layer 0 on nothing is exact: every quantity
is enclosed instead. The linear maps and the score dot products run in float64
midpoint–radius intervals with rigorous rounding bounds (`farm.screen.interval`);
softmax is bounded row by row from the score intervals with rational exp bounds
(`farm.proofs.rational_exp`): for scores s_i ∈ [lo_i, hi_i],

    w_j = 1 / Σ_i e^(s_i − s_j)  ∈  [1 / (1 + Σ_{i≠j} e^(hi_i − lo_j)),
                                     1 / (1 + Σ_{i≠j} e^(lo_i − hi_j))],

each sum bounded above (resp. below) by the exp bounds (`softmax_bounds`), and the
weights go back to floats rounded outwards. What is enclosed is the model's real-number run on the
exact float32 weights, as `farm.model.exact` computes it for sparsemax. Runs are
memoised by causal prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.model.gpt import GPTConfig
from farm.proofs.rational_exp import exp_bounds, round_down, round_up
from farm.screen.interval import Affine, Iv, add, div, dot, from_ends

Row = list[tuple[Fraction, Fraction]]  # (lo, hi) per visible key


def softmax_bounds(lo: Sequence[Fraction], hi: Sequence[Fraction]) -> Row:
    """(lo, hi) of each softmax weight over scores in the boxes [lo_i, hi_i].

    With c = max hi, A_i ≥ e^(hi_i − c) and B_i ≤ e^(lo_i − c) (`exp_bounds`, arguments
    ≤ 0), w_j ≥ B_j / (B_j + Σ_{i≠j} A_i) and w_j ≤ A_j / (A_j + Σ_{i≠j} B_i): 2n
    exponentials a row, each bound then rounded outwards to keep the numbers short."""
    if len(lo) == 1:
        return [(Fraction(1), Fraction(1))]
    top = max(hi)
    above = [exp_bounds(h - top)[1] for h in hi]
    below = [exp_bounds(low - top)[0] for low in lo]
    sum_above, sum_below = sum(above), sum(below)
    return [(round_down(b / (b + sum_above - a)),
             min(Fraction(1), round_up(a / (a + sum_below - b))))
            for a, b in zip(above, below, strict=True)]


def _down(x: Fraction) -> float:
    f = float(x)
    return f if Fraction(f) <= x else float(np.nextafter(f, -np.inf))


def _up(x: Fraction) -> float:
    f = float(x)
    return f if Fraction(f) >= x else float(np.nextafter(f, np.inf))


@dataclass
class Site:
    """One position's enclosed run: its residual stream into each layer and after the last,
    and per (layer, head) its key, value, scores (float ends) and weights (rational)."""

    residual: list[Iv] = field(default_factory=list)
    keys: dict[tuple[int, int], Iv] = field(default_factory=dict)
    values: dict[tuple[int, int], Iv] = field(default_factory=dict)
    scores: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    weights: dict[tuple[int, int], Row] = field(default_factory=dict)


class SoftmaxEnclosure:
    """An attention-only softmax model without normalisation, enclosed prompt by prompt."""

    def __init__(self, cfg: GPTConfig, weights: Mapping[str, np.ndarray]):
        if cfg.attn_variant != "softmax" or cfg.norm_variant != "none" or not cfg.attention_only:
            raise FarmError("the softmax enclosure is for attention-only softmax models "
                            "without normalisation")
        self.cfg = cfg
        self.wte = np.asarray(weights["wte.weight"], dtype=np.float64)
        self.wpe = np.asarray(weights["wpe.weight"], dtype=np.float64)
        self.layers = [{name: Affine.of(np.asarray(weights[f"blocks.{i}.attn.{name}.weight"]).T,
                                        weights.get(f"blocks.{i}.attn.{name}.bias"))
                        for name in "qkvo"} for i in range(cfg.n_layers)]
        self.memo: dict[tuple[int, ...], Site] = {}

    def fresh(self) -> None:
        self.memo = {}

    def run(self, prompt: Sequence[int]) -> list[Site]:
        prompt = tuple(prompt)
        return [self.site(prompt[:t + 1]) for t in range(len(prompt))]

    def site(self, prefix: tuple[int, ...]) -> Site:
        if (hit := self.memo.get(prefix)) is not None:
            return hit
        cfg, t = self.cfg, len(prefix) - 1
        earlier = [self.site(prefix[:s + 1]) for s in range(t)]
        here = Site()
        x = add(Iv.point(self.wte[prefix[-1]]), Iv.point(self.wpe[t]))
        dh = cfg.head_dim
        for layer, maps in enumerate(self.layers):
            here.residual.append(x)
            q, k, v = maps["q"](x), maps["k"](x), maps["v"](x)
            heads = []
            for h in range(cfg.n_heads):
                cols = slice(h * dh, (h + 1) * dh)
                here.keys[layer, h], here.values[layer, h] = k[cols], v[cols]
                history = [*earlier, here]
                keys = _stack([s.keys[layer, h] for s in history])
                scores = div(dot(q[cols], keys, "d,kd->k", dh), cfg.attn_scale)
                lo, hi = scores.ends()
                if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                    raise FarmError(f"prefix {prefix}: the enclosure of L{layer}H{h}'s scores "
                                    "overflows float64")
                here.scores[layer, h] = lo, hi
                row = here.weights[layer, h] = softmax_bounds(
                    [Fraction(a) for a in lo], [Fraction(b) for b in hi])
                w = from_ends(np.array([_down(a) for a, _ in row]),
                              np.array([_up(b) for _, b in row]))
                heads.append(dot(w, _stack([s.values[layer, h] for s in history]), "k,kd->d",
                                 t + 1))
            x = add(x, maps["o"](Iv(np.concatenate([z.m for z in heads]),
                                    np.concatenate([z.r for z in heads]))))
        if not (np.isfinite(x.m).all() and np.isfinite(x.r).all()):
            raise FarmError(f"prefix {prefix}: the enclosure of the residual overflows float64")
        here.residual.append(x)
        self.memo[prefix] = here
        return here


def _stack(rows: list[Iv]) -> Iv:
    return Iv(np.stack([r.m for r in rows]), np.stack([r.r for r in rows]))
