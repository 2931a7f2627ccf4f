"""Deriving an induction certificate from a checkpoint, in exact rationals.

A sparsemax model's run is exact (`farm.model.exact`: every float32 weight at its
exact binary value); a softmax model's is enclosed (`enclosure`: sound bounds on
every score, weight, value and logit, exp bounded by rationals). Either gives, for
the head on one prompt, `HeadBounds` (lo = hi when exact), and from them, for each
active query q with key k and target t:

- the stripe: ε_q = 1 − (a lower bound on w[q, k]), and the score margin
  lo(s[q, k]) − max_{j≠k} hi(s[q, j]);
- the copying: for each other candidate c, the head's direct contribution to
  logit_t − logit_c, Σ_j w[q, j]·val_c[j] with val_c[j] = (U_t − U_c)·W_O^h v_j, is at
  least lo(val_c[k]) − ε_q·(lo(val_c[k]) − lo_c), lo_c the lowest lower bound over the
  prompt's keys (the weights off k sum to at most ε_q and each of their values is at
  least lo_c). NFP's logit-difference bound, val_c[k] − ε_q·(hi_c − lo_c), is never
  larger; the file states the direction (t, c) of the weakest c, for NFP to check its
  own bound, only where that bound is not negative. Both speak of the logits only for
  a model without a final norm, where they are linear in the residual, so others are
  refused;
- the decision: a lower bound on logit_t − logit_c for the weakest other c (exact for
  sparsemax).

Masked keys (after q) get weight 0 and, since NFP's file has no mask, the row's
lowest visible score. Queries outside the active set get, as NFP requires every
entry, their scores and weights, with prev at their heaviest key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.exact import CircuitRun, ExactModel, RowResult, exact
from farm.proofs.induction.enclosure import SoftmaxEnclosure
from farm.proofs.induction.nfp import (
    NfpCertificate,
    logit_diff_bound,
    rat,
    rejections,
)
from farm.screen.interval import Iv
from farm.tasks.induction import Induction, StripeEntry

VERSION = "1"


@dataclass(frozen=True)
class HeadRef:
    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True)
class HeadBounds:
    """Bounds on one head's run of one prompt, from which its certificate is written: for
    each query q and visible key k ≤ q, its score and weight in [lo, hi]; each key's direct
    value for each rival c of the target, (U_t − U_c)·W_O^h v_k, in [lo, hi]; and a lower
    bound on the final logit_t − logit_c. Exact models give lo = hi."""

    score: dict[tuple[int, int], tuple[Fraction, Fraction]]
    weight: dict[tuple[int, int], tuple[Fraction, Fraction]]
    value: dict[int, list[tuple[Fraction, Fraction]]]
    gap: dict[int, Fraction]


class InductionProver:
    """One checkpoint's runs (exact for sparsemax, enclosed for softmax), and the
    certificates of one head on any prompt."""

    def __init__(self, checkpoint: Checkpoint, task: Induction, head: HeadRef):
        cfg = checkpoint.config
        if not isinstance(task, Induction):
            raise FarmError(f"task {task.name} is not an induction task")
        if cfg.norm_variant != "none":
            raise FarmError("the copying bound needs a model without normalisation (--norm "
                            f"none): under {cfg.norm_variant} the logits are not linear in "
                            "a head's output")
        if cfg.attn_variant == "softmax" and not cfg.attention_only:
            raise FarmError("softmax induction certificates need an attention-only model "
                            "(--mlp 0)")
        if not (0 <= head.layer < cfg.n_layers and 0 <= head.head < cfg.n_heads):
            raise FarmError(f"head {head} is not in a model of {cfg.n_layers} layers x "
                            f"{cfg.n_heads} heads")
        if task.seq_len > cfg.seq_len or max(task.candidates) >= cfg.vocab_size:
            raise FarmError(f"task {task.name} does not fit the model's context or vocabulary")
        self.checkpoint, self.task, self.head = checkpoint, task, head
        dh = cfg.head_dim
        w_o = np.asarray(checkpoint.weights[f"blocks.{head.layer}.attn.o.weight"])
        self.unembed = np.asarray(checkpoint.weights["lm_head.weight"])
        bias = checkpoint.weights.get("lm_head.bias")
        self.bias = None if bias is None else [exact(b) for b in np.asarray(bias)]
        # (U W_O^h)[token]: what one unit of the head's output adds to each token's logit
        self.readout = {t: [sum(exact(u) * exact(w) for u, w in zip(self.unembed[t], w_o[:, c],
                                                                     strict=True))
                            for c in range(head.head * dh, (head.head + 1) * dh)]
                        for t in task.candidates}
        self.softmax = cfg.attn_variant == "softmax"
        if self.softmax:
            self.enclosure = SoftmaxEnclosure(cfg, checkpoint.weights)
        else:
            self.model = ExactModel(cfg, checkpoint.weights)
        self._runs: CircuitRun | None = None

    def fresh(self) -> None:
        """Forget memoised prefixes (bounded memory over a long domain)."""
        self._runs = None
        if self.softmax:
            self.enclosure.fresh()

    @property
    def runs(self) -> CircuitRun:
        if self._runs is None:
            self._runs = self.model.runs()
        return self._runs

    def run(self, prompt: Sequence[int]) -> RowResult:
        return self.runs.row(prompt)

    def bounds(self, prompt: Sequence[int], target: int) -> HeadBounds:
        """The head's run of `prompt`, bounded (softmax) or exact (sparsemax)."""
        return self._enclosed(prompt, target) if self.softmax else self._exact(prompt, target)

    def certificate(self, index: int, queries: Sequence[StripeEntry] | None = None
                    ) -> NfpCertificate:
        """The certificate of the head on domain prompt `index` (default: the decision query).

        Stated scores are the midpoints of their bounds and stated values their lower ends
        (NFP's logit-difference bound reads them, and stays sound); stated weights are short
        numbers within their bounds, the key of `prev` taking what makes the row sum to 1;
        margins, ε, weight bounds, copying bounds and the decision come from the bounds' far
        ends."""
        prompt = self.task.domain()[index]
        queries = tuple(queries or (self.task.decision(prompt),))
        if len({e.target for e in queries}) != 1:
            raise FarmError("an NFP certificate has one direction: its active queries must "
                            "share a target")
        seq, target = len(prompt), queries[0].target
        b = self.bounds(prompt, target)
        mid = {qk: (lo + hi) / 2 for qk, (lo, hi) in b.score.items()}
        prev = {q: max(range(q + 1), key=lambda k, q=q: (sum(b.weight[q, k]), -k))
                for q in range(seq)}
        prev |= {e.query: e.key for e in queries}
        score, weight, bound = {}, {}, {}
        for q in range(seq):
            lowest = min(mid[q, k] for k in range(q + 1))  # NFP's file has no mask
            for k in range(seq):
                score[q, k] = mid[q, k] if k <= q else lowest
                weight[q, k] = _short(*b.weight[q, k]) if k <= q else Fraction(0)
                bound[q, k] = b.weight[q, k][1] if k <= q else Fraction(0)
            weight[q, prev[q]] += 1 - sum(weight[q, k] for k in range(seq))
        eps_at = {q: 1 - b.weight[q, prev[q]][0] for q in range(seq)}
        lows = {c: [lo for lo, _ in val] for c, val in b.value.items()}
        copy = {(e.query, c): low[e.key] - eps_at[e.query] * (low[e.key] - min(low))
                for e in queries for c, low in lows.items()}
        negative = min(lows, key=lambda c: (min(copy[e.query, c] for e in queries), c))
        val = b.value[negative]
        runner_up = min(b.gap, key=lambda c: (b.gap[c], c))
        active = tuple(e.query for e in queries)
        cert = NfpCertificate(
            seq=seq, eps=max(eps_at[q] for q in active),
            margin=min(b.score[q, prev[q]][0] - max(score[q, k] if k > q else b.score[q, k][1]
                                                    for k in range(seq) if k != prev[q])
                       for q in active),
            lo=min(lo for lo, _ in val), hi=max(hi for _, hi in val), active=active, prev=prev,
            eps_at=eps_at, val={k: lo for k, (lo, _) in enumerate(val)},
            val_lo={k: lo for k, (lo, _) in enumerate(val)},
            val_hi={k: hi for k, (_, hi) in enumerate(val)},
            score=score, weight=weight, weight_bound=bound, direction=(target, negative))
        if logit_diff_bound(cert) < 0:
            cert.direction = None  # NFP's looser bound would reject what ours proves
        certified = not rejections(cert) and min(copy.values()) > 0 and b.gap[runner_up] > 0
        cert.farm = [
            ("induction-certificate", VERSION), ("checkpoint", self.checkpoint.sha256),
            ("task", self.task.name), ("prompt", str(index), *map(str, prompt)),
            ("head", str(self.head.layer), str(self.head.head)),
            ("direction", str(target), str(negative)),
            *(("query", str(e.query), str(e.key), str(e.target)) for e in queries),
            *(("copy-lb", str(q), str(c), rat(bound)) for (q, c), bound in copy.items()),
            ("decision", str(target), str(runner_up), rat(b.gap[runner_up])),
            ("certified", "yes" if certified else "no")]
        return cert

    def _exact(self, prompt: Sequence[int], target: int) -> HeadBounds:
        """Sparsemax: the exact run, every bound tight."""
        layer, h = self.head.layer, self.head.head
        row = self.run(prompt)
        score, weight = {}, {}
        for q, here in enumerate(row.positions):
            visible = self.runs.scores(here.queries[layer, h], row.positions[:q + 1], layer, h)
            for k in range(q + 1):
                score[q, k] = (visible[k], visible[k])
                w = here.patterns[layer, h][k]
                weight[q, k] = (w, w)
        values = [pos.values[layer, h] for pos in row.positions]
        value = {c: [(d, d) for d in (self._direct(target, c, v) for v in values)]
                 for c in self.task.candidates if c != target}
        gap = {c: row.logits[target] - row.logits[c] for c in self.task.candidates
               if c != target}
        return HeadBounds(score, weight, value, gap)

    def _enclosed(self, prompt: Sequence[int], target: int) -> HeadBounds:
        """Softmax: sound bounds on every quantity (`enclosure`)."""
        ref = self.head.layer, self.head.head
        sites = self.enclosure.run(prompt)
        score, weight = {}, {}
        for q, site in enumerate(sites):
            lo, hi = site.scores[ref]
            for k in range(q + 1):
                score[q, k] = (Fraction(lo[k]), Fraction(hi[k]))
                weight[q, k] = site.weights[ref][k]
        rivals = [c for c in self.task.candidates if c != target]
        value = {c: [_dot_bounds(direction, site.values[ref]) for site in sites]
                 for c, direction in ((c, self._difference(target, c)) for c in rivals)}
        final = sites[-1].residual[-1]
        gap = {c: _dot_bounds(self._unembed_difference(target, c), final)[0] for c in rivals}
        if self.bias is not None:
            gap = {c: g + self.bias[target] - self.bias[c] for c, g in gap.items()}
        return HeadBounds(score, weight, value, gap)

    def _unembed_difference(self, target: int, other: int) -> list[Fraction]:
        return [exact(a) - exact(b) for a, b in zip(self.unembed[target], self.unembed[other],
                                                    strict=True)]

    def _difference(self, target: int, other: int) -> list[Fraction]:
        return [x - y for x, y in zip(self.readout[target], self.readout[other], strict=True)]

    def _direct(self, target: int, other: int, value: Sequence[Fraction]) -> Fraction:
        """(U_target − U_other)·W_O^h v: the head's direct effect on one logit difference."""
        return sum((d * v for d, v in zip(self._difference(target, other), value, strict=True)),
                   Fraction(0))


