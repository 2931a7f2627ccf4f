"""Certificates by units: evidence that scales with units, not with inputs.

A certificate of a large domain lists no rows. Per task it states the task spec, the
domain's size and a SHA-256 streamed over its canonical rows, and the circuit; its
Parquet sidecar (a DSSE subject, next to the checkpoint's weights) holds one record per
unit: the range (or cube), how it was decided (screen, exact, or a solver verdict with
its query hash), its counts, class tallies and the digest of its decisions. Functional
equivalence and content invariance are folded from the units (`farm.units.fold`); edge
necessity states one witness per edge, each confirmed by two exact runs.

The checker re-derives all of it: the domain hash, the cover (every input in exactly one
unit), every unit's decisions by the vectorised screen and the exact evaluator (so a
flipped decision changes the digest), the folded properties, every witness. What it
takes on the signature alone is returned as `trusted` and printed by `farm check`.
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from encoders.properties import (
    EDGE_NECESSITY,
)
from farm.atomic import write_bytes_atomic, write_text_atomic
from farm.errors import FarmError
from farm.model.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint
from farm.model.circuit import Circuit, require_fits, require_zero_ablation
from farm.tasks.registry import get_task
from farm.trust.certificate import model_metadata, read_envelope, software_versions
from farm.trust.signing import file_subject, sign_statement, verify_statement
from farm.units.evidence import TaskEvidence, domain_sha256
from farm.units.fold import UNIT_PROPERTIES, fold_units
from farm.units.unit import Unit, circuit_hash, cover_problems
from farm.units.verdict import UnitVerdict, decide_unit
from farm.verify.evaluate import Evaluator

UNITS_PREDICATE_TYPE = "https://verification-farm.dev/unit-certificate/v1"
UNITS_SUFFIX = ".units.parquet"
FORMAT_VERSION = 1
CERTIFIED = (*UNIT_PROPERTIES, EDGE_NECESSITY)
TRUSTED = ("that the signer ran this job (its software versions, timings and git revision)",
           "edge necessity's 'no witness' for an edge, where one is claimed (a FAILED entry; "
           "the whole search is not repeated)")

SIDECAR_SCHEMA = pa.schema([
    ("task", pa.string()), ("circuit_sha256", pa.string()),
    ("start", pa.int64()), ("stop", pa.int64()), ("cube", pa.string()),
    ("decided_by", pa.string()),  # screen, exact, screen+exact, or solver (cube queries)
    ("query_hash", pa.string()), ("verdict", pa.string()),  # a solver-decided unit's
    ("screen", pa.int64()), ("exact", pa.int64()), ("wrong", pa.int64()),
    ("wrong_first", pa.list_(pa.int64())), ("classes", pa.string()),
    ("digest", pa.string()), ("seconds", pa.float64()),
])


def units_sidecar_path(certificate: str | os.PathLike[str]) -> Path:
    path = Path(certificate)
    return path.with_name(path.name.removesuffix(".json").removesuffix(".dsse") + UNITS_SUFFIX)


def decided_by(v: UnitVerdict) -> str:
    return "exact" if not v.screen else "screen" if not v.exact else "screen+exact"


def sidecar_bytes(evidence: Sequence[TaskEvidence]) -> bytes:
    rows = [{"task": e.task, "circuit_sha256": v.unit.circuit, "start": v.unit.start,
             "stop": v.unit.stop, "cube": None if v.unit.cube is None else json.dumps(
                 v.unit.cube, sort_keys=True), "decided_by": decided_by(v),
             "query_hash": None, "verdict": None, "screen": v.screen, "exact": v.exact,
             "wrong": v.wrong, "wrong_first": list(v.wrong_first),
             "classes": json.dumps(v.to_json()["classes"]), "digest": v.digest,
             "seconds": v.seconds} for e in evidence for v in e.verdicts]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), sink)
    return sink.getvalue()


def read_units_sidecar(path: Path) -> list[UnitVerdict]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise FarmError(f"unit records {path} are not readable Parquet: {err}") from None
    if not SIDECAR_SCHEMA.equals(table.schema, check_metadata=False):
        raise FarmError(f"unit records {path} do not have the unit sidecar's columns")
    out = []
    for r in table.to_pylist():
        unit = Unit(r["task"], r["circuit_sha256"], r["start"], r["stop"],
                    None if r["cube"] is None else json.loads(r["cube"]))
        out.append(UnitVerdict.from_json(
            {"unit": unit.to_json(), **{k: r[k] for k in ("screen", "exact", "wrong",
                                                         "wrong_first", "digest", "seconds")},
             "classes": json.loads(r["classes"])}, f"{path}: unit [{r['start']}, {r['stop']})"))
    return out


# --------------------------------------------------------------------------- issue


@dataclass(frozen=True)
class UnitWork:
    """What `farm verify --out` (screen route) or `farm run` (family tasks) wrote."""

    checkpoint_sha256: str
    evidence: list[TaskEvidence]
    results: list[dict[str, Any]]


def has_units(path: str | os.PathLike[str]) -> bool:
    """Whether a verify result carries unit evidence (and is certified by units)."""
    data = read_envelope(path, "verify result")
    return isinstance(data, dict) and "units" in data


def load_unit_results(paths: Sequence[str | os.PathLike[str]]) -> UnitWork:
    """Merge verify results of one checkpoint that carry unit evidence."""
    shas, evidence, results = set(), {}, []
    for path in map(Path, paths):
        data = read_envelope(path, "verify result")
        if not isinstance(data, dict) or not isinstance(data.get("units"), list) \
                or not isinstance(data.get("results"), list):
            raise FarmError(f"{path}: not a verify result with unit evidence ('units' and "
                            "'results' lists)")
        shas.add(data.get("checkpoint_sha256"))
        for item in data["units"]:
            e = TaskEvidence.from_json(item, f"{path}: units")
            if evidence.setdefault(e.task, e) != e:
                raise FarmError(f"{path}: other unit evidence for {e.task} was already given")
        results += [r for r in data["results"] if isinstance(r, dict)]
    if len(shas) != 1 or None in shas:
        raise FarmError(f"verify results must name one checkpoint, got {sorted(map(str, shas))}")
    return UnitWork(shas.pop(), list(evidence.values()), results)



def _witness_problems(evaluator: Evaluator, entry: Mapping[str, Any]) -> list[str]:
    """Each stated witness confirmed by two exact runs; the status matches the witnesses."""
    problems, edges = [], {tuple(e) for e in evaluator.circuit.edges}
    found = set()
    for w in entry.get("witnesses", []):
        edge, i = tuple(w["edge"]), int(w["input"])
        if edge not in edges or not 0 <= i < len(evaluator.domain):
            problems.append(f"witness {w['edge']} input {i} names no edge or input here")
        elif not evaluator.differs(i, evaluator.circuit.without(edge)):
            problems.append(f"edge {edge[0]}->{edge[1]}: input {i} is no witness (exact runs "
                            "with and without the edge decide alike)")
        else:
            found.add(edge)
    status = "VERIFIED" if found == edges else "FAILED"
    if entry["status"] != status:
        problems.append(f"edge necessity/{evaluator.task.name} states {entry['status']}, its "
                        f"witnesses make it {status}")
    return problems


def _entry(result: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("property", "task", "status", "routes", "failing", "counterexamples")
    return {k: result[k] for k in keys} | (
        {"witnesses": [{"edge": list(w["edge"]), "input": int(w["input"])}
                       for w in result["witnesses"]]}
        if result["property"] == EDGE_NECESSITY else {})


def folded_entries(evaluator: Evaluator, verdicts: Sequence[UnitVerdict],
                   properties: Sequence[str]) -> list[dict[str, Any]]:
    return [_entry(r.to_json()) for r in fold_units(evaluator, verdicts, [
        p for p in UNIT_PROPERTIES if p in properties])]


def issue_units(checkpoint_dir: str | os.PathLike[str], evidence: Sequence[TaskEvidence],
                results: Sequence[Mapping[str, Any]], private_key: str | os.PathLike[str],
                out: str | os.PathLike[str], created_at: datetime | None = None
                ) -> dict[str, Any]:
    """Derive, sign and write a unit certificate and its sidecar; returns the predicate.
    The folded entries must agree with the verifier's results, or nothing is written."""
    ckpt = load_checkpoint(checkpoint_dir)
    out = Path(out)
    entries, by_task = [], {e.task: e for e in evidence}
    for result in results:
        prop, task = result["property"], result["task"]
        if prop not in CERTIFIED:
            raise FarmError(f"{prop}/{task}: a certificate by units states "
                            f"{', '.join(CERTIFIED)}; verify without {prop} to certify")
        if task not in by_task:
            raise FarmError(f"{prop}/{task}: no unit evidence for task {task}")
    for e in evidence:
        _require_evidence(ckpt, e)
        evaluator = Evaluator(ckpt, e.circuit, get_task(e.task), progress=False)
        mine = {r["property"]: r for r in results if r["task"] == e.task}
        derived = folded_entries(evaluator, e.verdicts, list(mine))
        for d in derived:
            given = _entry(mine[d["property"]])
            if given != d:
                raise FarmError(f"{d['property']}/{e.task}: the verifier's result does not "
                                "fold from its units; refusing to certify")
        entries += derived
        if EDGE_NECESSITY in mine:
            entry = _entry(mine[EDGE_NECESSITY])
            if problems := _witness_problems(evaluator, entry):
                raise FarmError(f"refusing to certify: {'; '.join(problems)}")
            entries.append(entry)
    data = sidecar_bytes(evidence)
    sidecar = units_sidecar_path(out)
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    predicate = {
        "format_version": FORMAT_VERSION,
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "software": software_versions(),
        "model": model_metadata(ckpt),
        "checkpoint": {"file": WEIGHTS_FILE, "sha256": ckpt.sha256,
                       "path": os.path.relpath(Path(checkpoint_dir).resolve(),
                                               out.resolve().parent)},
        "tasks": [{"name": e.task, "size": e.size, "domain_sha256": e.domain_sha256,
                   "circuit_sha256": circuit_hash(e.circuit), "units": len(e.verdicts)}
                  for e in evidence],
        "circuits": [e.circuit.to_json_dict() for e in evidence],
        "properties": entries,
        "units": {"file": sidecar.name, "records": sum(len(e.verdicts) for e in evidence)},
    }
    write_bytes_atomic(sidecar, data)
    envelope = sign_statement(predicate, [file_subject(Path(checkpoint_dir) / WEIGHTS_FILE),
                                          file_subject(sidecar)], private_key,
                              UNITS_PREDICATE_TYPE)
    write_text_atomic(out, json.dumps(envelope, indent=1) + "\n")
    return predicate


