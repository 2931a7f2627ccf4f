"""Trainer/tracer actor: the GPU-shaped stage of a job (train, ACDC, exact traces).

It takes a GPU when the cluster has one (training and ACDC's batched forwards
use CUDA there) and one CPU otherwise. Values cross the actor boundary as plain
config + numpy weights: the driver rebuilds the `Checkpoint`, which recomputes
the SHA-256, so an identity is never taken on trust from a remote process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from farm.discovery.acdc import Extraction, extract
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.tracing import traces_table
from farm.model.train import TrainConfig, train

TRACE_BATCH = 32  # prompts per exact run: progress granularity, prefixes shared within it


class Trainer:
    def train(self, model_cfg: GPTConfig, cfg: TrainConfig
              ) -> tuple[GPTConfig, dict[str, np.ndarray], dict[str, Any]]:
        result = train(model_cfg, cfg, progress=False)
        ckpt = Checkpoint.from_model(result.model)
        info = {"steps": result.steps, "min_margin_float32": result.min_margin,
                "accuracy": result.accuracy}
        return ckpt.config, dict(ckpt.weights), info

    def extract(self, config: GPTConfig, weights: dict[str, np.ndarray], task: str
                ) -> Extraction:
        ckpt = Checkpoint(config, weights)
        found = extract(ckpt.to_model(), task)
        meta = {**found.circuit.metadata, "checkpoint_sha256": ckpt.sha256}
        return replace(found, circuit=replace(found.circuit, metadata=meta))

    def trace(self, config: GPTConfig, weights: dict[str, np.ndarray], circuit: Circuit,
              prompts: Sequence[tuple[int, ...]]) -> pa.Table:
        """Exact branch traces of `prompts` under `circuit`, one `farm.model.tracing` table.

        The table names the SHA-256 of the weights actually run here; the driver
        checks it against its own checkpoint when it reads the file back.
        """
        ckpt = Checkpoint(config, weights)
        model = ExactModel(ckpt.config, ckpt.weights)
        rows = [row for start in range(0, len(prompts), TRACE_BATCH)
                for row in model.run(prompts[start:start + TRACE_BATCH], circuit)]
        return traces_table(rows, circuit, ckpt.sha256)


def trainer_actor() -> Any:
    """One trainer, on a GPU if the cluster offers any."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return ray.remote(Trainer).options(num_gpus=gpus, num_cpus=0 if gpus else 1).remote()
