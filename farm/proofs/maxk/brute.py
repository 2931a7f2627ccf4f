"""Brute force: every input of the domain decided, soundly, at tens of FLOPs per input.

A prompt (t_0, …, t_{K-1}) with maximum m is correct when F(c) = Σ_i w_i H_i(c) > 0
for every rival c, where H_i(c) = G[q, i, t_i, m] − G[q, i, t_i, c] and w are the
attention weights (`paths`). Three stages, each sound, each leaving fewer inputs:

1. (softmax) Softmax weights are w_i = e[q, i, t_i] / Z with Z > 0 and e a table, so
   min_c F(c)·Z ≥ Σ_i e[q, i, t_i]·H*[q, i, t_i, m], H* the margin over the best rival
   of each row alone (`worst_rival`). The table of certified lower contributions
   L[q, i, t, m] (value minus its error bound, rounded further down by 4K·u·|L| so that
   the float sum of K of them, in any order, cannot round above the true sum) turns
   each prompt into K adds: a sum above zero proves it correct. The prompts of one
   query q and maximum m are a few boxes of tokens (`boxes`), so the sums are outer
   sums of table rows: no index arrays, memory of one box.
2. What stage 1 leaves (for sparsemax, every prompt: its weights depend on the whole
   prompt, `sparsemax_weights`) is evaluated against every rival in float64 with a
   bound per prompt (`margins`):
   every F̂(c) above its bound proves correct, one below minus its bound proves wrong.
3. The rest is decided exactly (`exact.ExactMaxK`), ties included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from farm.errors import FarmError
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


@dataclass(frozen=True)
class Tally:
    """What one unit of the brute force decided, and the FLOPs it took."""

    correct: int = 0
    ties: int = 0
    wrong: int = 0
    flops: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.correct + other.correct, self.ties + other.ties,
                     self.wrong + other.wrong, self.flops + other.flops)

    @property
    def prompts(self) -> int:
        return self.correct + self.ties + self.wrong


def boxes(n: int, q: int, m: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """The prompts with query q and maximum m ≥ q as disjoint boxes over the n free
    positions, each position's tokens a range [lo, hi): for m = q every token ≤ q;
    for m > q, by the first position j holding m: tokens < m before it, ≤ m after."""
    if m == q:
        yield ((0, q + 1),) * n
        return
    for j in range(n):
        yield ((0, m),) * j + ((m, m + 1),) + ((0, m + 1),) * (n - 1 - j)


def table_flops(config: GPTConfig, task: MaxOfK) -> int:
    """The FLOPs of what `BruteForce` prepares once: the path tables, then each logit
    entry and (softmax) its best-rival margin."""
    per_entry = LOGITS_FLOPS + (12 if config.attn_variant == "softmax" else 0)
    return (PathTables.cost(task.k, task.vocab, config.d_model)
            + per_entry * task.k * task.vocab ** 3)


def pairs(vocab: int) -> list[tuple[int, int]]:
    """Every (query token q, maximum m ≥ q) in order: the domain's finest units, each the
    prompts of one query and one maximum."""
    return [(q, m) for q in range(vocab) for m in range(q, vocab)]


def pair_prompts(n: int, q: int, m: int) -> int:
    """How many prompts have query q and maximum m, over n free positions."""
    return (q + 1) ** n if m == q else (m + 1) ** n - m ** n


class BruteForce:
    """The brute force prepared for one model: its tables built once, then any range of
    `pairs` (a unit of the domain: the prompts of those queries and maxima) decided."""

    def __init__(self, config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK):
        self.config, self.weights, self.task = config, weights, task
        self.tables = PathTables.build(config, weights, task)
        self.softmax = config.attn_variant == "softmax"
        if self.softmax:
            self.exps = softmax_exps(self.tables.scores)
            self.contributions = certified_contributions(
                self.exps, worst_rival(self.tables.logits), task.k)
        self._exact: ExactMaxK | None = None

    def decide(self, first: int, stop: int, progress: bool = False) -> Tally:
        """Every prompt of pairs[first:stop] (query, maximum), decided."""
        tally, pending, waiting = Tally(), [], 0
        for q, m in tqdm(pairs(self.task.vocab)[first:stop],
                         desc=f"brute force {self.task.name}", disable=not progress,
                         leave=False):
            for box in boxes(self.task.k - 1, q, m):
                proved, doubtful = self._box(q, m, box)
                tally += proved
                for prompts in doubtful:
                    pending.append(prompts)
                    waiting += len(prompts)
                    if waiting >= CHUNK:  # stage 2 in batches, not per box
                        tally += self._doubtful(np.concatenate(pending))
                        pending, waiting = [], 0
        return tally + self._doubtful(np.concatenate(pending)) if pending else tally

    def _box(self, q: int, m: int, box: tuple[tuple[int, int], ...]
             ) -> tuple[Tally, Iterator[np.ndarray]]:
        """Stage 1 on a box of prompts with maximum m: those it proves, and the rest as
        prompts [≤ CHUNK, K] at a time."""
        k = self.task.k
        shape = tuple(hi - lo for lo, hi in box)
        size = math.prod(shape)
        if self.softmax:  # K adds of certified contributions per prompt
            low = self.contributions[q, k - 1, q, m]
            for i, (lo, hi) in enumerate(box):
                low = np.add.outer(low, self.contributions[q, i, lo:hi, m])
            doubtful = np.flatnonzero(low.ravel() <= 0)
        else:  # sparsemax weights depend on the whole prompt: all go to stage 2
            doubtful = np.arange(size)

        def prompts() -> Iterator[np.ndarray]:
            for at in range(0, len(doubtful), CHUNK):
                free = np.stack(np.unravel_index(doubtful[at:at + CHUNK], shape), 1)
                yield np.concatenate([free + [lo for lo, _ in box],
                                      np.full((len(free), 1), q)], 1)
        return Tally(correct=size - len(doubtful), flops=2 * k * size), prompts()

    def _doubtful(self, prompts: np.ndarray) -> Tally:
        """Stages 2 and 3 on prompts [n, K] that stage 1 did not prove."""
        k, vocab = self.task.k, self.task.vocab
        index = (prompts[:, -1:], np.arange(k), prompts)
        attention = (self.exps[index] if self.softmax else
                     sparsemax_weights(self.tables.scores[index]))
        value, err, maxima = margins(self.tables, attention, prompts)
        rivals = np.arange(vocab) != maxima[:, None]
        right = ((value > err) | ~rivals).all(1)
        wrong = ((value < -err) & rivals).any(1)
        tally = Tally(int(right.sum()), 0, int(wrong.sum()),
                      (2 * k + 4) * value.size + (10 if self.softmax else 50) * k * len(prompts))
        for prompt in prompts[~right & ~wrong]:
            self._exact = self._exact or ExactMaxK(self.config, self.weights, self.task)
            verdict = self._exact.decide(prompt.tolist())
            tally += Tally(int(verdict is Verdict.CORRECT), int(verdict is Verdict.TIE),
                           int(verdict is Verdict.WRONG),
                           40 * self.config.d_model ** 2 * k)  # a forward's worth, exactly
        return tally

def accuracy_bound(task: MaxOfK, tally: Tally, seconds: float) -> AccuracyBound:
    """The accuracy bound of a tally of the whole domain (the units added up, the
    tables' FLOPs once), or a FarmError if it does not cover the domain."""
    total = task.domain().size
    if tally.prompts != total:
        raise FarmError(f"the units decided {tally.prompts:,} prompts of {total:,}: not the "
                        "whole domain")
    return AccuracyBound("brute_force", task.name, tally.correct, total, tally.flops, seconds,
                         ties=tally.ties, wrong=tally.wrong)


def brute_force(config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK,
                progress: bool = False) -> AccuracyBound:
    """The exact accuracy of a Max-of-K model (softmax or sparsemax) over its domain."""
    start = time.perf_counter()
    proof = BruteForce(config, weights, task)
    tally = (Tally(flops=table_flops(config, task))
             + proof.decide(0, len(pairs(task.vocab)), progress))
    return accuracy_bound(task, tally, time.perf_counter() - start)
