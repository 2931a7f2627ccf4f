"""Brute force: every input of the domain decided, soundly, at tens of FLOPs per input.

A prompt (t_0, …, t_{K-1}) with maximum m is correct when F(c) = Σ_i w_i H_i(c) > 0
for every rival c, where H_i(c) = G[q, i, t_i, m] − G[q, i, t_i, c] and w are the
attention weights (`paths`). Three stages, each sound, each leaving fewer inputs:

1. (softmax) Softmax weights are w_i = e[q, i, t_i] / Z with Z > 0 and e a table, so
   min_c F(c)·Z ≥ Σ_i e[q, i, t_i]·H*[q, i, t_i, m], H* the margin over the best rival
   of each row alone (`worst_rival`). The table of certified lower contributions
   L[q, i, t, m] (value minus its error bound, rounded further down by 4K·u·|L| so that
   the float sum of K of them cannot round above the true sum) turns each prompt into
   K gathers and adds: a sum above zero proves it correct.
2. What stage 1 leaves (for sparsemax, every prompt: its weights depend on the whole
   prompt, `sparsemax_weights`) is evaluated against every rival in float64 with a
   bound per prompt (`margins`):
   every F̂(c) above its bound proves correct, one below minus its bound proves wrong.
3. The rest is decided exactly (`exact.ExactMaxK`), ties included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from tqdm import tqdm

from farm.model.gpt import GPTConfig
from farm.proofs.maxk.bound import AccuracyBound
from farm.proofs.maxk.exact import ExactMaxK, Verdict
from farm.proofs.maxk.paths import (
    LOGITS_FLOPS,
    SLACK,
    Approx,
    PathTables,
    U,
    gamma,
    softmax_exps,
    worst_rival,
)
from farm.tasks.max_of_k import MaxOfK

CHUNK = 8192  # prompts evaluated against every rival at once (stage 2): ~20 MB of floats
TINY = 1e-290  # absolute slack per certified contribution: keeps subnormals out of it


def certified_contributions(exps: Approx, rival: Approx, k: int) -> np.ndarray:
    """L[q, i, t, m] ≤ e[q, i, t]·H*[q, i, t, m], lowered so that a float64 sum of K of
    them above zero proves the exact sum above zero."""
    e, e_err = exps.value[..., None], exps.err[..., None]
    h, h_err = rival.value, rival.err
    product = e * h
    err = (e * h_err + (np.abs(h) + h_err) * e_err + U * np.abs(product)) * SLACK
    low = product - err
    return low - 4 * k * U * np.abs(low) - TINY


def sparsemax_weights(scores: Approx) -> Approx:
    """Sparsemax of each row of float scores [n, K], with a bound on the distance to the
    sparsemax of the exact scores.

    τ is nondecreasing in every score and shifts with a common shift, so it moves by at
    most the scores' largest error ε; and for the computed τ̂ the residual
    g(τ̂) = Σ max(ŝ_i − τ̂, 0) − 1 bounds |τ̂ − τ(ŝ)|, since g falls with slope at least
    1 below max ŝ. A weight is then within ε + ε + |g(τ̂)| (+ its roundings) of exact.
    """
    s, eps = scores.value, scores.err.max(axis=1, keepdims=True)
    k = s.shape[1]
    ordered = -np.sort(-s, axis=1)
    ranks = np.arange(1, k + 1)
    cumulative = ordered.cumsum(1)
    support = (1 + ranks * ordered > cumulative).sum(1, keepdims=True)
    tau = (np.take_along_axis(cumulative, support - 1, 1) - 1) / support
    weights = np.maximum(s - tau, 0.0)
    residual = weights.sum(1, keepdims=True) - 1
    residual_err = (k + 2) * U * ((np.abs(s) + np.abs(tau)).sum(1, keepdims=True) + 1)
    below_top = tau < ordered[:, :1]  # else the residual says nothing: leave it to exact
    tau_err = np.where(below_top, np.abs(residual) + residual_err, np.inf)
    err = (2 * eps + tau_err + U * (np.abs(s) + np.abs(tau))) * SLACK
    return Approx(weights, np.broadcast_to(err, weights.shape))


def margins(tables: PathTables, weights: Approx, prompts: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F̂(c) [n, vocab] for prompts [n, K] under attention weights [n, K] (non-negative,
    exact up to their bounds, any positive scale), a bound on each F̂'s error, and the
    prompts' maxima; column m (F = 0) is left out by the caller.

    F(c) = L(m) − L(c) with L = Σ_i w_i G[q, i, t_i]. Bounding each row of G by its
    largest |entry| and largest error keeps the bound per prompt, not per rival:
    |L̂ − L| ≤ Σ_i (ŵ_i·err_i + (|G_i| + err_i)·err(w_i)) + γ_K Σ_i ŵ_i |G_i|.
    """
    k = prompts.shape[1]
    index = (prompts[:, -1:], np.arange(k), prompts)
    row_abs, row_err = tables.row_bounds
    w, w_err = weights.value, weights.err
    total = np.einsum("nk,nkv->nv", w, tables.logits.value[index])
    a, e = row_abs[index], row_err[index]
    total_err = ((w * e + (a + e) * w_err).sum(1) + gamma(k) * (w * a).sum(1)) * SLACK
    m = prompts.max(axis=1)
    value = np.take_along_axis(total, m[:, None], 1) - total
    return value, (2 * total_err[:, None] + U * np.abs(value)) * SLACK, m


