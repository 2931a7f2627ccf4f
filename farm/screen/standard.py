"""The screen of the standard model: softmax attention, LayerNorm, GELU.

The same batched interval forward as `Screen` (circuit routing, prefixes, margins),
with the three standard operators swapped in from `smooth`. There is no exact
evaluator behind it: an input whose margin interval contains 0 stays undecided, and
a caller must say so rather than guess. Robustness over an ε-ball needs the ball
bound of BandNorm, so it is not offered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.model.gpt import GPTConfig
from farm.screen.forward import Screen, ScreenResult
from farm.screen.interval import Iv
from farm.screen.smooth import gelu, layer_norm, softmax


class StandardScreen(Screen):
    """Sound margin intervals of a standard model's circuit (any mix of the standard
    and the piecewise-linear operators)."""

    def _require_variant(self, config: GPTConfig) -> None:
        if config.is_piecewise_linear:
            raise FarmError("this model is exact-verifiable: use the screen (farm.screen."
                            "Screen), which has an exact evaluator behind it")
        if config.norm_variant == "signed_l1_band_norm":
            raise FarmError("the standard screen takes LayerNorm or no norm, not BandNorm")

    def _norm(self, key: str, x: Iv, ok: np.ndarray) -> Iv:
        if key not in self.norms:
            return x
        return layer_norm(x, *self.norms[key])

    def _pattern(self, scores: Iv, mask: np.ndarray) -> Iv:
        if self.cfg.attn_variant == "softmax":
            return softmax(scores, mask)
        return super()._pattern(scores, mask)

    def _activate(self, x: Iv) -> Iv:
        if self.cfg.activation == "gelu":
            return gelu(x)
        return super()._activate(x)

    def run(self, prompts: np.ndarray, targets: np.ndarray, candidates: Sequence[int],
            epsilon: Fraction | None = None) -> ScreenResult:
        if epsilon is not None:
            raise FarmError("robustness over an ε-ball is not bounded for the standard model")
        return super().run(prompts, targets, candidates)
