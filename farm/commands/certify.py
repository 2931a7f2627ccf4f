"""`farm certify`: assemble, Lean-check and sign a certificate from verify results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from farm.atomic import write_text_atomic
from farm.commands import output_file, task_spec
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.proofs.maxk.strategies import STRATEGIES
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.registry import get_task
from farm.trust.accuracy import certify_accuracy
from farm.trust.certificate import (
    CERTIFICATE_FILE,
    issue,
    lean_check,
    load_verify_results,
    sidecar_path,
)
from farm.trust.lean_export import LakeOutcome, LeanExport
from farm.trust.units import has_units, issue_units, load_unit_results, units_sidecar_path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "certify",
        description="Derive the certificate from the checkpoint (model metadata, SHA-256), its "
                    "exact replay (one row per domain input with its exact margin), the "
                    "circuits and property results of the verify result files (from `farm "
                    "verify --out` or `farm run`, with their per-query records), write the "
                    "query records as a Parquet sidecar, run the Lean checker where `lake` is "
                    "installed, and sign it all (DSSE, Ed25519; subjects: model.safetensors "
                    "and the sidecar). Results that carry unit evidence (`farm verify --out` by "
                    "the screen route, `farm run` on family tasks) give a "
                    "certificate by units instead: the domain by its spec and a streamed "
                    "hash, one sidecar record per unit, no row per input. With --accuracy "
                    "instead of --verify-result: prove certified accuracy lower bounds of a "
                    "Max-of-K model (exact fractions, one per strategy) and sign that claim; "
                    "`farm check` re-derives them.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    claim = p.add_mutually_exclusive_group(required=True)
    claim.add_argument("--verify-result", nargs="+", metavar="JSON",
                       help="result file(s) of `farm verify --out` or `farm run` for this "
                            "checkpoint")
    claim.add_argument("--accuracy", nargs="+", metavar="STRATEGY",
                       choices=list(STRATEGIES),
                       help=f"certify accuracy on --task by these proof strategies "
                            f"({', '.join(STRATEGIES)}; brute_force is the exact accuracy)")
    p.add_argument("--task", type=task_spec, default="max_of_k",
                   help="with --accuracy: the max_of_k task (default %(default)s)")
    p.add_argument("--key", required=True, help="Ed25519 private key (PEM), from `farm keygen`")
    p.add_argument("--out", default=CERTIFICATE_FILE, type=output_file,
                   help="certificate path (default: %(default)s); the query records go beside "
                        "it as <name>.queries.parquet")
    p.add_argument("--no-lean", action="store_true",
                   help="skip the Lean check (recorded as not run)")
    p.add_argument("--lean-timeout", type=float, default=3600.0,
                   help="seconds for `lake build` (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.accuracy:
        return run_accuracy(args)
    if any(has_units(path) for path in args.verify_result):
        return run_units(args)
    work = load_verify_results(args.verify_result)
    sha = load_checkpoint(args.checkpoint).sha256
    if work.checkpoint_sha256 != sha:
        raise FarmError(f"the verify results are for checkpoint {work.checkpoint_sha256}, "
                        f"{args.checkpoint} is {sha}")

    def lean(export: LeanExport) -> LakeOutcome:
        return lean_check(export, args.lean_timeout)

    pred = issue(args.checkpoint, work.circuits, work.results, work.records, args.key,
                 args.out, lean=None if args.no_lean else lean)
    for entry in pred["properties"]:
        print(f"{entry['task']:<14}{entry['property']:<24}{entry['status']}")
    print(f"wrote {args.out} ({len(pred['rows'])} rows, {pred['queries']['records']} query "
          f"records in {sidecar_path(args.out)}); Lean: {pred['lean']['outcome']}")
    return 0


def run_units(args: argparse.Namespace) -> int:
    """Results whose inputs were decided by units (the screen route, `farm run` on family
    tasks): a certificate by units, no row per input."""
    work = load_unit_results(args.verify_result)
    sha = load_checkpoint(args.checkpoint).sha256
    if work.checkpoint_sha256 != sha:
        raise FarmError(f"the verify results are for checkpoint {work.checkpoint_sha256}, "
                        f"{args.checkpoint} is {sha}")
    pred = issue_units(args.checkpoint, work.evidence, work.results, args.key, args.out)
    for entry in pred["properties"]:
        print(f"{entry['task']:<14}{entry['property']:<24}{entry['status']}")
    inputs = sum(t["size"] for t in pred["tasks"])
    print(f"wrote {args.out} ({inputs:,} inputs in {pred['units']['records']} units, recorded "
          f"in {units_sidecar_path(args.out)}); no Lean check for certificates by units")
    return 0


def run_accuracy(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    if not isinstance(task, MaxOfK):
        raise FarmError(f"--accuracy certifies max_of_k tasks; --task is {task.name}")
    envelope, bounds = certify_accuracy(args.checkpoint, task, args.accuracy, args.key)
    write_text_atomic(Path(args.out), json.dumps(envelope, indent=1) + "\n")
    for b in bounds:
        print(f"{b.strategy:<12} accuracy >= {b.correct:,} / {b.total:,} = "
              f"{float(b.accuracy):.6f}  ({b.flops:.3g} FLOPs, {b.seconds:.2f} s)")
    print(f"wrote {args.out}: the signed accuracy claim on {task.name}")
    return 0
