"""Certifying one head on a task's whole domain, and checking such a run.

`certify_domain` writes one NFP-format certificate per prompt (`items/<index>.cert`),
the NFP batch file (`batch.nfp`) whose gates are the aggregates the items meet
(the minimum score margin, the maximum ε, the minimum NFP logit-difference bound,
and its mean where every item states a direction: NFP's checker re-checks each),
and `summary.json`. The folder appears whole or not at all. The work goes in units
of prompts to a `Runner` (this process, or Ray actors: `actors.induction`), each unit
handing back its files' text and a `Tally` of its aggregates, which the job adds up.
`check_domain` re-derives every item from the checkpoint and recomputes the
aggregates; `check_path` is `farm check`'s entry: a folder or one certificate.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.proofs.induction.check import Mismatch, check_certificate
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
UNIT = 512  # prompts per unit of work, and per memo of shared prefixes (neighbours in
# canonical order share them)


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


@dataclass(frozen=True)
class Tally:
    """The aggregates of some certified prompts, in a form that merges (`+`): each unit of
    work, wherever it ran, reduces its prompts to one, and the job adds them up.

    NFP acceptance is counted per item under gates at that item's own margin, ε and bound;
    the batch's gates are the extremes over all items, so an item passes those exactly
    when it passes its own."""

    prompts: int
    certified: int
    min_margin: Fraction
    max_eps: Fraction
    min_copy: Fraction
    sum_copy: Fraction
    min_bound: Fraction
    sum_bound: Fraction
    directions: int
    accepted: int
    stripe_sum: Fraction
    stripe_count: int
    min_decision: Fraction

    @classmethod
    def of(cls, cert: NfpCertificate) -> Tally:
        decision = next(Fraction(words[2]) for name, *words in cert.farm if name == "decision")
        copy = min(Fraction(words[2]) for name, *words in cert.farm if name == "copy-lb")
        bound = logit_diff_bound(cert)
        own = Gates(cert.margin, cert.eps, 1, bound)
        stripe = [cert.weight[q, cert.prev[q]] for q in cert.active]
        return cls(1, int(("certified", "yes") in cert.farm), cert.margin, cert.eps, copy, copy,
                   bound, bound, int(cert.direction is not None), int(not rejections(cert, own)),
                   sum(stripe, Fraction(0)), len(stripe), decision)

    def __add__(self, other: Tally) -> Tally:
        pick = {"min_margin": min, "max_eps": max, "min_copy": min, "min_bound": min,
                "min_decision": min}
        return Tally(**{f.name: pick.get(f.name, operator.add)(getattr(self, f.name),
                                                                getattr(other, f.name))
                        for f in fields(Tally)})

    def summary(self, task: Induction, head: HeadRef, checkpoint: Checkpoint) -> DomainSummary:
        return DomainSummary(
            task.name, str(head), checkpoint.sha256, self.prompts, self.certified,
            self.min_margin, self.max_eps, self.min_copy, self.sum_copy / self.prompts,
            self.min_bound, self.sum_bound / self.prompts, self.directions, self.accepted,
            self.stripe_sum / self.stripe_count, self.min_decision)


@dataclass(frozen=True)
class Unit:
    """What one unit of work hands back: its certificates' text, in order, and their tally."""

    indices: tuple[int, ...]
    texts: tuple[str, ...]
    tally: Tally


def certify_unit(prover: InductionProver, indices: Sequence[int]) -> Unit:
    """Certify `prover`'s head on the given prompts, with a fresh memo of shared prefixes."""
    prover.fresh()
    certs = [prover.certificate(index) for index in indices]
    return Unit(tuple(indices), tuple(c.render() for c in certs),
                functools.reduce(operator.add, map(Tally.of, certs)))


Runner = Callable[[Sequence[Sequence[int]]], Iterator[Unit]]
"""Certifies units of prompts, somewhere, and yields each one's `Unit` in the order given."""


def local_runner(prover: InductionProver) -> Runner:
    return lambda units: (certify_unit(prover, unit) for unit in units)


def certify_domain(checkpoint: Checkpoint, task: Induction, head: HeadRef, out: Path,
                   indices: Sequence[int] | None = None, progress: bool = True,
                   runner: Runner | None = None, unit: int = UNIT
                   ) -> tuple[DomainSummary, float]:
    """Certify `head` on the given prompts (default: the whole domain) into folder `out`,
    `unit` prompts at a time by `runner` (default: this process); returns the summary and
    the seconds spent deriving."""
    runner = runner or local_runner(InductionProver(checkpoint, task, head))
    indices = range(len(task.domain())) if indices is None else indices
    if not indices:
        raise FarmError("no prompts to certify")
    if out.exists():
        raise FarmError(f"{out} exists: choose a new folder for the certificates")
    units = [indices[i:i + unit] for i in range(0, len(indices), unit)]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (staging / ITEMS).mkdir()
        tally, names = None, []
        start = time.perf_counter()
        with tqdm(total=len(indices), desc=f"certify {head}", disable=not progress,
                  unit="prompt") as bar:
            for done in runner(units):
                for index, text in zip(done.indices, done.texts, strict=True):
                    name = f"{ITEMS}/{index}.cert"
                    (staging / name).write_text(text)
                    names.append(name)
                tally = done.tally if tally is None else tally + done.tally
                bar.update(len(done.indices))
        seconds = time.perf_counter() - start
        assert tally is not None
        summary = tally.summary(task, head, checkpoint)
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
    tally: Tally | None = None
    for n, name in enumerate(tqdm(items, desc="check", disable=not progress, unit="prompt")):
        path = folder / name
        if not path.is_file():
            raise FarmError(f"{batch}: item {name} is not a file")
        cert = parse(path.read_text(), str(path))
        checked = check_certificate(cert, checkpoint, str(path), prover)
        if prover is not None and checked is not prover:
            raise Mismatch(f"{path}: another task or head than the items before it")
        prover = checked
        if n % UNIT == UNIT - 1:
            prover.fresh()
        tally = Tally.of(cert) if tally is None else tally + Tally.of(cert)
    assert prover is not None and tally is not None
    summary = tally.summary(prover.task, prover.head, checkpoint)
    expected = Batch(items, summary.batch_gates()).render()
    if batch.read_text() != expected:
        raise Mismatch(f"{batch}: its gates are not the aggregates of its items; they are\n"
                        + "".join(expected.splitlines(keepends=True)[:5]))
    recorded = folder / SUMMARY
    if not recorded.is_file() or json.loads(recorded.read_text()) != summary.to_json():
        raise Mismatch(f"{recorded}: missing, or not the aggregates of the items")
    return summary


def is_induction_certificate(path: Path) -> bool:
    """Whether `path` is what `farm induction certify` writes: a folder with a batch file,
    or one certificate (its first line says so)."""
    if path.is_dir():
        return (path / BATCH).is_file()
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.readline().startswith(b"# farm induction-certificate ")


def check_path(checkpoint: Checkpoint, path: Path, progress: bool = True) -> DomainSummary:
    """Re-derive a certified folder, or one certificate, from `checkpoint`."""
    if path.is_dir():
        return check_domain(checkpoint, path, progress)
    cert = parse(path.read_text(), str(path))
    prover = check_certificate(cert, checkpoint, str(path))
    return Tally.of(cert).summary(prover.task, prover.head, checkpoint)
