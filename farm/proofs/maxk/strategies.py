"""The proof strategies by name: what a study runs and a signed claim names."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from farm.errors import FarmError
from farm.model.gpt import GPTConfig
from farm.proofs.maxk.bound import AccuracyBound
from farm.proofs.maxk.brute import brute_force
from farm.proofs.maxk.compact import cubic, subcubic
from farm.tasks.max_of_k import MaxOfK

Strategy = Callable[[GPTConfig, Mapping[str, np.ndarray], MaxOfK], AccuracyBound]
STRATEGIES: dict[str, Strategy] = {"brute_force": brute_force, "cubic": cubic,
                                   "subcubic": subcubic}


def prove(strategy: str, config: GPTConfig, weights: Mapping[str, np.ndarray],
          task: MaxOfK) -> AccuracyBound:
    """Run the named strategy, or refuse a name that is none."""
    if strategy not in STRATEGIES:
        raise FarmError(f"unknown Max-of-K proof strategy {strategy!r}; the strategies are "
                        f"{', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](config, weights, task)
