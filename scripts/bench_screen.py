"""Benchmark: the sound batched screen (farm.screen) over a task family's domain.

    .venv/bin/python scripts/bench_screen.py --task quote_close:len=10,fillers=8 --limit 1048576

Screens the first --limit prompts of the domain (all of it by default) in batches of
--batch consecutive indices, on the model of --checkpoint or, without one, on a
random paper-size model sized to the task (weights N(0, --scale²) added to torch's
initialisation, seed --seed: throughput does not depend on training, the fraction
not decisive does). Prints inputs per second, the fraction not decisive, the widest
decisive interval and the peak resident memory of the process; with --epsilon, also
how many inputs the screen proves robust on the ε-ball of the final residual.

OpenBLAS runs single-threaded unless OPENBLAS_NUM_THREADS says otherwise: the
screen's matrix products are tiny ([rows, 16] @ [16, 64]), and on a 2-core machine
OpenBLAS's spinning worker threads take the core the numpy element-wise work needs
(measured 12.4k → 21.7k inputs/s from this alone).
"""

from __future__ import annotations

import argparse
import os
import resource
from fractions import Fraction

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import torch

from farm.model.checkpoint import Checkpoint, load_checkpoint
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.screen.sweep import sweep
from farm.tasks.registry import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="quote_close:len=10,fillers=8", help="task spec")
    parser.add_argument("--checkpoint", help="a checkpoint directory (default: random model)")
    parser.add_argument("--limit", type=int, default=None, help="screen only this many prompts")
    parser.add_argument("--batch", type=int, default=16384, help="prompts per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=0.1, help="random weights' spread")
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes, each screening whole batches")
    parser.add_argument("--epsilon", type=Fraction, default=None,
                        help="also prove robustness on this ε-ball (e.g. 0.01)")
    args = parser.parse_args()

    task = get_task(args.task)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        model = VerifiableGPT(GPTConfig(seq_len=task.seq_len))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * args.scale)
        ckpt = Checkpoint.from_model(model)
    found = sweep(ckpt, task, batch=args.batch, limit=args.limit, epsilon=args.epsilon,
                  processes=args.processes)
    peak_mib = max(resource.getrusage(who).ru_maxrss  # the largest process's
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    model = "checkpoint " + args.checkpoint if args.checkpoint else "random model"
    print(f"task {task.name}: {found.screened:,} of {found.domain:,} prompts, batch "
          f"{args.batch}, {args.processes} process(es), {model}")
    print(f"{found.seconds:.1f} s, {found.rate:,.0f} inputs/s; not decisive "
          f"{found.not_decisive} ({found.not_decisive / found.screened:.2e}); decided correct "
          f"{found.correct}; widest decisive interval {found.widest:.2e}; peak RSS "
          f"{peak_mib:,.0f} MiB")
    if args.epsilon is not None:
        print(f"robust at epsilon {args.epsilon}: {found.robust} of {found.correct} decided "
              f"correct ({found.robust / max(found.correct, 1):.4f})")


if __name__ == "__main__":
    main()
