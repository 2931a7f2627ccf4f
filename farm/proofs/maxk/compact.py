"""Compact proofs: accuracy lower bounds from the path tables, never input by input.

Both strategies group the prompts with query token q and maximum m by how large
their other tokens may be (at most m' < m), and bound every prompt of a group at
once with *pessimal attention*. With softmax weights a, the margin over any rival c
is a convex combination, F(c)/Z = Σ_i a_i H_i(c) ≥ Σ_i a_i H*_i with H*_i the margin
over the best rival of position i's row alone, so if the max-token positions carry
at least α of the attention,

    F/Z ≥ min(h_max, α·h_max + (1 − α)·h_other)

where h_max bounds H* below at positions holding m, h_other at positions holding
any token ≤ m' (and the query, when q < m), and α ≥ e_max / (e_max + e_other) from
the exponentials' bounds (`paths.softmax_exps`): the fewest max positions at their
least attention against every other position at its most.

- `cubic`: a group per (q, m, m') with m' the largest other token exactly, H* of
  the full logit rows G (direct path included): vocab³ groups, O(vocab³·K) work.
- `subcubic`: the mechanism, attention goes to the largest token, read off the
  tables without G: the direct path's margin is bounded apart from the attention
  path's (max(a + b) ≤ max a + max b), so the tables are vocab²·K, and for each
  (q, m) a binary search finds the largest m' whose group is proved: O(vocab²·K +
  vocab²·log vocab) after the tables.

Every comparison is made against a float64 error bound (the tables' bounds, then
4u per rounding of the combination), so a proved group is correct in exact
arithmetic; the count of a group's prompts is exact combinatorics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from farm.errors import FarmError
from farm.model.gpt import GPTConfig
from farm.proofs.maxk.bound import AccuracyBound
from farm.proofs.maxk.brute import sparsemax_weights
from farm.proofs.maxk.paths import (
    LOGITS_FLOPS,
    SLACK,
    Approx,
    PathTables,
    U,
    softmax_exps,
    worst_rival,
)
from farm.tasks.max_of_k import MaxOfK

TINY = 1e-290


def _low(a: Approx) -> np.ndarray:
    return (a.value - a.err) - 4 * U * np.abs(a.value) - TINY


def _attention_share(e_max: np.ndarray, e_other: np.ndarray) -> np.ndarray:
    """A lower bound on e_max / (e_max + e_other) for bounds e_max ≤ and e_other ≥ the
    true values (three roundings, each ≤ u, then 8u below)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(e_other > 0, e_max / (e_max + e_other), 1.0)
    return np.maximum(share * (1 - 8 * U), 0.0)


def _proved(h_max: np.ndarray, h_other: np.ndarray, share: np.ndarray,
            direct: np.ndarray | float = 0.0) -> np.ndarray:
    """min(h_max, α·h_max + (1 − α)·h_other) + direct > 0, the roundings bounded."""
    other = np.where(np.isfinite(h_other), h_other, h_max)  # no other token: α = 1
    bound = np.minimum(h_max, share * h_max + (1 - share) * other) + direct
    return bound > 8 * U * (np.abs(h_max) + np.abs(other) + np.abs(direct)) + TINY


def _exps(tables: PathTables) -> tuple[np.ndarray, np.ndarray]:
    if tables.attn_variant != "softmax":
        raise FarmError("the subcubic proof bounds softmax attention; this model uses "
                        f"{tables.attn_variant} (its brute force is exact)")
    e = softmax_exps(tables.scores)
    return e.value - e.err, (e.value + e.err) * SLACK


# share(a_max, singles, a_other, n): a lower bound on the attention share of one position
# whose key is at least a_max, against positions whose keys are at most `singles` (one
# each, [group]) and n more at most a_other [group]
Share = Callable[[np.ndarray, list[np.ndarray], np.ndarray, int], np.ndarray]


