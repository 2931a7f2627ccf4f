"""Signed accuracy claims: certified lower bounds on a Max-of-K model's accuracy.

A claim names the task, the checkpoint (its SHA-256; its weights file is the DSSE
subject) and, per proof strategy, the exact fraction correct/total that strategy
proved. Every strategy is deterministic and reads nothing but the checkpoint, so the
checker re-runs each one named (the brute force over the whole domain, the compact
proofs from the path tables) and accepts a claimed bound only if it is at most what it
re-derives. The signature says who claims the bound; the re-derivation, that it holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from farm.errors import FarmError
from farm.model.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint
from farm.proofs.maxk.bound import AccuracyBound
from farm.proofs.maxk.strategies import STRATEGIES, prove
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.registry import get_task
from farm.trust.certificate import model_metadata, read_envelope
from farm.trust.signing import file_subject, sign_statement, verify_statement

ACCURACY_PREDICATE_TYPE = "https://verification-farm.dev/accuracy-bound/v1"
FORMAT = "farm.maxk-accuracy/1"
CLAIM = ("for each strategy: at least `correct` of the task's `total` inputs are classified "
         "correctly in exact arithmetic (the target's logit strictly above every other "
         "candidate's), so the accuracy is at least the fraction `bound`")


def accuracy_claim(ckpt: Checkpoint, checkpoint_dir: str | os.PathLike[str], task: MaxOfK,
                   bounds: Sequence[AccuracyBound]) -> dict[str, Any]:
    """The predicate: the bounds of one checkpoint on one task, each an exact fraction."""
    if not bounds:
        raise FarmError("an accuracy claim needs at least one strategy's bound")
    entries = []
    for b in bounds:
        if b.task != task.name:
            raise FarmError(f"a bound on {b.task} cannot be claimed for {task.name}")
        entry: dict[str, Any] = {"strategy": b.strategy, "bound": str(b.accuracy),
                                 "correct": b.correct, "total": b.total, "flops": b.flops,
                                 "seconds": round(b.seconds, 3)}
        if b.ties is not None:
            entry |= {"ties": b.ties, "wrong": b.wrong}
        entries.append(entry)
    return {"format": FORMAT, "task": task.name, "claim": CLAIM,
            "checkpoint_sha256": ckpt.sha256, "checkpoint_path": str(checkpoint_dir),
            "model": model_metadata(ckpt), "bounds": entries}


def certify_accuracy(checkpoint_dir: str | os.PathLike[str], task: MaxOfK,
                     strategies: Sequence[str], private_key: str | os.PathLike[str]
                     ) -> tuple[dict[str, Any], list[AccuracyBound]]:
    """Prove each strategy's bound and sign the claim: the DSSE envelope and the bounds."""
    ckpt = load_checkpoint(checkpoint_dir)
    bounds = [prove(s, ckpt.config, ckpt.weights, task) for s in dict.fromkeys(strategies)]
    claim = accuracy_claim(ckpt, checkpoint_dir, task, bounds)
    subjects = [file_subject(Path(checkpoint_dir) / WEIGHTS_FILE)]
    return sign_statement(claim, subjects, private_key, ACCURACY_PREDICATE_TYPE), bounds


@dataclass(frozen=True)
class AccuracyReport:
    claim: dict[str, Any]
    derived: list[AccuracyBound]  # re-derived, one per strategy the claim names
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_accuracy(path: str | os.PathLike[str], public_key: str | os.PathLike[str],
                   checkpoint_dir: str | os.PathLike[str] | None = None) -> AccuracyReport:
    """Verify the signature and that the checkpoint is the signed one, then re-run every
    strategy the claim names; each problem is named. The checkpoint defaults to the
    path the claim records."""
    statement = verify_statement(read_envelope(path, "accuracy claim"), public_key,
                                 ACCURACY_PREDICATE_TYPE)
    claim = statement["predicate"]
    try:
        checkpoint_dir = checkpoint_dir or claim["checkpoint_path"]
        task = get_task(claim["task"])
        entries = list(claim["bounds"])
    except (KeyError, TypeError) as err:
        raise FarmError(f"malformed accuracy claim in {path}: missing {err}") from None
    if not isinstance(task, MaxOfK):
        raise FarmError(f"accuracy claim {path} is about {task.name}, not a max_of_k task")
    signed = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    weights_file = Path(checkpoint_dir) / WEIGHTS_FILE
    if file_subject(weights_file)["digest"]["sha256"] != signed.get(WEIGHTS_FILE):
        # re-deriving on another model would say nothing of the signed one
        return AccuracyReport(claim, [], [f"{weights_file} is not the signed {WEIGHTS_FILE}"])
    ckpt = load_checkpoint(checkpoint_dir)
    problems = [] if ckpt.sha256 == claim.get("checkpoint_sha256") else [
        f"the claim names checkpoint {claim.get('checkpoint_sha256')}, its signed weights "
        f"belong to {ckpt.sha256}"]
    if json.loads(json.dumps(model_metadata(ckpt))) != claim.get("model"):
        # the weights alone do not say which model was proved (softmax or sparsemax…)
        return AccuracyReport(claim, [], problems + [
            "the checkpoint's config (attention, norm, shapes) is not the signed model's"])
    if not entries:
        problems.append("the claim states no bound")
    derived = []
    for entry in entries:
        claimed = _claimed(entry, len(task.domain()))
        if isinstance(claimed, str):
            problems.append(claimed)
            continue
        bound = prove(entry["strategy"], ckpt.config, ckpt.weights, task)
        derived.append(bound)
        problems += _compare(entry, claimed, bound)
    return AccuracyReport(claim, derived, problems)


def _claimed(entry: Any, total: int) -> Fraction | str:
    """The claimed bound as an exact fraction, or what is wrong with the entry."""
    if not isinstance(entry, Mapping) or entry.get("strategy") not in STRATEGIES:
        name = entry.get("strategy") if isinstance(entry, Mapping) else entry
        return f"unknown strategy {name!r} (the strategies are {', '.join(STRATEGIES)})"
    strategy, correct = entry["strategy"], entry.get("correct")
    if entry.get("total") != total:
        return f"{strategy}: total {entry.get('total')!r} is not the domain's {total:,} inputs"
    if not isinstance(correct, int) or isinstance(correct, bool) or not 0 <= correct <= total:
        return f"{strategy}: correct {correct!r} is not a count of inputs"
    try:
        bound = Fraction(str(entry.get("bound")))
    except (ValueError, ZeroDivisionError):
        return f"{strategy}: bound {entry.get('bound')!r} is not an exact fraction"
    if bound != Fraction(correct, total):
        return f"{strategy}: bound {bound} is not correct/total = {Fraction(correct, total)}"
    return bound


def _compare(entry: Mapping[str, Any], claimed: Fraction, bound: AccuracyBound) -> list[str]:
    strategy, problems = entry["strategy"], []
    if claimed > bound.accuracy:
        problems.append(f"{strategy}: claims {entry['correct']:,} / {bound.total:,} correct "
                        f"({float(claimed):.6f}), above the {bound.correct:,} "
                        f"({float(bound.accuracy):.6f}) it re-derives")
    for field in ("ties", "wrong"):  # the brute force's exact counts, if claimed
        if field in entry and entry[field] != getattr(bound, field):
            problems.append(f"{strategy}: claims {field} {entry[field]!r}, re-derived "
                            f"{getattr(bound, field)!r}")
    return problems
