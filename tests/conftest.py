"""Shared fixtures: trained models are expensive enough to build once per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.cache import Record
from encoders.properties import PlannedQuery, Planner
from farm.acdc import extract
from farm.checkpoint import Checkpoint
from farm.circuits import Circuit
from farm.exact import ExactModel
from farm.model import GPTConfig, VerifiableGPT
from farm.tasks import get_task
from farm.train import TrainConfig, TrainResult, train
from farm.verify import LocalFarm


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


@pytest.fixture(scope="session")
def ckpt(trained) -> Checkpoint:
    return Checkpoint.from_model(trained.model)


@pytest.fixture(scope="session")
def quote_circuit(trained) -> Circuit:
    """quote_close's ACDC circuit on the trained model: the farm tests' workload."""
    return extract(trained.model, "quote_close").circuit


@pytest.fixture(scope="session")
def quote_planner(ckpt, quote_circuit) -> Planner:
    return Planner(ExactModel(ckpt.config, ckpt.weights), quote_circuit, get_task("quote_close"))


def solve_locally(planned: list[PlannedQuery]) -> dict[str, Record]:
    """The Ray-free answers (LocalFarm, z3) that the farm's answers are held to."""
    with LocalFarm("z3", 60, jobs=1) as local:
        records = local.solve(planned)
    assert all(r.status != "error" for r in records.values()), [
        r.reason for r in records.values()]
    return records