def _require_evidence(ckpt: Checkpoint, e: TaskEvidence) -> None:
    require_fits(e.circuit, ckpt.config.n_layers, ckpt.config.n_heads,
                 f"the {e.task} circuit", "the checkpoint", ckpt.sha256,
                 attention_only=ckpt.config.attention_only)
    require_zero_ablation(e.circuit, f"the {e.task} circuit")
    if problems := cover_problems([v.unit for v in e.verdicts], e.size):
        raise FarmError(f"{e.task}: the units do not cover the domain exactly once: "
                        f"{'; '.join(problems[:3])}")


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class UnitCheckReport:
    problems: list[str]
    predicate: dict[str, Any]
    rederived: dict[str, int]  # what was re-derived: units, inputs, witnesses
    trusted: tuple[str, ...] = TRUSTED

    @property
    def ok(self) -> bool:
        return not self.problems


def check_units_certificate(path: str | os.PathLike[str], public_key: str | os.PathLike[str],
                            checkpoint_dir: str | os.PathLike[str] | None = None,
                            require_verified: bool = False,
                            on_unit: Callable[[int], None] = lambda n: None
                            ) -> UnitCheckReport:
    """Verify the signature and subjects, then re-derive everything the predicate claims.
    `on_unit` hears each re-derived unit's size (a progress bar)."""
    path = Path(path)
    statement = verify_statement(read_envelope(path), public_key, UNITS_PREDICATE_TYPE)
    pred = statement["predicate"]
    try:
        return _check(path, pred, statement["subject"], checkpoint_dir, require_verified,
                      on_unit)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise FarmError(f"malformed unit certificate: {type(err).__name__}: {err}") from err


