"""Signed distilled programs: a proof record bound by hash to its checkpoint and circuit.

The record of `farm distill` (`farm.distill.record`) is the predicate of an in-toto
Statement of its own type, whose subjects are the checkpoint's weights file and the
circuit file. The checker verifies the signature, that the files at hand are the
signed subjects, and then re-derives the record (`farm.distill.recheck`): the
program holds on the whole domain again, its printed source is the record's, and
every counterexample of the search replays exactly. Only what cannot be recomputed,
that the signer ran this search, rests on the signature.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.distill.recheck import recheck
from farm.errors import FarmError
from farm.model.checkpoint import WEIGHTS_FILE, load_checkpoint
from farm.model.circuit import Circuit, load_circuit
from farm.tasks.registry import get_task
from farm.trust.certificate import read_envelope
from farm.trust.signing import file_subject, sign_statement, verify_statement

DISTILLED_PREDICATE_TYPE = "https://verification-farm.dev/distilled-program/v1"
CIRCUIT_SUBJECT = "circuit.json"


def sign_distillation(record: Mapping[str, Any], checkpoint_dir: str | os.PathLike[str],
                      circuit_file: str | os.PathLike[str] | None,
                      private_key: str | os.PathLike[str]) -> dict[str, Any]:
    """The DSSE envelope of a proved record, its checkpoint and (unless the full model)
    its circuit file as subjects."""
    if record.get("status") != "proved":
        raise FarmError(f"only a proved program is signed; this record is {record.get('status')}")
    subjects = [file_subject(Path(checkpoint_dir) / WEIGHTS_FILE)]
    if circuit_file is not None:
        subjects.append(file_subject(circuit_file, CIRCUIT_SUBJECT))
    return sign_statement(record, subjects, private_key, DISTILLED_PREDICATE_TYPE)


@dataclass(frozen=True)
class DistilledReport:
    record: dict[str, Any]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_distillation(path: str | os.PathLike[str], public_key: str | os.PathLike[str],
                       checkpoint_dir: str | os.PathLike[str] | None = None,
                       circuit_file: str | os.PathLike[str] | None = None) -> DistilledReport:
    """Verify the signature and the subjects, then re-derive the record; every problem
    named. The checkpoint and circuit default to the paths the signed record gives (the
    full model where it names no circuit file)."""
    statement = verify_statement(read_envelope(path), public_key, DISTILLED_PREDICATE_TYPE)
    record = statement["predicate"]
    try:
        checkpoint_dir = checkpoint_dir or record["checkpoint_path"]
        circuit_file = circuit_file or record["circuit"]["file"]
        task = get_task(record["task"]).name
    except (KeyError, TypeError) as err:
        raise FarmError(f"malformed proof record in {path}: {err}") from None
    signed = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    files = {WEIGHTS_FILE: Path(checkpoint_dir) / WEIGHTS_FILE}
    if circuit_file is not None:
        files[CIRCUIT_SUBJECT] = Path(circuit_file)
    problems = []
    if set(signed) != set(files):
        problems.append(f"signed subjects {sorted(signed)}, files given for {sorted(files)}")
    for name, file in files.items():
        if name in signed and file_subject(file)["digest"]["sha256"] != signed[name]:
            problems.append(f"{file} is not the signed {name}")
    if problems:  # re-deriving against other files would say nothing of the signed ones
        return DistilledReport(record, problems)
    ckpt = load_checkpoint(checkpoint_dir)
    circuit = load_circuit(circuit_file) if circuit_file is not None else Circuit.full(
        ckpt.config.n_layers, ckpt.config.n_heads, "block", task, ckpt.config.attention_only)
    return DistilledReport(record, recheck(record, ckpt, circuit))


def predicate_type_of(path: str | os.PathLike[str]) -> str | None:
    """The predicateType an envelope states, unverified: only to choose its checker, which
    then verifies the signature and the type."""
    envelope = read_envelope(path)
    try:
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        return statement.get("predicateType")
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error):
        return None
