"""Benchmark: exact-rational replay of all 256 domain rows.

    .venv/bin/python scripts/bench_exact.py

Trains the paper-size model (1 and 2 heads, and norm-free) with seed 0, then
times ExactModel.run over the whole domain, best of three, and checks it
against the float64 torch forward. Prints one Markdown table row per config.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, train
from farm.tasks.registry import domain_rows


def main() -> None:
    prompts = [r.prompt for r in domain_rows()]
    print("| config | rows | best of 3 (s) | rows/s | max abs diff vs float64 torch |")
    print("|---|---|---|---|---|")
    for name, cfg in (("1 head", GPTConfig()), ("2 heads", GPTConfig(n_heads=2)),
                      ("norm none", GPTConfig(norm_variant="none"))):
        model = train(cfg, TrainConfig(seed=0), progress=False).model
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        times = []
        for _ in range(3):
            start = time.perf_counter()
            results = ExactModel(cfg, weights).run(prompts)
            times.append(time.perf_counter() - start)
        with torch.no_grad():
            reference = model.double()(torch.tensor(prompts))[:, -1].numpy()
        diff = np.abs(np.array([[float(v) for v in r.logits] for r in results]) - reference).max()
        best = min(times)
        print(f"| {name} | {len(prompts)} | {best:.2f} | {len(prompts) / best:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