def _check(path: Path, pred: Mapping[str, Any], subject: Sequence[Mapping[str, Any]],
           checkpoint_dir: str | os.PathLike[str] | None, require_verified: bool,
           on_unit: Callable[[int], None]) -> UnitCheckReport:
    if pred["format_version"] != FORMAT_VERSION:
        raise FarmError(f"unit certificate format {pred['format_version']!r}; this checker "
                        f"reads {FORMAT_VERSION}")
    signed = {s["name"]: s["digest"]["sha256"] for s in subject}
    checkpoint_dir = Path(checkpoint_dir or path.parent / pred["checkpoint"]["path"])
    sidecar = path.parent / pred["units"]["file"]
    problems = [f"{file} is not the signed {name}" for name, file in (
        (WEIGHTS_FILE, checkpoint_dir / WEIGHTS_FILE), (sidecar.name, sidecar))
        if name not in signed or file_subject(file)["digest"]["sha256"] != signed[name]]
    if problems:  # re-deriving from other files would say nothing of the signed ones
        return UnitCheckReport(problems, dict(pred), {})
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt.sha256 != pred["checkpoint"]["sha256"]:
        problems.append(f"checkpoint sha256 is {ckpt.sha256}, the certificate says "
                        f"{pred['checkpoint']['sha256']}")
    if json.loads(json.dumps(model_metadata(ckpt))) != pred["model"]:
        problems.append("model metadata (config, operators, tensors) differs from the "
                        "checkpoint's")
    verdicts = read_units_sidecar(sidecar)
    if len(verdicts) != pred["units"]["records"]:
        problems.append(f"the sidecar has {len(verdicts)} unit records, the certificate "
                        f"says {pred['units']['records']}")
    circuits = {circuit_hash(c): c for c in (Circuit.from_json_dict(c, "certificate circuit")
                                             for c in pred["circuits"])}
    by_task: dict[str, list[UnitVerdict]] = defaultdict(list)
    for v in verdicts:
        by_task[v.unit.task].append(v)
    stated: dict[tuple[str, str], Any] = {}
    for e in pred["properties"]:  # every stated entry is re-derived once, or rejected
        key = (e["property"], e["task"])
        if key in stated:
            problems.append(f"{key[0]}/{key[1]}: listed twice")
        stated[key] = e
    names = [t["name"] for t in pred["tasks"]]
    problems += [f"task {n} is listed twice" for n in sorted(set(names))
                 if names.count(n) > 1]
    problems += [f"{p}/{t}: a property of a task the certificate does not list"
                 for p, t in stated if t not in names]
    counts = {"units": 0, "inputs": 0, "witnesses": 0}
    for t in pred["tasks"]:
        name = t["name"]
        circuit = circuits.get(t["circuit_sha256"])
        if circuit is None:
            problems.append(f"{name}: no circuit with sha256 {t['circuit_sha256'][:16]}…")
            continue
        problems += _task_problems(ckpt, t, circuit, by_task.pop(name, []), stated,
                                   counts, on_unit)
    problems += [f"unit records for task {task}, which the certificate does not state"
                 for task in by_task]
    if require_verified:
        problems += [f"{p}/{t}: {e['status']}, not VERIFIED (--require-verified)"
                     for (p, t), e in stated.items() if e["status"] != "VERIFIED"]
    return UnitCheckReport(problems, dict(pred), counts)


