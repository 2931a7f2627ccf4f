"""Shared fixtures: trained models are expensive enough to build once per session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.model.train import TrainConfig, TrainResult, train


@contextlib.contextmanager
def embedded_ray(**options: Any) -> Iterator[None]:
    """A real local Ray with this machine's 2 CPUs pinned, shut down afterwards."""
    import ray  # only the tests that start Ray pay for its import

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             **options)
    try:
        yield
    finally:
        ray.shutdown()


def weights_of(model: VerifiableGPT) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def random_model(seed: int = 0, scale: float = 0.3, **cfg) -> VerifiableGPT:
    """An untrained model with weights spread enough to exercise every branch."""
    torch.manual_seed(seed)
    model = VerifiableGPT(GPTConfig(**cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture(scope="session")
def trained() -> TrainResult:
    """The paper-size model trained with the default recipe (a few seconds on CPU)."""
    return train(GPTConfig(), TrainConfig(seed=0), progress=False)


@pytest.fixture(scope="session")
def trained_two_heads() -> TrainResult:
    return train(GPTConfig(n_heads=2), TrainConfig(seed=0), progress=False)
