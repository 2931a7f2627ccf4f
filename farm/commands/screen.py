"""`farm screen`: a task's domain through the sound batched screen."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from farm.commands import TASK_HELP, nonnegative_fraction, positive_int, task_spec
from farm.model.checkpoint import load_checkpoint
from farm.screen.sweep import sweep
from farm.tasks.registry import get_task
from farm.verify.local import resolve_circuit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "screen", help="decide a task's inputs by sound interval evaluation, no solver",
        description="Evaluate the checkpoint (or a circuit of it) on every input of a task's "
                    "domain with the sound batched screen: float64 intervals with rigorous "
                    "rounding bounds, each guaranteed to contain the input's exact margin. "
                    "Reports how many inputs are certainly decided as the task's program "
                    "decides, how many certainly not (with the first of them), and how many "
                    "the screen cannot decide (those need the exact evaluator: farm replay, "
                    "farm verify). With --epsilon, also counts the inputs proved robust: the "
                    "final norm and lm_head decide the target on r_E(x) + η for every "
                    "‖η‖∞ ≤ ε (SPEC §4); the rest need the solver (farm verify --properties "
                    "rob). Domains of millions of inputs are streamed batch by batch. "
                    "Exit status 1 if any input is decided wrongly or left undecided (not for "
                    "robustness the screen could not prove).")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--task", required=True, type=task_spec, help=TASK_HELP)
    p.add_argument("--circuit", default="full",
                   help="circuit.json (farm extract), or 'full' for the model (default)")
    p.add_argument("--limit", type=positive_int,
                   help="screen only the first LIMIT inputs of the domain, in canonical order")
    p.add_argument("--batch", type=positive_int, default=16384,
                   help="inputs per batch (default %(default)s); memory grows with it")
    p.add_argument("--epsilon", type=nonnegative_fraction,
                   help="also prove robustness on the ε-ball (∞-norm) of the final residual, "
                        "ε read as an exact decimal or fraction, e.g. 0.01")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="worker processes screening batches side by side, at most one per "
                        "core; each takes seconds to start, so for domains of millions "
                        "(default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    task = get_task(args.task)
    circuit = resolve_circuit(args.circuit, ckpt, task.name)
    total = min(len(task.domain()), args.limit or len(task.domain()))
    with tqdm(total=total, desc=f"screen {task.name}", unit="in", disable=args.quiet,
              leave=False) as bar:
        found = sweep(ckpt, task, circuit, args.batch, args.limit, bar.update, args.epsilon,
                      args.processes)
    print(f"screened {found.screened:,} of {found.domain:,} inputs of {task.name} in "
          f"{found.seconds:.1f} s ({found.rate:,.0f} inputs/s), circuit {args.circuit}")
    print(f"decided correctly {found.correct:,}; wrongly {found.wrong:,}; "
          f"not decisive {found.not_decisive:,}; widest decisive interval {found.widest:.3g}")
    if found.epsilon is not None:
        print(f"robust at epsilon {found.epsilon}: {found.robust:,} proved; "
              f"{found.correct - found.robust:,} decided correctly but not proved (the solver's)")
    for name, indices in (("wrongly decided", found.wrong_at), ("not decisive", found.undecided),
                          ("not proved robust", found.not_robust_at)):
        if indices:
            print(f"first {name}: " + ", ".join(map(str, indices[:10])))
    return 0 if found.correct == found.screened else 1