def _task_problems(ckpt: Checkpoint, t: Mapping[str, Any], circuit: Circuit,
                   verdicts: list[UnitVerdict], stated: Mapping[tuple[str, str], Any],
                   counts: dict[str, int], on_unit: Callable[[int], None]) -> list[str]:
    name, task = t["name"], get_task(t["name"])
    try:  # what the issuer required of the circuit, required again
        require_fits(circuit, ckpt.config.n_layers, ckpt.config.n_heads,
                     f"the {name} circuit", "the checkpoint", ckpt.sha256,
                     attention_only=ckpt.config.attention_only)
        require_zero_ablation(circuit, f"the {name} circuit")
    except FarmError as err:
        return [str(err)]
    problems = []
    if len(task.domain()) != t["size"]:
        problems.append(f"{name}: the domain has {len(task.domain())} inputs, the "
                        f"certificate says {t['size']}")
    if domain_sha256(name) != t["domain_sha256"]:
        problems.append(f"{name}: the domain's streamed sha256 differs from the certificate's")
    problems += [f"{name}: unit [{v.unit.start}, {v.unit.stop}) names another circuit"
                 for v in verdicts if v.unit.circuit != t["circuit_sha256"]]
    if cover := cover_problems([v.unit for v in verdicts], len(task.domain())):
        return problems + [f"{name}: {p}" for p in cover]  # folding needs an exact cover
    evaluator = Evaluator(ckpt, circuit, task, progress=False)
    again = []
    for v in sorted(verdicts, key=lambda v: v.unit.start):
        mine = decide_unit(evaluator, v.unit)
        again.append(mine)
        if replace(mine, seconds=0.0) != replace(v, seconds=0.0):
            problems.append(f"{name}: unit [{v.unit.start}, {v.unit.stop}) re-derives "
                            f"differently ({_difference(v, mine)})")
        counts["units"] += 1
        counts["inputs"] += len(v.unit)
        on_unit(len(v.unit))
    props = [p for p in UNIT_PROPERTIES if (p, name) in stated]
    for entry in folded_entries(evaluator, again, props):
        if entry != stated[entry["property"], name]:
            problems.append(f"{entry['property']}/{name}: the certificate's entry is not what "
                            "its units fold to")
    if (EDGE_NECESSITY, name) in stated:
        entry = stated[EDGE_NECESSITY, name]
        problems += _witness_problems(evaluator, entry)
        counts["witnesses"] += len(entry.get("witnesses", []))
    unknown = {p for p, task_ in stated if task_ == name} - set(CERTIFIED)
    problems += [f"{p}/{name}: not a property a unit certificate states" for p in unknown]
    return problems


def _difference(recorded: UnitVerdict, derived: UnitVerdict) -> str:
    fields = [f for f in ("screen", "exact", "wrong", "wrong_first", "classes", "digest")
              if getattr(recorded, f) != getattr(derived, f)]
    return ", ".join(fields) or "unit"
