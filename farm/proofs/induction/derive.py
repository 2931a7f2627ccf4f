"""Deriving an induction certificate from a checkpoint, in exact rationals.

Everything comes from the exact run (`farm.model.exact`: every float32 weight at its
exact binary value): the head's scores q·k/√d and sparsemax weights at every
query, its values, and the final logits. From them, for each active query q with
key k and target t:

- the stripe: ε_q = 1 − w[q, k], and the score margin s[q, k] − max_{j≠k} s[q, j];
- the copying: for each other candidate c, the head's direct contribution to
  logit_t − logit_c, Σ_j w[q, j]·val_c[j] with val_c[j] = (U_t − U_c)·W_O^h v_j, is at
  least val_c[k] − ε_q·(val_c[k] − lo_c), lo_c the lowest value over the prompt's keys
  (the weights off k sum to ε_q and each of their values is at least lo_c). NFP's
  logit-difference bound, val_c[k] − ε_q·(hi_c − lo_c), is never larger; the file
  states the direction (t, c) of the weakest c, for NFP to check its own bound, only
  where that bound is not negative. Both speak of the logits only for a model without
  a final norm, where they are linear in the residual, so others are refused;
- the decision: logit_t − max over the other candidates, exactly.

Masked keys (after q) get weight 0 and, since NFP's file has no mask, the row's
lowest visible score. Queries outside the active set get, as NFP requires every
entry, their real scores and weights, with prev at their heaviest key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.exact import CircuitRun, ExactModel, RowResult, exact
from farm.proofs.induction.nfp import (
    Matrix,
    NfpCertificate,
    logit_diff_bound,
    rat,
    rejections,
)
from farm.tasks.induction import Induction, StripeEntry

VERSION = "1"


@dataclass(frozen=True)
class HeadRef:
    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


class InductionProver:
    """One checkpoint's exact runs, and the certificates of one head on any prompt."""

    def __init__(self, checkpoint: Checkpoint, task: Induction, head: HeadRef):
        cfg = checkpoint.config
        if not isinstance(task, Induction):
            raise FarmError(f"task {task.name} is not an induction task")
        if cfg.attn_variant != "sparsemax":
            raise FarmError("induction certificates need sparsemax attention: softmax weights "
                            "are irrational, and sound bounds through every layer are not "
                            "implemented")
        if cfg.norm_variant != "none":
            raise FarmError("the copying bound needs a model without normalisation (--norm "
                            f"none): under {cfg.norm_variant} the logits are not linear in "
                            "a head's output")
        if not (0 <= head.layer < cfg.n_layers and 0 <= head.head < cfg.n_heads):
            raise FarmError(f"head {head} is not in a model of {cfg.n_layers} layers x "
                            f"{cfg.n_heads} heads")
        if task.seq_len > cfg.seq_len or max(task.candidates) >= cfg.vocab_size:
            raise FarmError(f"task {task.name} does not fit the model's context or vocabulary")
        self.checkpoint, self.task, self.head = checkpoint, task, head
        self.model = ExactModel(cfg, checkpoint.weights)
        dh = cfg.head_dim
        w_o = np.asarray(checkpoint.weights[f"blocks.{head.layer}.attn.o.weight"])
        unembed = np.asarray(checkpoint.weights["lm_head.weight"])
        # (U W_O^h)[token]: what one unit of the head's output adds to each token's logit
        self.readout = {t: [sum(exact(u) * exact(w) for u, w in zip(unembed[t], w_o[:, c],
                                                                     strict=True))
                            for c in range(head.head * dh, (head.head + 1) * dh)]
                        for t in task.candidates}
        self._runs: CircuitRun | None = None

    def fresh(self) -> None:
        """Forget memoised prefixes (bounded memory over a long domain)."""
        self._runs = None

    @property
    def runs(self) -> CircuitRun:
        if self._runs is None:
            self._runs = self.model.runs()
        return self._runs

    def run(self, prompt: Sequence[int]) -> RowResult:
        return self.runs.row(prompt)

    def certificate(self, index: int, queries: Sequence[StripeEntry] | None = None
                    ) -> NfpCertificate:
        """The certificate of the head on domain prompt `index` (default: the decision query)."""
        prompt = self.task.domain()[index]
        queries = tuple(queries or (self.task.decision(prompt),))
        if len({e.target for e in queries}) != 1:
            raise FarmError("an NFP certificate has one direction: its active queries must "
                            "share a target")
        row = self.run(prompt)
        seq, target = len(prompt), queries[0].target
        score, weight = self._attention(row)
        prev = {q: max(range(q + 1), key=lambda k, q=q: (weight[q, k], -k)) for q in range(seq)}
        prev |= {e.query: e.key for e in queries}
        eps_at = {q: 1 - weight[q, prev[q]] for q in range(seq)}
        values = [row.positions[k].values[self.head.layer, self.head.head] for k in range(seq)]
        vals = {c: [self._direct(target, c, v) for v in values]
                for c in self.task.candidates if c != target}
        copy = {(e.query, c): val[e.key] - eps_at[e.query] * (val[e.key] - min(val))
                for e in queries for c, val in vals.items()}
        negative = min(vals, key=lambda c: (min(copy[e.query, c] for e in queries), c))
        val = vals[negative]
        logits = {c: row.logits[c] for c in self.task.candidates}
        runner_up = max((c for c in logits if c != target), key=lambda c: (logits[c], -c))
        decision = logits[target] - logits[runner_up]
        active = tuple(e.query for e in queries)
        cert = NfpCertificate(
            seq=seq, eps=max(eps_at[q] for q in active),
            margin=min(score[q, prev[q]] - max(score[q, k] for k in range(seq) if k != prev[q])
                       for q in active),
            lo=min(val), hi=max(val), active=active, prev=prev, eps_at=eps_at,
            val=dict(enumerate(val)), val_lo=dict(enumerate(val)), val_hi=dict(enumerate(val)),
            score=score, weight=weight, weight_bound=dict(weight),
            direction=(target, negative))
        if logit_diff_bound(cert) < 0:
            cert.direction = None  # NFP's looser bound would reject what ours proves
        certified = not rejections(cert) and min(copy.values()) > 0 and decision > 0
        cert.farm = [
            ("induction-certificate", VERSION), ("checkpoint", self.checkpoint.sha256),
            ("task", self.task.name), ("prompt", str(index), *map(str, prompt)),
            ("head", str(self.head.layer), str(self.head.head)),
            ("direction", str(target), str(negative)),
            *(("query", str(e.query), str(e.key), str(e.target)) for e in queries),
            *(("copy-lb", str(q), str(c), rat(bound)) for (q, c), bound in copy.items()),
            ("decision", str(target), str(runner_up), rat(decision)),
            ("certified", "yes" if certified else "no")]
        return cert

    def _attention(self, row: RowResult) -> tuple[Matrix, Matrix]:
        """The head's exact scores and weights at every query; masked keys get weight 0 and
        the row's lowest visible score (NFP's file has no mask)."""
        layer, h = self.head.layer, self.head.head
        seq = len(row.positions)
        score, weight = {}, {}
        for q, here in enumerate(row.positions):
            visible = self.runs.scores(here.queries[layer, h], row.positions[:q + 1], layer, h)
            for k in range(seq):
                score[q, k] = visible[k] if k <= q else min(visible)
                weight[q, k] = here.patterns[layer, h][k] if k <= q else Fraction(0)
        return score, weight

    def _direct(self, target: int, other: int, value: Sequence[Fraction]) -> Fraction:
        """(U_target − U_other)·W_O^h v: the head's direct effect on one logit difference."""
        a, b = self.readout[target], self.readout[other]
        return sum(((x - y) * v for x, y, v in zip(a, b, value, strict=True)), Fraction(0))
