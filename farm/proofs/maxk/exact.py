"""One input decided exactly: the few whose float margin is within its error bound.

Scores S_i and the per-position logit rows g_i (see `paths`) are exact rationals
(the float32 weights at their binary values). The margin of the target m over a
rival c is F(c) = Σ_i w_i (g_i[m] − g_i[c]) for the attention weights w.

Sparsemax weights are rational, so F(c) is computed exactly. Softmax weights are
exp(S_i)/Z with Z > 0, so sign F(c) = sign Σ_g exp(σ_g)·h_g, grouping positions by
their distinct score σ_g with h_g = Σ_{i in g} (g_i[m] − g_i[c]). The σ_g are
distinct rationals, so by the Lindemann–Weierstrass theorem the exp(σ_g) are
linearly independent over the algebraic numbers: the sum is zero exactly when every
h_g is zero (an exact tie, proved, not guessed). Otherwise its sign is found by
interval arithmetic at increasing decimal precision, which must end because the sum
is not zero.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from enum import Enum
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.model.exact import ExactAffine, exact, sparsemax
from farm.model.gpt import GPTConfig
from farm.proofs.maxk.paths import require_max_of_k_model
from farm.tasks.max_of_k import MaxOfK

MAX_DIGITS = 4096  # far beyond any margin a float64 table can state; reaching it is a bug


class Verdict(Enum):
    CORRECT = "correct"  # the target's logit strictly beats every rival's
    TIE = "tie"  # no rival beats it, but one equals it exactly: not correct
    WRONG = "wrong"  # a rival's logit is strictly larger


class ExactMaxK:
    """The model's exact decision on any single Max-of-K prompt."""

    def __init__(self, config: GPTConfig, weights: Mapping[str, np.ndarray], task: MaxOfK):
        require_max_of_k_model(config, task)
        self.task, self.softmax = task, config.attn_variant == "softmax"
        attn = "blocks.0.attn"
        self.affine = {p: ExactAffine(weights[f"{attn}.{p}.weight"],
                                      weights.get(f"{attn}.{p}.bias")) for p in "qkvo"}
        self.unembed = ExactAffine(weights["lm_head.weight"], weights.get("lm_head.bias"))
        self.wte, self.wpe = weights["wte.weight"], weights["wpe.weight"]
        self.scale = exact(config.attn_scale)

    def rows(self, prompt: Sequence[int]) -> tuple[list[Fraction], list[list[Fraction]]]:
        """Exact scores S_i and logit rows g_i of each position of `prompt`."""
        xs = [[exact(a) + exact(b) for a, b in zip(self.wte[t], self.wpe[i], strict=True)]
              for i, t in enumerate(prompt)]
        query = self.affine["q"](xs[-1])
        scores = [sum((a * b for a, b in zip(query, self.affine["k"](x), strict=True)),
                      Fraction(0)) / self.scale for x in xs]
        logits = [self.unembed([a + b for a, b in zip(self.affine["o"](self.affine["v"](x)),
                                                       xs[-1], strict=True)]) for x in xs]
        return scores, logits

    def decide(self, prompt: Sequence[int]) -> Verdict:
        if len(prompt) != self.task.k or not all(0 <= t < self.task.vocab for t in prompt):
            raise FarmError(f"{tuple(prompt)} is not a prompt of {self.task.name}")
        scores, logits = self.rows(prompt)
        m = max(prompt)
        signs = [self._sign(scores, [g[m] - g[c] for g in logits])
                 for c in range(self.task.vocab) if c != m]
        if min(signs) < 0:
            return Verdict.WRONG
        return Verdict.TIE if min(signs) == 0 else Verdict.CORRECT

    def _sign(self, scores: list[Fraction], diffs: list[Fraction]) -> int:
        """The sign of Σ_i w_i·diffs_i under the model's attention weights."""
        if not self.softmax:
            weights, _ = sparsemax(scores)
            total = sum((w * h for w, h in zip(weights, diffs, strict=True)), Fraction(0))
            return (total > 0) - (total < 0)
        groups: dict[Fraction, Fraction] = {}
        for s, h in zip(scores, diffs, strict=True):
            groups[s] = groups.get(s, Fraction(0)) + h
        terms = [(s, h) for s, h in groups.items() if h != 0]
        if not terms:
            return 0  # every h_g is zero: an exact tie (Lindemann–Weierstrass)
        top = max(s for s, _ in terms)  # exp(σ − top) ≤ 1: the same sign, no overflow
        digits = 30
        while digits <= MAX_DIGITS:
            low, high = _interval_sum([(s - top, h) for s, h in terms], digits)
            if low > 0:
                return 1
            if high < 0:
                return -1
            digits *= 2
        raise FarmError(f"softmax margin undecided at {MAX_DIGITS} digits although "
                        "Lindemann–Weierstrass says it is not zero")


def _interval_sum(terms: list[tuple[Fraction, Fraction]], digits: int
                  ) -> tuple[Fraction, Fraction]:
    """Rational bounds on Σ exp(σ)·h: each σ is rounded outward to `digits` decimal
    digits, exp taken correctly rounded (decimal's exp is), then widened by one unit
    in the last place each way."""
    low = high = Fraction(0)
    for sigma, h in terms:
        ends = []
        for rounding, sign in ((decimal.ROUND_FLOOR, -1), (decimal.ROUND_CEILING, 1)):
            ctx = decimal.Context(prec=digits, rounding=rounding)
            arg = ctx.divide(decimal.Decimal(sigma.numerator), decimal.Decimal(sigma.denominator))
            value = Fraction(decimal.Context(prec=digits).exp(arg))
            ends.append(value * (1 + sign * Fraction(1, 10 ** (digits - 1))))
        e_low, e_high = ends
        low += h * (e_low if h > 0 else e_high)
        high += h * (e_high if h > 0 else e_low)
    return low, high
