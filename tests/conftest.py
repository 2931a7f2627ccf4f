"""Shared fixtures: trained models are expensive enough to build once per session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from farm.discovery.acdc import extract
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
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


@pytest.fixture(scope="module")
def ckpt(trained: TrainResult) -> Checkpoint:
    """The trained model as a checkpoint (modules that need another define their own)."""
    return Checkpoint.from_model(trained.model)


@pytest.fixture(scope="module")
def circuit(trained: TrainResult) -> Circuit:
    """The trained model's quote_close circuit, as `farm extract` finds it."""
    return extract(trained.model, "quote_close").circuit


@pytest.fixture(scope="session")
def trained_two_heads() -> TrainResult:
    return train(GPTConfig(n_heads=2), TrainConfig(seed=0), progress=False)


INDUCTION_SMALL = "induction:vocab=4,period=3"  # 64 prompts, four candidates


@pytest.fixture(scope="session")
def induction_circuit(tmp_path_factory) -> tuple[Path, Path]:
    """An attention-only sparsemax model of INDUCTION_SMALL (`farm train`: 2 layers of 2
    heads, no norm, no biases) and its head-granularity circuit (`farm extract`):
    (checkpoint dir, circuit.json)."""
    from farm.cli import main

    root = tmp_path_factory.mktemp("induction")
    assert main(["train", "--tasks", INDUCTION_SMALL, "--norm", "none", "--mlp", "0",
                 "--width", "16", "--heads", "2", "--margin", "2", "--no-attn-bias",
                 "--no-unembed-bias", "--out", str(root / "ckpt")]) == 0
    assert main(["extract", "--checkpoint", str(root / "ckpt"), "--task", INDUCTION_SMALL,
                 "--granularity", "head", "--out", str(root / "circuit"), "--quiet",
                 "--device", "cpu"]) == 0
    return root / "ckpt", root / "circuit" / "circuit.json"
