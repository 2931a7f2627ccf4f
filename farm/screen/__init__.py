"""The sound batched screen: concrete inputs decided by interval evaluation, not SMT.

For a concrete prompt a circuit's decision is a ground computation (SCALE principle
1), so one SMT query per input only re-does exact arithmetic. The screen evaluates
a model or circuit over a batch of prompts (numpy, float64, vectorised over the
batch, each distinct causal prefix once) and returns for every prompt an interval
that provably contains the exact margin `ExactModel` computes. Inputs whose
interval excludes 0 are decided; the rest go to the exact evaluator.

Why midpoint–radius float64 intervals (not exact integers, not plain float64):
exact arithmetic costs a Python object per number, and plain float64 has no
guarantee near a tie; a radius that carries both the input uncertainty and a
rigorous bound on every rounding (γ_n for dot products in any summation order)
costs about two extra matrix products per layer and is as fast as BLAS allows.
Piecewise operators: LeakyReLU is 1-Lipschitz and monotone; sparsemax's
threshold is monotone in every score and bounded from its residual; BandNorm's
branches are discontinuous, so it is evaluated on the midpoint's branch and an
input is not decisive unless every branch decision holds over its whole box.

Robustness (SPEC §4) needs no solver where the margin's floor over the ε-ball of
the final residual is positive (`ball`): BandNorm is piecewise affine, and where
it is also continuous on the ball's box (no lift) the margin falls at most by ε
times a bound on every piece's gradient. The other inputs go to the solver.

The standard model (softmax, LayerNorm, GELU) has no exact evaluator; `standard`
screens it with the sound interval extensions of `smooth` (a stated, tested bound
on exp and erf), and an input it leaves undecided stays undecided.

Layering: `farm.screen` may import `farm.model`, `farm.tasks` and `farm.errors`
only (pyproject's import-linter contract); verification and certificates import it.
"""

from farm.screen.forward import Prefixes, Screen, ScreenResult, screen

__all__ = ["Prefixes", "Screen", "ScreenResult", "screen"]