def _softmax_share(a_max: np.ndarray, singles: list[np.ndarray], a_other: np.ndarray,
                   n: int) -> np.ndarray:
    return _attention_share(a_max, (sum(singles, n * a_other)) * (1 + 4 * U))


def _sparsemax_share(a_max: np.ndarray, singles: list[np.ndarray], a_other: np.ndarray,
                     n: int) -> np.ndarray:
    """Sparsemax gives a set of positions no less weight when its scores rise or the
    others' fall (τ moves by at most the rise over the support's size), so the
    sparsemax of the bounds themselves, less its error bound, is a lower bound."""
    columns = np.broadcast_arrays(a_max, *singles, *[a_other] * n)
    scores = np.stack([c.ravel() for c in columns], axis=1)
    weights = sparsemax_weights(Approx(scores, np.zeros_like(scores)))
    share = (weights.value[:, 0] - weights.err[:, 0]) * (1 - 4 * U) - TINY
    return np.maximum(np.nan_to_num(share, nan=0.0, neginf=0.0), 0.0).reshape(columns[0].shape)


def _attention_keys(tables: PathTables) -> tuple[np.ndarray, np.ndarray, Share]:
    """Lower and upper bounds [q, i, t] on what attention is a monotone function of
    (softmax: the exponentials; sparsemax: the scores), and the share that follows."""
    if tables.attn_variant == "softmax":
        e_low, e_high = _exps(tables)
        return e_low, e_high, _softmax_share
    s = tables.scores
    return _low(s), s.value + s.err * (1 + 4 * U) + 4 * U * np.abs(s.value) + TINY, \
        _sparsemax_share


def _group_sizes(k: int, query_is_max: bool, q: int, other: np.ndarray) -> np.ndarray:
    """How many prompts have query q, a given maximum m and largest other token exactly
    `other`: their K−1 free positions hold tokens of {0..other} ∪ {m}."""
    n, a = k - 1, other.astype(object) + 2
    at_least_one = a ** n - (a - 1) ** n
    if query_is_max:  # at least one `other` among the free positions
        return at_least_one
    # at least one m, and one `other` unless the query is it
    both = a ** n - 2 * (a - 1) ** n + (a - 2) ** n
    return np.where(other == q, at_least_one, both)


def cubic(config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK
          ) -> AccuracyBound:
    """The cubic strategy: a group per (query, maximum, largest other token); softmax or
    sparsemax attention."""
    start = time.perf_counter()
    tables = PathTables.build(config, weights, task)
    k, vocab = task.k, task.vocab
    a_low, a_high, share = _attention_keys(tables)
    h = _low(worst_rival(tables.logits))  # [q, i, t, m]
    flops = tables.flops + (LOGITS_FLOPS + 12) * h.size + 60 * a_low.size
    tokens = np.arange(vocab)
    correct = 0
    for q in range(vocab):
        h_free, a_free = h[q, :k - 1], a_low[q, :k - 1]  # the K-1 free positions
        # h_other[m', m]: the least H* of a free position holding any token ≤ m'
        h_other = np.minimum.accumulate(h_free.min(axis=0), axis=0)
        a_other = np.maximum.accumulate(a_high[q, :k - 1].max(axis=0))  # [m']
        h_at_max = h_free[:, tokens, tokens].min(axis=0)  # [m]: m at a free position
        m_grid, other = np.meshgrid(tokens, tokens, indexing="ij")  # [m, m']
        valid = (other < m_grid) & (q <= m_grid) & ((q == m_grid) | (other >= q))
        flops += 30 * vocab * vocab + (k - 1) * vocab * vocab
        for query_is_max in (True, False):
            rows = tokens == q if query_is_max else tokens > q
            if not rows.any():
                continue
            m = m_grid[rows]
            o = other[rows]
            ok = valid[rows]
            if query_is_max:
                h_max = np.minimum(h_at_max[m], h[q, k - 1, q, m])
                alpha = share(np.broadcast_to(a_low[q, k - 1, q], m.shape), [],
                              a_other[o], k - 1)
                h_oth = h_other[o, m]
            else:
                h_max = h_at_max[m]
                alpha = share(a_free[:, m].min(axis=0),
                              [np.broadcast_to(a_high[q, k - 1, q], m.shape)], a_other[o],
                              k - 2)
                h_oth = np.minimum(h_other[o, m], h[q, k - 1, q, m])
            proved = ok & _proved(h_max, h_oth, alpha)
            correct += int(_group_sizes(k, query_is_max, q, o[proved]).sum())
        # the prompt of m alone (every token the query's): α = 1
        if h[q, :, q, q].min() > 0:
            correct += 1
    return AccuracyBound("cubic", task.name, correct, task.domain().size, flops,
                         time.perf_counter() - start)


