"""A Max-of-K model split into its paths, as float64 tables with rigorous error bounds.

For a one-layer, one-head, attention-only model without norms, the last position's
logits on prompt t_0..t_{K-1} (query token q = t_{K-1}) are

    logits = Σ_i a_i · G[q, i, t_i],    a = softmax or sparsemax of (S[q, i, t_i])_i

with S[q, i, t] = (W_q x_q + b_q)·(W_k x + b_k) / √d_head the score of token t at
position i (x = E[t] + P[i], x_q = E[q] + P[K-1]) and
G[q, i, t] = W_U (W_o (W_v x + b_v) + b_o + x_q) + b_U the logits the model gives
when all attention goes there (Σ a_i = 1 lets the direct path and b_o ride along).
Every proof reads the model only through S and G: vocab·K·vocab scores and
vocab·K·vocab·vocab logits, whatever the number of inputs.

Error bounds. Weights are float32 values, taken exactly. Each table is computed in
float64 by matrix products; a length-n dot product, summed in any order (BLAS
blocking and FMA included), is within γ_n·Σ|x_i y_i| of the exact value,
γ_n = n·u/(1 − n·u), u = 2^-53 (Higham, Accuracy and Stability, §3.1). An input
that is itself approximate carries its bound forward: for ŷ = fl(W x̂ + b),
|ŷ − y| ≤ γ_{n+1}(|W||x̂| + |b|) + |W|·err(x̂). Each bound is itself computed in
float64 and multiplied by SLACK = 1 + 2^-40, which exceeds the relative rounding
error of computing it (at most γ_n ≈ n·10^-16 for the n ≤ 2^12 terms of any sum
here).
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from farm.errors import FarmError
from farm.model.gpt import GPTConfig
from farm.tasks.max_of_k import MaxOfK

U = 2.0 ** -53  # unit roundoff of float64
SLACK = 1 + 2.0 ** -40
LOGITS_FLOPS = 8  # per entry of G: the add, its bound's four operations, a margin's three


def gamma(n: int) -> float:
    """γ_n = n·u / (1 − n·u): the relative error bound of an n-term float64 sum."""
    return n * U / (1 - n * U)


@dataclass(frozen=True)
class Approx:
    """A float64 array and a bound on its distance to the exact value, per entry."""

    value: np.ndarray
    err: np.ndarray

    def __getitem__(self, index: object) -> Approx:
        return Approx(self.value[index], self.err[index])


def _affine(x: Approx, weight: np.ndarray, bias: np.ndarray) -> Approx:
    """fl(W x + b) along x's last axis, with its error bound."""
    n = weight.shape[1] + 1
    abs_w = np.abs(weight)
    value = x.value @ weight.T + bias
    err = (gamma(n) * (np.abs(x.value) @ abs_w.T + np.abs(bias)) + x.err @ abs_w.T) * SLACK
    return Approx(value, err)


def _dots(a: Approx, b: Approx) -> Approx:
    """fl(a_r · b_s) for every row r of a and s of b: [rows of a, rows of b]."""
    n = a.value.shape[-1]
    abs_a, abs_b = np.abs(a.value), np.abs(b.value)
    value = a.value @ b.value.T
    err = (gamma(n) * (abs_a @ abs_b.T) + a.err @ abs_b.T + abs_a @ b.err.T
           + a.err @ b.err.T) * SLACK
    return Approx(value, err)


