"""`farm maxk brute`: a Max-of-K brute force as resumable units across Ray actors."""

from __future__ import annotations

import argparse
import time

from farm.commands import output_file, positive_int, task_spec
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.registry import get_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "maxk", help="Max-of-K accuracy proofs on the farm",
        description="Max-of-K certified accuracy on Ray (the study of every strategy is "
                    "`farm bench maxk`; a signed claim is `farm certify --accuracy`).")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = sub.add_parser(
        "brute", help="the exact accuracy, every input decided, as units across Ray actors",
        description="Decide every input of a max_of_k task soundly (float64 path tables with "
                    "rigorous error bounds, the doubtful inputs exactly) in units of (query, "
                    "maximum) pairs across --ray actors. Each unit's tally is appended to "
                    "--journal as it arrives; rerun the same command after a kill and only "
                    "the units the journal lacks are decided again, none counted twice. Uses "
                    "RAY_ADDRESS's cluster, or starts an embedded Ray with --ray CPUs.")
    q.add_argument("--checkpoint", required=True, help="checkpoint directory")
    q.add_argument("--task", type=task_spec, default="max_of_k",
                   help="the max_of_k task (default %(default)s)")
    q.add_argument("--ray", type=positive_int, default=2, metavar="N",
                   help="brute-force actors, one CPU each (default %(default)s)")
    q.add_argument("--journal", required=True, type=output_file,
                   help="the per-unit journal (JSON lines): created, or resumed from")
    q.add_argument("--units", type=positive_int, default=64, metavar="N",
                   help="cut the domain into about N units of (query, maximum) pairs with "
                        "about equal prompts each (default %(default)s; at most "
                        "vocab·(vocab+1)/2): more units spread over more actors")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=run_brute)


def run_brute(args: argparse.Namespace) -> int:
    from actors.maxk import brute_force_on_ray, start_actors
    from farm.commands.run import connect

    task = get_task(args.task)
    if not isinstance(task, MaxOfK):
        raise FarmError(f"--task must be a max_of_k task, not {task.name}")
    ckpt = load_checkpoint(args.checkpoint)
    connect(args.ray)
    started = time.perf_counter()
    pool = start_actors(ckpt, task, args.ray)
    started = time.perf_counter() - started
    run = brute_force_on_ray(pool, ckpt, task, args.journal, args.units,
                             progress=not args.quiet)
    b = run.bound
    print(f"{task.name}: accuracy = {b.correct:,} / {b.total:,} = {float(b.accuracy):.6f} "
          f"exactly (ties {b.ties:,}, wrong {b.wrong:,}); {run.units} units, "
          f"{run.resumed} from the journal; {b.seconds:.2f} s on {args.ray} actor(s) "
          f"(after {started:.1f} s to start them), "
          f"{b.flops:.3g} FLOPs; peak memory ≤ {run.peak_rss / 2 ** 30:.2f} GiB "
          "(driver and actors, summed)")
    return 0
