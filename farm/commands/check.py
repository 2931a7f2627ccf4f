"""`farm check`: verify a certificate and re-derive every claim it makes: a signed one
(DSSE), or an induction-head certificate (one NFP file, or a folder of them)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.proofs.induction.check import Mismatch
from farm.proofs.induction.domain import check_path, is_induction_certificate
from farm.trust.accuracy import ACCURACY_PREDICATE_TYPE, check_accuracy
from farm.trust.certificate import check_certificate
from farm.trust.distilled import DISTILLED_PREDICATE_TYPE, check_distillation, predicate_type_of
from farm.trust.units import UNITS_PREDICATE_TYPE, check_units_certificate


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        description="Verify the DSSE/Ed25519 signature against PUBKEY, then re-derive what the "
                    "certificate claims from the checkpoint: its SHA-256 (against the "
                    "certificate and the DSSE subject), tensor names and shapes, the canonical "
                    "rows with targets, alternates and candidate tokens, every margin by exact "
                    "replay (positive, and equal to the certificate's), and the property "
                    "counts against the rows, circuits and the per-query records (whose "
                    "sidecar hash is checked). Exit status 0 only if everything checks; 1 "
                    "with every problem named; 2 if the certificate cannot be read or its "
                    "signature does not verify. A signed accuracy claim (farm certify "
                    "--accuracy) is re-derived instead: every strategy it names is run again "
                    "on the checkpoint, and a bound above what it derives is rejected. "
                    "Given an induction certificate (a folder "
                    "`farm induction certify` wrote, or one of its .cert files; no signature, "
                    "--checkpoint required), recompute every score, weight, bound, value, "
                    "copying bound and decision margin from the checkpoint, and the batch's "
                    "aggregate gates from the items: 1 naming the first entry that differs.")
    p.add_argument("certificate",
                   help="certificate.dsse.json, or an induction certificate folder or file")
    p.add_argument("--pubkey", help="Ed25519 public key (PEM) of the signer (signed "
                                    "certificates)")
    p.add_argument("--checkpoint",
                   help="checkpoint directory (default: the path the certificate records, "
                        "relative to it)")
    p.add_argument("--circuit",
                   help="for a signed distilled program (farm distill --sign): the circuit "
                        "file (default: the path its record gives)")
    p.add_argument("--require-lean", action="store_true",
                   help="also fail unless the recorded Lean check outcome is ok")
    p.add_argument("--require-verified", action="store_true",
                   help="also fail unless every property the certificate states is VERIFIED "
                        "(without it, a faithful certificate of a FAILED or UNKNOWN property "
                        "checks OK: the gate for CI)")
    p.set_defaults(func=run)


def made_with(pred: Mapping[str, Any]) -> str:
    """The solver, Ray and torch versions the signer recorded: to rerun its queries with the
    same tools (signed, not re-derived: a checker cannot know what ran elsewhere)."""
    software = pred.get("software")
    if not isinstance(software, Mapping):
        return "made with: not recorded"
    names = ("z3", "cvc5", "ray", "torch", "python", "farm_git_revision")
    return "made with: " + ", ".join(f"{n} {software[n]}" for n in names if n in software)


def rejected(path: str, problems: list[str]) -> int:
    """Name every problem; the exit status of a rejected certificate."""
    print(f"REJECTED {path}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  {problem}")
    return 1


def run(args: argparse.Namespace) -> int:
    if not Path(args.certificate).exists():
        raise FarmError(f"{args.certificate} does not exist")
    if is_induction_certificate(Path(args.certificate)):
        return run_induction(args)
    if args.pubkey is None:
        raise FarmError(f"{args.certificate}: a signed certificate needs --pubkey")
    kind = predicate_type_of(args.certificate)
    if kind == DISTILLED_PREDICATE_TYPE:
        return run_distilled(args)
    if kind == UNITS_PREDICATE_TYPE:
        return run_units(args)
    if kind == ACCURACY_PREDICATE_TYPE:
        return run_accuracy(args)
    report = check_certificate(args.certificate, args.pubkey, args.checkpoint,
                               args.require_lean, args.require_verified)
    pred = report.predicate
    if not report.ok:
        rejected(args.certificate, report.problems)
        print(f"  {made_with(pred)}")
        return 1
    verdicts = ", ".join(f"{p['property']}/{p['task']} {p['status']}"
                         + (f" at ε = {p['epsilon']}" if "epsilon" in p else "")
                         for p in pred["properties"]) or "no properties"
    print(f"OK {args.certificate}: signature valid; checkpoint {pred['checkpoint']['sha256'][:16]}…"
          f"; {len(pred['rows'])} rows re-derived, exact margins equal (minimum "
          f"{pred['replay']['min_margin_float']:.6g}); {pred['queries']['records']} query "
          f"records; {verdicts}; Lean: {pred['lean']['outcome']}")
    print(f"  {made_with(pred)}")
    return 0


def run_distilled(args: argparse.Namespace) -> int:
    """A signed distilled program: the signature, its subjects, and the record re-derived
    (the program held to the circuit on the whole domain again)."""
    report = check_distillation(args.certificate, args.pubkey, args.checkpoint, args.circuit)
    record = report.record
    if not report.ok:
        return rejected(args.certificate, report.problems)
    print(f"OK {args.certificate}: signature valid; checkpoint "
          f"{record['checkpoint_sha256'][:16]}…; the program (size {record['program']['size']}) "
          f"agrees with the circuit on all {record['evidence']['domain']:,} inputs of "
          f"{record['task']}, re-derived; every counterexample replays")
    return 0


def run_units(args: argparse.Namespace) -> int:
    """A certificate by units: every unit decided again (screen, exact where it is not
    decisive), the cover, the folded properties and every witness re-derived."""
    with tqdm(desc="re-deriving units", unit="in", dynamic_ncols=True, leave=False) as bar:
        report = check_units_certificate(args.certificate, args.pubkey, args.checkpoint,
                                         args.require_verified, on_unit=bar.update)
    pred = report.predicate
    if not report.ok:
        return rejected(args.certificate, report.problems)
    n = report.rederived
    verdicts = ", ".join(f"{p['property']}/{p['task']} {p['status']}" for p in pred["properties"])
    print(f"OK {args.certificate}: signature valid; checkpoint {pred['checkpoint']['sha256'][:16]}…"
          f"; re-derived: each domain's streamed sha256, {n['units']} units covering "
          f"{n['inputs']:,} inputs exactly once, every unit's decisions (screen, exact where "
          f"the screen is not decisive), "
          + (f"the ball bound's robustness decisions, {n['robustness queries']} robustness "
             "queries planned again (hash) and every counterexample replayed, "
             if any(p["property"] == "robustness" for p in pred["properties"]) else "")
          + f"the folded properties, {n['witnesses']} witnesses by exact runs; {verdicts}")
    print("  taken on the signature alone: " + "; ".join(report.trusted))
    print(f"  {made_with(pred)}")
    return 0


def run_accuracy(args: argparse.Namespace) -> int:
    """A signed accuracy claim: the signature, its checkpoint, every bound re-derived."""
    report = check_accuracy(args.certificate, args.pubkey, args.checkpoint)
    claim = report.claim
    if not report.ok:
        return rejected(args.certificate, report.problems)
    claimed = {e["strategy"]: e for e in claim["bounds"]}
    print(f"OK {args.certificate}: signature valid; checkpoint "
          f"{claim['checkpoint_sha256'][:16]}…; {claim['task']}: "
          + "; ".join(f"{b.strategy} claims {claimed[b.strategy]['correct']:,} ≤ re-derived "
                      f"{b.correct:,} of {b.total:,} ({float(b.accuracy):.6f})"
                      for b in report.derived))
    return 0


def run_induction(args: argparse.Namespace) -> int:
    """An induction certificate: every number re-derived from the checkpoint."""
    if args.checkpoint is None:
        raise FarmError("an induction certificate names its checkpoint by hash only: give "
                        "--checkpoint")
    try:
        summary = check_path(load_checkpoint(args.checkpoint), Path(args.certificate))
    except Mismatch as err:
        print(f"REJECTED {args.certificate}: {err}")
        return 1
    print(f"OK {args.certificate}: every number of {summary.prompts} induction "
          f"certificate(s) for {summary.head} on {summary.task} re-derived from checkpoint "
          f"{summary.checkpoint[:16]}…; {summary.certified} certified (stripe, copying and "
          f"decision), min score margin {float(summary.min_margin):.4g}, max eps "
          f"{float(summary.max_eps):.4g}, min copying bound {float(summary.min_copy):.4g}")
    return 0