def _short(lo: Fraction, hi: Fraction) -> Fraction:
    """A number in [lo, hi] with a short binary expansion (lo itself when lo = hi), so that
    a row's sum, and the prev weight that completes it to 1, stay short."""
    for bits in (16, 32, 64, 128):
        near = Fraction(math.floor((lo + hi) / 2 * (1 << bits)), 1 << bits)
        if lo <= near <= hi:
            return near
    return (lo + hi) / 2


FLOAT_UNIT = 1074  # every float64 is an integer multiple of 2^-1074


def _dot_bounds(direction: Sequence[Fraction], x: Iv) -> tuple[Fraction, Fraction]:
    """[lo, hi] of direction·v over the box |v − x.m| ≤ x.r, exactly (in integers: the
    floats as multiples of 2^-1074, the direction over its common denominator)."""
    den = math.lcm(*(d.denominator for d in direction))
    top = [d.numerator * (den // d.denominator) for d in direction]
    centre = sum(n * _units(m) for n, m in zip(top, x.m.tolist(), strict=True))
    spread = sum(abs(n) * _units(r) for n, r in zip(top, x.r.tolist(), strict=True))
    scale = den << FLOAT_UNIT
    return Fraction(centre - spread, scale), Fraction(centre + spread, scale)


def _units(value: float) -> int:
    """value · 2^1074, an integer for every finite float64."""
    n, d = value.as_integer_ratio()
    return n * ((1 << FLOAT_UNIT) // d)
