"""Robustness decided exactly where the model's readout is affine (no final norm).

SPEC §4's robustness perturbs the final residual: the decision of lm_head(norm(r_E(x) + η))
for every ‖η‖∞ ≤ ε. Without a final norm (norm_variant none: the induction and Max-of-K
models) that is affine in η, so each rival c's margin over the ball is least at the
vertex η = −ε·sign(W_t − W_c), where it equals m_c(r_E(x)) − ε‖W_t − W_c‖₁. Exact
rationals then decide every input with no solver, for any number of candidates: the
inputs the screen's ball bound leaves on a task the SMT encodings do not take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from farm.errors import FarmError
from farm.model.exact import ExactModel


@dataclass(frozen=True)
class BallFloor:
    """The least exact margin of the target over its rivals on the ε-ball, and a point
    of the ball where it is reached (a counterexample when it is not positive)."""

    margin: Fraction
    eta: tuple[Fraction, ...]
    rival: int


def ball_floor(model: ExactModel, residual: Sequence[Fraction], target: int,
               candidates: Sequence[int], epsilon: Fraction) -> BallFloor:
    """`BallFloor` of r_E(x) = `residual`: exact, for a model without a final norm."""
    if model.norm_final is not None:
        raise FarmError("the readout is affine only without a final norm; a BandNorm model's "
                        "robustness goes to the solvers")
    head = model.lm_head
    logits = head(residual)
    floors = []
    for c in candidates:
        if c == target:
            continue
        slope = [Fraction(a - b, head.scale) for a, b in zip(head.weight[target],
                                                              head.weight[c], strict=True)]
        margin = logits[target] - logits[c] - epsilon * sum(abs(s) for s in slope)
        eta = tuple(-epsilon if s > 0 else epsilon if s < 0 else Fraction(0) for s in slope)
        floors.append(BallFloor(margin, eta, c))
    return min(floors, key=lambda f: f.margin)


def replayed_margin(model: ExactModel, residual: Sequence[Fraction], eta: Sequence[Fraction],
                    target: int, candidates: Sequence[int]) -> Fraction:
    """logit[target] − the best rival's logit at r_E(x) + η, in exact arithmetic: what a
    counterexample is held to before it is reported."""
    logits = model.lm_head([r + e for r, e in zip(residual, eta, strict=True)])
    return logits[target] - max(logits[c] for c in candidates if c != target)
