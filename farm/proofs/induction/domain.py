"""Certifying one head on a task's whole domain, and checking such a run.

`certify_domain` writes one NFP-format certificate per prompt (`items/<index>.cert`),
the NFP batch file (`batch.nfp`) whose gates are the aggregates the items meet
(the minimum score margin, the maximum ε, the minimum NFP logit-difference bound,
and its mean where every item states a direction: NFP's checker re-checks each),
and `summary.json`. The folder appears whole
or not at all. `check_domain` re-derives every item from the checkpoint and
recomputes the aggregates.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.proofs.induction.check import check_certificate
from farm.proofs.induction.derive import HeadRef, InductionProver
from farm.proofs.induction.nfp import (
    Batch,
    Gates,
    NfpCertificate,
    logit_diff_bound,
    parse,
    rejections,
)
from farm.tasks.induction import Induction

ITEMS, BATCH, SUMMARY = "items", "batch.nfp", "summary.json"
CHUNK = 512  # prompts per memo of shared prefixes: neighbours in canonical order share them


@dataclass(frozen=True)
class DomainSummary:
    """The aggregates NFP's batch gates speak of, over every certified prompt, exactly."""

    task: str
    head: str
    checkpoint: str
    prompts: int
    certified: int  # prompts whose stripe, copying and decision all hold
    min_margin: Fraction  # smallest score gap of the induction key over the others
    max_eps: Fraction
    min_copy: Fraction  # smallest copying bound over prompts and rival candidates
    mean_copy: Fraction  # mean over prompts of each prompt's smallest copying bound
    min_nfp_logit_diff: Fraction  # the same for NFP's looser logit-difference bound
    mean_nfp_logit_diff: Fraction
    nfp_directions: int  # items stating a direction (NFP's bound not negative)
    nfp_accepted: int  # items NFP's rules accept under the batch's gates (`nfp.rejections`)
    mean_stripe_weight: Fraction  # mean attention on the induction key
    min_decision: Fraction  # smallest exact logit margin of the model's decision

    def to_json(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Fraction) else v) for k, v in asdict(self).items()
                } | {f"{k}_float": float(v) for k, v in asdict(self).items()
                     if isinstance(v, Fraction)}

    def batch_gates(self) -> dict[str, Fraction | int]:
        gates: dict[str, Fraction | int] = {
            "min-active": 1, "min-margin": self.min_margin, "max-eps": self.max_eps,
            "min-logit-diff": self.min_nfp_logit_diff}
        if self.nfp_directions == self.prompts:  # NFP averages only over stated directions
            gates["min-avg-logit-diff"] = self.mean_nfp_logit_diff
        return gates


class _Aggregate:
    def __init__(self) -> None:
        self.items: list[tuple[NfpCertificate, bool, Fraction, Fraction]] = []

    def add(self, cert: NfpCertificate) -> None:
        decision = next(Fraction(words[2]) for name, *words in cert.farm if name == "decision")
        copy = min(Fraction(words[2]) for name, *words in cert.farm if name == "copy-lb")
        certified = ("certified", "yes") in cert.farm
        self.items.append((cert, certified, decision, copy))

    def summary(self, task: Induction, head: HeadRef, checkpoint: Checkpoint) -> DomainSummary:
        if not self.items:
            raise FarmError("no prompts to certify")
        certs = [c for c, _, _, _ in self.items]
        copies = [copy for _, _, _, copy in self.items]
        bounds = [logit_diff_bound(c) for c in certs]
        stripe = [c.weight[q, c.prev[q]] for c in certs for q in c.active]
        gates = Gates(min(c.margin for c in certs), max(c.eps for c in certs), 1, min(bounds))
        return DomainSummary(
            task.name, str(head), checkpoint.sha256, len(certs),
            sum(ok for _, ok, _, _ in self.items), gates.min_margin, gates.max_eps,
            min(copies), _mean(copies), min(bounds), _mean(bounds),
            sum(c.direction is not None for c in certs),
            sum(not rejections(c, gates) for c in certs), _mean(stripe),
            min(d for _, _, d, _ in self.items))


def _mean(values: list[Fraction]) -> Fraction:
    return sum(values, Fraction(0)) / len(values)


def certify_domain(checkpoint: Checkpoint, task: Induction, head: HeadRef, out: Path,
                   indices: Sequence[int] | None = None, progress: bool = True
                   ) -> tuple[DomainSummary, float]:
    """Certify `head` on the given prompts (default: the whole domain) into folder `out`;
    returns the summary and the seconds spent deriving."""
    prover = InductionProver(checkpoint, task, head)
    indices = range(len(task.domain())) if indices is None else indices
    if out.exists():
        raise FarmError(f"{out} exists: choose a new folder for the certificates")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (staging / ITEMS).mkdir()
        aggregate, names = _Aggregate(), []
        start = time.perf_counter()
        for n, index in enumerate(tqdm(indices, desc=f"certify {head}", disable=not progress,
                                       unit="prompt")):
            if n % CHUNK == 0:
                prover.fresh()
            cert = prover.certificate(index)
            aggregate.add(cert)
            name = f"{ITEMS}/{index}.cert"
            (staging / name).write_text(cert.render())
            names.append(name)
        seconds = time.perf_counter() - start
        summary = aggregate.summary(task, head, checkpoint)
        (staging / BATCH).write_text(Batch(names, summary.batch_gates()).render())
        (staging / SUMMARY).write_text(json.dumps(summary.to_json(), indent=1) + "\n")
        os.sync()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary, seconds


def check_domain(checkpoint: Checkpoint, folder: Path, progress: bool = True) -> DomainSummary:
    """Re-derive every item of a certified folder and its batch gates; FarmError naming the
    first difference."""
    batch = folder / BATCH
    if not batch.is_file():
        raise FarmError(f"{folder} has no {BATCH}: not a folder `farm induction certify` wrote")
    lines = [line.split() for line in batch.read_text().splitlines() if line.strip()]
    items = [words[1] for words in lines if words[0] == "item" and len(words) == 2]
    if not items:
        raise FarmError(f"{batch}: no items")
    prover: InductionProver | None = None
    aggregate = _Aggregate()
    for n, name in enumerate(tqdm(items, desc="check", disable=not progress, unit="prompt")):
        path = folder / name
        cert = parse(path.read_text(), str(path))
        checked = check_certificate(cert, checkpoint, str(path), prover)
        if prover is not None and checked is not prover:
            raise FarmError(f"{path}: another task or head than the items before it")
        prover = checked
        if n % CHUNK == CHUNK - 1:
            prover.fresh()
        aggregate.add(cert)
    assert prover is not None
    summary = aggregate.summary(prover.task, prover.head, checkpoint)
    expected = Batch(items, summary.batch_gates()).render()
    if batch.read_text() != expected:
        raise FarmError(f"{batch}: its gates are not the aggregates of its items; they are\n"
                        + "".join(expected.splitlines(keepends=True)[:5]))
    recorded = folder / SUMMARY
    if not recorded.is_file() or json.loads(recorded.read_text()) != summary.to_json():
        raise FarmError(f"{recorded}: missing, or not the aggregates of the items")
    return summary
