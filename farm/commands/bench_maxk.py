"""`farm bench maxk`: the Max-of-K study, every proof strategy on every trained seed."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from farm.commands import output_dir, positive_float, positive_int, task_spec
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.proofs.maxk.strategies import STRATEGIES
from farm.proofs.maxk.study import StudyModel, study
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.registry import get_task


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "maxk", help="certified accuracy of Max-of-K models: every strategy, every seed",
        description="Train --seeds Max-of-K models (one layer, one softmax head, "
                    "attention-only, no norm, no biases; minibatches over the streamed "
                    "domain) and/or take --checkpoint models, run every proof strategy on "
                    "each (brute_force: the exact accuracy; cubic and subcubic: compact "
                    "lower bounds), and write maxk_study.csv, maxk_study.md (strategy, "
                    "bound, FLOPs, wall seconds) and maxk_study.png (bound against FLOPs).")
    p.add_argument("--task", type=task_spec, default="max_of_k:k=4,vocab=32",
                   help="a max_of_k task (default %(default)s)")
    p.add_argument("--seeds", type=int, default=8,
                   help="train this many seeds, from --first-seed on (default %(default)s; "
                        "0: none)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds run from this one (default %(default)s)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="also prove this checkpoint directory (repeatable)")
    p.add_argument("--width", type=positive_int, default=32, help="d_model (default 32)")
    p.add_argument("--steps", type=positive_int, default=1000,
                   help="training steps per seed (default %(default)s)")
    p.add_argument("--batch", type=positive_int, default=1024,
                   help="training minibatch (default %(default)s)")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="learning rate")
    p.add_argument("--strategies", nargs="+", choices=list(STRATEGIES),
                   default=list(STRATEGIES), help="proof strategies (default: all)")
    p.add_argument("--out", required=True, type=output_dir, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    if not isinstance(task, MaxOfK):
        raise FarmError(f"--task must be a max_of_k task, not {task.name}")
    if args.seeds < 0:
        raise FarmError("--seeds must be 0 or more")
    rows = study(task, Path(args.out), range(args.first_seed, args.first_seed + args.seeds),
                 StudyModel(args.width, args.steps, args.lr, args.batch),
                 [load_checkpoint(c) for c in args.checkpoint], args.strategies)
    print(f"{task.name} on {platform.node()}: {len(rows)} proofs -> {args.out}/maxk_study.md")
    print((Path(args.out) / "maxk_study.md").read_text(), end="")
    return 0