def subcubic(config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK
             ) -> AccuracyBound:
    """The subcubic strategy: per (query, maximum), the largest bound m' on the other
    tokens under which attention to the maximum provably wins, found by binary search."""
    start = time.perf_counter()
    tables = PathTables.build(config, weights, task)
    k, vocab = task.k, task.vocab
    e_low, e_high = _exps(tables)
    h = _low(worst_rival(tables.path))  # [i, t, m]: the attention path alone
    h_direct = _low(worst_rival(tables.direct))  # [q, m]
    tokens = np.arange(vocab)
    # indexed by m' + 1, so that row 0 is "no other token" (m' = −1)
    h_other = np.vstack([np.full((1, vocab), np.inf),
                         np.minimum.accumulate(h[:k - 1].min(axis=0), axis=0)])  # [m'+1, m]
    e_other = np.hstack([np.zeros((vocab, 1)),
                         np.maximum.accumulate(e_high[:, :k - 1].max(axis=1), axis=1)])
    h_at_max = h[:k - 1, tokens, tokens].min(axis=0)  # [m]
    q, m = np.meshgrid(tokens, tokens, indexing="ij")
    query_is_max = q == m
    h_max = np.where(query_is_max, np.minimum(h_at_max[m], h[k - 1, m, m]), h_at_max[m])
    e_max = np.where(query_is_max, e_low[q, k - 1, q], e_low[:, :k - 1].min(axis=1)[q, m])
    e_query = np.where(query_is_max, 0.0, e_high[q, k - 1, q])
    h_query = np.where(query_is_max, np.inf, h[k - 1, q, m])
    spare = np.where(query_is_max, k - 1, k - 2)  # free positions that may hold others

    def proved(other: np.ndarray) -> np.ndarray:
        e_oth = (e_query + spare * e_other[q, other + 1]) * (1 + 4 * U)
        h_oth = np.minimum(h_other[other + 1, m], h_query)
        return _proved(h_max, h_oth, _attention_share(e_max, e_oth), h_direct)

    low = np.where(query_is_max, -1, q)
    high = m - 1
    best = low - 1  # below `low`: nothing proved
    steps = 0
    while (open_ := (low <= high) & (q <= m)).any():
        mid = np.where(open_, (low + high) // 2, -1)
        ok = open_ & proved(mid)
        best = np.where(ok, mid, best)
        low, high = np.where(ok, mid + 1, low), np.where(open_ & ~ok, mid - 1, high)
        high = np.where(open_, high, low - 1)
        steps += 1
    a = best.astype(object) + 2
    sizes = np.where(query_is_max, a ** (k - 1), a ** (k - 1) - (a - 1) ** (k - 1))
    proven = (q <= m) & (best >= np.where(query_is_max, -1, q))
    flops = (tables.flops + 14 * (h.size + h_direct.size) + 60 * e_low.size
             + 4 * h.size + 40 * vocab * vocab * steps)
    return AccuracyBound("subcubic", task.name, int(sizes[proven].sum()),
                         task.domain().size, flops, time.perf_counter() - start)
