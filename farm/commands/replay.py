"""`farm replay`: replay every domain row of a checkpoint in exact arithmetic."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from farm.atomic import write_text_atomic
from farm.commands import TASK_HELP, output_file, task_spec
from farm.model.checkpoint import load_checkpoint
from farm.model.replay import replay
from farm.tasks.registry import DEFAULT_TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        description="Evaluate the checkpoint on every domain input in exact rational "
                    "arithmetic (float32 weights at their exact binary values) and report per-"
                    "task pass counts, the minimum margin, and the float32 runtime's gap to the "
                    "exact logits. Exit status 1 if any row fails.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), type=task_spec,
                   help=f"tasks whose domain rows are replayed, each {TASK_HELP} "
                        "(default: %(default)s)")
    p.add_argument("--json", dest="json_out", type=output_file,
                   help="also write per-row exact margins here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    start = time.perf_counter()
    report = replay(ckpt, args.tasks)
    seconds = time.perf_counter() - start
    print(f"exact replay of {len(report.rows)} rows in {seconds:.2f} s "
          f"(checkpoint sha256 {ckpt.sha256[:16]}…)")
    print(f"{'task':<14}{'passed':>10}{'min margin':>14}")
    for s in report.by_task():
        print(f"{s.task:<14}{f'{s.passed}/{s.total}':>10}{float(s.min_margin):>14.6f}")
    print(f"minimum margin {float(report.min_margin):.6f} (exact rational in --json); "
          f"float32 runtime within {report.float32_gap:.2e} of the exact logits")
    if args.json_out:
        rows = [{"index": r.row.index, "task": r.row.task.name, "prompt": list(r.row.prompt),
                 "target": r.row.target, "alternate": r.row.alternate,
                 "margin": str(r.margin), "margin_float": float(r.margin)} for r in report.rows]
        write_text_atomic(Path(args.json_out), json.dumps(rows, indent=1) + "\n")
    return 0 if report.all_passed else 1
