"""Benchmark: the sound Max-of-K brute force against the paper's float32 torch one.

    .venv/bin/python scripts/bench_maxk.py CHECKPOINT [--task max_of_k]

In one process and one run (so load hits both alike): `farm.proofs.maxk.brute_force`
over the whole domain (16,777,216 inputs for K = 4, vocab 64), then the paper's
baseline, the float32 torch forward over every input in batches with an argmax
(unsound: no error bound, ties broken arbitrarily), then the cubic and subcubic
proofs. Prints one Markdown table row per method, with the load average.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from farm.model.checkpoint import load_checkpoint
from farm.proofs.maxk.brute import brute_force
from farm.proofs.maxk.compact import cubic, subcubic
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.registry import get_task


def torch_forward_accuracy(model: torch.nn.Module, task: MaxOfK, batch: int = 1 << 18
                           ) -> tuple[int, float]:
    """Inputs whose float32 argmax is the target, and the seconds it took."""
    start, right = time.perf_counter(), 0
    domain = task.domain()
    with torch.no_grad():
        for first in range(0, len(domain), batch):
            prompts = domain.batch(first, first + batch)
            logits = model(torch.from_numpy(prompts))[:, -1]
            right += int((logits.argmax(-1).numpy() == task.targets(prompts)).sum())
    return right, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--task", default="max_of_k")
    args = parser.parse_args()
    ckpt, task = load_checkpoint(args.checkpoint), get_task(args.task)
    total = len(task.domain())
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads "
          f"{torch.get_num_threads()}")
    print("| method | correct / total | accuracy | wall s | FLOPs | sound |")
    print("|---|---|---|---|---|---|")
    bound = brute_force(ckpt.config, ckpt.weights, task)
    print(f"| brute force (farm) | {bound.correct:,} / {total:,} (ties {bound.ties}, wrong "
          f"{bound.wrong:,}) | {float(bound.accuracy):.6f} | {bound.seconds:.2f} | "
          f"{bound.flops:.3g} | yes |")
    right, seconds = torch_forward_accuracy(ckpt.to_model(torch.float32).eval(), task)
    print(f"| float32 torch forward (paper's baseline) | {right:,} / {total:,} | "
          f"{right / total:.6f} | {seconds:.2f} | – | no |")
    for strategy in (cubic, subcubic):
        b = strategy(ckpt.config, ckpt.weights, task)
        print(f"| {b.strategy} | {b.correct:,} / {total:,} | {float(b.accuracy):.6f} | "
              f"{b.seconds:.2f} | {b.flops:.3g} | yes |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
