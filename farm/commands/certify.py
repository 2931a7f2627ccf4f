"""`farm certify`: assemble, Lean-check and sign a certificate from verify results."""

from __future__ import annotations

import argparse

from farm.commands import output_file
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
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
                    "the screen route without robustness, `farm run` on family tasks) give a "
                    "certificate by units instead: the domain by its spec and a streamed "
                    "hash, one sidecar record per unit, no row per input.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--verify-result", required=True, nargs="+", metavar="JSON",
                   help="result file(s) of `farm verify --out` or `farm run` for this checkpoint")
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