@dataclass(frozen=True)
class PathTables:
    """S [q, i, t] and G [q, i, t, c] (see the module docstring), each with its bound."""

    k: int
    vocab: int
    attn_variant: str
    scores: Approx  # S [q, i, t]
    path: Approx  # [i, t, c]: W_U (W_o (W_v x + b_v) + b_o), the path through attention
    direct: Approx  # [q, c]: W_U x_q + b_U, the direct path
    flops: int  # floating-point operations that built these tables, values and bounds

    @cached_property
    def row_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row of G [q, i, t]: the largest |entry| and the largest error bound."""
        return np.abs(self.logits.value).max(-1), self.logits.err.max(-1)

    @cached_property
    def logits(self) -> Approx:
        """G [q, i, t, c] = path[i, t, c] + direct[q, c]: vocab times the path table,
        so the subcubic proof never builds it (it costs `LOGITS_FLOPS` per entry)."""
        value = self.path.value[None] + self.direct.value[:, None, None]
        return Approx(value, (self.path.err[None] + self.direct.err[:, None, None]
                              + U * np.abs(value)) * SLACK)

    @classmethod
    def build(cls, config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK
              ) -> PathTables:
        require_max_of_k_model(config, task)
        k, vocab, d = task.k, task.vocab, config.d_model

        def w(name: str) -> np.ndarray:
            return np.asarray(weights[name], dtype=np.float32).astype(np.float64)

        def b(name: str, size: int) -> np.ndarray:
            return w(name) if name in weights else np.zeros(size)

        attn = "blocks.0.attn"
        embed = w("wte.weight")[None] + w("wpe.weight")[:k, None]  # [i, t, d]
        x = Approx(embed, U * np.abs(embed) * SLACK)
        x_query = x[k - 1]  # [q, d]
        query = _affine(x_query, w(f"{attn}.q.weight"), b(f"{attn}.q.bias", d))
        key = _affine(x, w(f"{attn}.k.weight"), b(f"{attn}.k.bias", d))
        raw = _dots(query, Approx(key.value.reshape(k * vocab, d), key.err.reshape(k * vocab, d)))
        scale = float(config.attn_scale)
        score_value = raw.value / scale
        scores = Approx(score_value.reshape(vocab, k, vocab),
                        ((raw.err / scale + U * np.abs(score_value)) * SLACK
                         ).reshape(vocab, k, vocab))
        value = _affine(x, w(f"{attn}.v.weight"), b(f"{attn}.v.bias", d))
        moved = _affine(value, w(f"{attn}.o.weight"), b(f"{attn}.o.bias", d))
        unembed = w("lm_head.weight")
        path = _affine(moved, unembed, np.zeros(vocab))
        direct = _affine(x_query, unembed, b("lm_head.bias", vocab))
        return cls(k, vocab, config.attn_variant, scores, path, direct,
                   cls.cost(k, vocab, d))

    @staticmethod
    def cost(k: int, vocab: int, d: int) -> int:
        """The FLOPs of `build`: a product counts 2·m·n·k for its value and twice that for
        its bound."""
        rows = k * vocab
        return 6 * (vocab * d * d + 3 * rows * d * d + rows * vocab * d + vocab * vocab * d
                    + vocab * rows * d)


def require_max_of_k_model(config: GPTConfig, task: MaxOfK) -> None:
    """Refuse a model the path decomposition does not describe, naming what differs."""
    if not isinstance(task, MaxOfK):
        raise FarmError(f"task {task.name} is not a max_of_k task")
    problems = []
    if config.n_layers != 1 or config.n_heads != 1:
        problems.append(f"{config.n_layers} layers of {config.n_heads} heads (needs 1 of 1)")
    if not config.attention_only:
        problems.append(f"an MLP of width {config.d_mlp} (needs --mlp 0)")
    if config.norm_variant != "none":
        problems.append(f"norm {config.norm_variant} (needs none)")
    if config.vocab_size != task.vocab:
        problems.append(f"vocab_size {config.vocab_size} (the task has {task.vocab} values)")
    if config.seq_len < task.k:
        problems.append(f"seq_len {config.seq_len} (the task has k = {task.k})")
    if problems:
        raise FarmError(f"the Max-of-K proofs need a one-layer, one-head, attention-only "
                        f"model without norms; this one has {'; '.join(problems)}")


EXP_ABS = 1e-300  # absolute slack for an exp that underflows float64 (true value < 1e-300)


def softmax_exps(scores: Approx) -> Approx:
    """e[q, i, t] = exp(S[q, i, t] − shift_q), shift_q = max_{i,t} Ŝ[q, i, t].

    A per-query shift changes every weight of a prompt by one positive factor, so the
    softmax (and the sign of every margin) is unchanged. Each exp is taken in decimal
    (exact argument to 40 digits, exp correctly rounded to 25, as the decimal module
    guarantees) and rounded to float64, so the only sizeable error is the score's own
    bound η: |ê/e − 1| ≤ 1.00001·η + 1.01·u + 10^-23 for η ≤ 10^-6.
    """
    if (worst := float(scores.err.max())) > 1e-6:
        raise FarmError(f"attention scores carry float64 error up to {worst:.3g}; the "
                        "brute force needs them within 1e-6 (are the weights enormous?)")
    shift = scores.value.max(axis=(1, 2), keepdims=True)
    wide, narrow = decimal.Context(prec=40), decimal.Context(prec=25)
    args = [wide.subtract(decimal.Decimal(s), decimal.Decimal(c)) for s, c in
            zip(scores.value.ravel().tolist(),
                np.broadcast_to(shift, scores.value.shape).ravel().tolist(), strict=True)]
    value = np.array([float(narrow.exp(a)) for a in args]).reshape(scores.value.shape)
    rho = 1.00001 * scores.err + 1.01 * U + 1e-23
    return Approx(value, (rho / (1 - rho) * value + EXP_ABS) * SLACK)


def worst_rival(logits: Approx) -> Approx:
    """H[..., m] = G[..., m] − max_{c ≠ m} G[..., c]: the margin of m over its best rival
    in one logit row, for every m (the top two entries give all of them)."""
    g = logits.value
    order = np.argsort(g, axis=-1)
    top, second = order[..., -1:], order[..., -2:-1]
    best = np.take_along_axis(g, top, -1)
    runner_up = np.take_along_axis(g, second, -1)
    rival = np.where(np.arange(g.shape[-1]) == top, runner_up, best)
    value = g - rival
    err = (logits.err + logits.err.max(axis=-1, keepdims=True) + U * np.abs(value)) * SLACK
    return Approx(value, err)