def brute_force(config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK,
                progress: bool = False) -> AccuracyBound:
    """The exact accuracy of a Max-of-K model (softmax or sparsemax) over its domain."""
    start = time.perf_counter()
    tables = PathTables.build(config, weights, task)
    k, vocab = task.k, task.vocab
    softmax = config.attn_variant == "softmax"
    rival = worst_rival(tables.logits)
    flops = tables.flops + (LOGITS_FLOPS + 12) * rival.value.size
    if softmax:
        exps = softmax_exps(tables.scores)
        contributions = certified_contributions(exps, rival, k)
    # the first K-1 positions as an index grid (position 0 most significant), sorted by
    # their maximum: for query q, the prompts whose maximum is a free token are a suffix
    # (m = that maximum, a fixed gather index), the rest a cube of tokens < q (m = q)
    index = np.int32 if vocab * vocab < 2 ** 31 else np.int64  # K = 5: 16.7 M per row
    grid = np.indices((vocab,) * (k - 1), dtype=index).reshape(k - 1, -1)
    grid = grid[:, np.argsort(grid.max(axis=0), kind="stable")]
    prefix_max = grid.max(axis=0)
    gather = grid * index(vocab) + prefix_max  # into contributions[q, i] over (t, m)
    suffix_start = np.searchsorted(prefix_max, np.arange(vocab))
    pos = np.arange(k)
    exact_model: ExactMaxK | None = None
    counts = {verdict: 0 for verdict in Verdict}
    for q in tqdm(range(vocab), desc=f"brute force {task.name}", disable=not progress,
                  leave=False):
        first = suffix_start[q]
        if softmax:  # stage 1: K gathers of certified contributions per prompt
            low = contributions[q, k - 1, q].take(prefix_max[first:])
            cube = contributions[q, k - 1, q, q]
            for i in range(k - 1):
                low += contributions[q, i].ravel().take(gather[i, first:])
                cube = np.add.outer(cube, contributions[q, i, :q, q])
            flops += 2 * k * (low.size + cube.size)
            doubtful_tokens = np.concatenate(
                [grid[:, first + np.flatnonzero(low <= 0)],
                 np.array(np.unravel_index(np.flatnonzero(cube <= 0), (q,) * (k - 1)))], 1)
        else:  # sparsemax weights depend on the whole prompt: every prompt goes to stage 2
            doubtful_tokens = grid
        counts[Verdict.CORRECT] += grid.shape[1] - doubtful_tokens.shape[1]
        for at in range(0, doubtful_tokens.shape[1], CHUNK):
            chunk = doubtful_tokens[:, at:at + CHUNK].T
            prompts = np.concatenate([chunk, np.full((len(chunk), 1), q)], 1)
            attention = (exps[prompts[:, -1:], pos, prompts] if softmax else
                         sparsemax_weights(tables.scores[prompts[:, -1:], pos, prompts]))
            value, err, maxima = margins(tables, attention, prompts)
            flops += (2 * k + 4) * value.size + (10 if softmax else 50) * k * len(chunk)
            rivals = np.arange(vocab) != maxima[:, None]
            right = ((value > err) | ~rivals).all(1)
            wrong = ((value < -err) & rivals).any(1)
            counts[Verdict.CORRECT] += int(right.sum())
            counts[Verdict.WRONG] += int(wrong.sum())
            for prompt in prompts[~right & ~wrong]:
                exact_model = exact_model or ExactMaxK(config, weights, task)
                counts[exact_model.decide(prompt.tolist())] += 1
                flops += 40 * config.d_model ** 2 * k  # exact rationals: a forward's worth
    return AccuracyBound("brute_force", task.name, counts[Verdict.CORRECT],
                         len(task.domain()), flops, time.perf_counter() - start,
                         ties=counts[Verdict.TIE], wrong=counts[Verdict.WRONG])
