"""Certificates: the signed claim, derived from a checkpoint, its exact replay, circuits and
property results, and the Python checker that re-derives every part it can.

Nothing in a certificate is typed in by hand. `assemble` reads the model metadata
off the checkpoint, the rows off `farm.model.replay` (exact margins), the circuits off
`Circuit.to_json_dict`, and the property entries off the verifier's results and
its per-query records; the records go to a Parquet sidecar whose SHA-256 the
certificate states and the DSSE envelope binds as a subject, next to the
checkpoint's `model.safetensors`. `check_certificate` recomputes the same values
with the same functions (`model_metadata`, `task_entries`, `farm.model.replay`) and
reports every disagreement by name, so "derived" and "checked" cannot drift.

The Lean module needs a fingerprint of the certificate and the certificate
records the Lean outcome, so the fingerprint is the SHA-256 of the canonical JSON
of the predicate *without* its `lean` entry; the checker recomputes it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    ROBUSTNESS,
)
from farm.atomic import write_bytes_atomic, write_text_atomic
from farm.errors import FarmError
from farm.model.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint
from farm.model.circuit import Circuit, require_fits, require_zero_ablation
from farm.model.gpt import LEAKY_SLOPE
from farm.model.replay import ReplayReport, replay
from farm.tasks.registry import DEFAULT_TASKS, get_task
from farm.trust.binding import claim_problems
from farm.trust.lean_export import (
    LEAN_PACKAGE,
    NO_TOOLCHAIN,
    LakeOutcome,
    LeanExport,
    lake_path,
    run_lake_build,
    write_module,
)
from farm.trust.provenance import provenance_problems, require_provenance
from farm.trust.signing import (
    canonical_json,
    file_subject,
    reject_duplicate_keys,
    sign_statement,
    verify_statement,
)
from farm.verify.local import QueryRecord

CERTIFICATE_FILE = "certificate.dsse.json"
SIDECAR_SUFFIX = ".queries.parquet"
FORMAT_VERSION = 2  # 2: robustness states its ε; every unsat record is planned again
STATUSES = ("VERIFIED", "FAILED", "UNKNOWN", "ERROR")
VERDICTS = ("sat", "unsat", "unknown", "error")
PER_INPUT = (FUNCTIONAL_EQUIVALENCE, ROBUSTNESS)  # one instance per domain input
LEAN_LOG_TAIL = 4000
MAX_REPORTED = 8  # per kind of row problem; the rest are counted

SIDECAR_SCHEMA = pa.schema([
    ("property", pa.string()),
    ("task", pa.string()),
    ("subject", pa.string()),
    ("query_hash", pa.string()),
    ("verdict", pa.string()),
    ("winner", pa.string()),
    ("z3_seconds", pa.float64()),
    ("cvc5_seconds", pa.float64()),
    ("reason", pa.string()),
])


# --------------------------------------------------------------------------- inputs


def _result_json(result: Any) -> dict[str, Any]:
    """A `farm.verify.local.PropertyResult` or its JSON form, as JSON."""
    return result.to_json() if hasattr(result, "to_json") else dict(result)


@dataclass(frozen=True)
class VerifiedWork:
    """What `farm verify --out` or `farm run` wrote, ready for `issue`."""

    checkpoint_sha256: str
    circuits: list[Circuit]
    results: list[dict[str, Any]]
    records: list[QueryRecord]


def load_verify_results(paths: Sequence[str | os.PathLike[str]]) -> VerifiedWork:
    """Merge result JSON files of one checkpoint: `farm verify --out` (one `circuit`) or
    `farm run` (`circuits` by task). Each result must carry its per-query records
    (`query_records`, `QueryRecord` fields): the counts are certified against them."""
    shas, circuits, results, records = set(), {}, [], []
    for path in map(Path, paths):
        data = read_envelope(path, "verify result")  # plain JSON; the same careful reader
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise FarmError(f"{path}: not a verify result (no 'results' list)")
        if (route := data.get("route", "solver")) != "solver":
            raise FarmError(f"{path}: its inputs were decided by the {route} route but it "
                            "carries no unit evidence; run farm verify --out again without "
                            "robustness (certified by units), or with --route solver")
        shas.add(data.get("checkpoint_sha256"))
        listed = data.get("circuits") or {data.get("task"): data.get("circuit")}
        for task, circuit in listed.items():
            found = Circuit.from_json_dict(circuit, f"{path}: circuit for {task}")
            if circuits.setdefault(found.task, found) != found:
                raise FarmError(f"{path}: a different circuit for task {found.task} was "
                                "already given")
        for result in data["results"]:
            if not isinstance(result, dict):
                raise FarmError(f"{path}: each of 'results' must be an object")
            where = f"{path}: result {result.get('property')}/{result.get('task')}"
            if not isinstance(result.get("query_records"), list):
                raise FarmError(f"{where} has no per-query records ('query_records'); they "
                                "are what its counts are certified against")
            records += [QueryRecord.from_json(q, where) for q in result["query_records"]]
            results.append({k: v for k, v in result.items() if k != "query_records"})
    if len(shas) != 1 or None in shas:
        raise FarmError(f"verify results must name one checkpoint, got {sorted(map(str, shas))}")
    return VerifiedWork(shas.pop(), list(circuits.values()), results, records)


@lru_cache(maxsize=4)
def exact_replay(ckpt: Checkpoint, tasks: tuple[str, ...]) -> ReplayReport:
    """`farm.model.replay`, once per checkpoint identity (SHA-256 and config) and task list."""
    return replay(ckpt, tasks)


# --------------------------------------------------------------------------- derived parts


def model_metadata(ckpt: Checkpoint) -> dict[str, Any]:
    """What the certificate says about the model: all of it read off the checkpoint."""
    cfg = ckpt.config
    return {
        "config": cfg.to_dict(),
        "operators": {"norm": cfg.norm_variant, "attention": cfg.attn_variant,
                      "activation": cfg.activation, "leaky_slope": str(LEAKY_SLOPE),
                      "half_low": str(cfg.half_low), "half_high": str(cfg.half_high),
                      "attn_scale": str(Fraction(cfg.attn_scale))},
        "tensors": [{"name": name, "shape": list(array.shape)}
                    for name, array in ckpt.weights.items()],
        "parameters": ckpt.num_parameters(),
        "extras": dict(ckpt.extras),
    }


def task_entries(tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Each task's domain as the registry defines it: token, program P, candidates, row span."""
    entries, start = [], 0
    for name in tasks:
        task = get_task(name)
        size = len(task.domain())
        entries.append({"name": name, "task_token": task.task_token,
                        "program": [[o, t] for o, t in task.program.items()],
                        "candidates": list(task.candidates), "first_row": start, "rows": size})
        start += size
    return entries


def _rational(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def certificate_rows(report: ReplayReport) -> list[dict[str, Any]]:
    """One row per domain input with its exact margin as "n/d" (and a float for people)."""
    return [{"index": r.row.index, "task": r.row.task.name, "prompt": list(r.row.prompt),
             "target": r.row.target, "alternate": r.row.alternate,
             "margin": _rational(r.margin), "margin_float": float(r.margin)}
            for r in report.rows]


def _instances(prop: str, task_rows: int, circuit_edges: int, first_round: int) -> int:
    """How many instances a property has: inputs, retained edges, or planned pairs (one
    first-round query each; an escalated query re-asks an instance, it adds none)."""
    if prop in PER_INPUT:
        return task_rows
    if prop == EDGE_NECESSITY:
        return circuit_edges
    return first_round


def property_entry(result: Mapping[str, Any], records: Sequence[QueryRecord], task_rows: int,
                   circuit_edges: int) -> dict[str, Any]:
    """One property's certified result: status, counts, counterexamples, radii, timings."""
    prop, task = result["property"], result["task"]
    counts = {"instances": _instances(prop, task_rows, circuit_edges,
                                      result["queries"] - result["escalated"]),
              **{k: result[k] for k in ("queries", "escalated", "unsat", "sat", "unknown",
                                        "errors")},
              "counterexamples": len(result["counterexamples"])}
    problems = _count_problems(prop, task, result["status"], counts, records)
    problems += _epsilon_problems(prop, task, result.get("epsilon"), records)
    if problems:
        raise FarmError(f"property result {prop}/{task} is inconsistent, refusing to certify "
                        f"it: {'; '.join(problems)}")
    return {"property": prop, "task": task, "status": result["status"], "counts": counts,
            "counterexamples": result["counterexamples"], "problems": result["problems"],
            **({"epsilon": result.get("epsilon")} if prop == ROBUSTNESS else {}),
            "wins": result["wins"],  # no radius: its bisection has no records behind it
            "solver_seconds": result["solver_seconds"], "seconds": result["seconds"],
            "cached": result["cached"]}


def software_versions() -> dict[str, str]:
    """Versions of everything whose behaviour the result depends on, and our git revision."""
    versions = {"python": platform.python_version()}
    for name, dist in (("z3", "z3-solver"), ("cvc5", "cvc5"), ("ray", "ray"),
                       ("torch", "torch"), ("pyarrow", "pyarrow")):
        try:
            versions[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["farm_git_revision"] = _git_revision()
    return versions


def _git_revision() -> str:
    """HEAD, with "+dirty" when the working tree differs from it; "unknown" outside git."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=30,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def fingerprint(predicate: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical predicate without its `lean` entry (which records the build)."""
    return hashlib.sha256(canonical_json({k: v for k, v in predicate.items()
                                          if k != "lean"})).hexdigest()


def assemble(ckpt: Checkpoint, report: ReplayReport, circuits: Sequence[Circuit],
             results: Sequence[Any], records: Sequence[QueryRecord], sidecar_sha256: str,
             checkpoint_path: str, created_at: datetime | None = None) -> dict[str, Any]:
    """The certificate predicate, less its `lean` entry, derived from typed results.

    `checkpoint_path` is where a checker finds the checkpoint, relative to the certificate.

    Refuses what it cannot certify: a row the model gets wrong, a property without
    a circuit for its task, counts that disagree with the records.
    """
    tasks = list(dict.fromkeys(r.row.task.name for r in report.rows))
    rows = certificate_rows(report)
    wrong = [r["index"] for r in rows if not Fraction(r["margin"]) > 0]
    if wrong:
        raise FarmError(f"the model does not decide {len(wrong)} row(s) correctly (first: row "
                        f"{wrong[0]}, margin {rows[wrong[0]]['margin']}): nothing to certify")
    by_task = {c.task: c for c in circuits}
    if None in by_task or len(by_task) != len(circuits):
        raise FarmError("every circuit must name its task, and each task have one circuit")
    for circuit in circuits:
        require_fits(circuit, ckpt.config.n_layers, ckpt.config.n_heads,
                     f"the {circuit.task} circuit", "the checkpoint", ckpt.sha256,
                     attention_only=ckpt.config.attention_only)
        require_zero_ablation(circuit, f"the {circuit.task} circuit")
        require_provenance(ckpt, circuit)
    entries = []
    for result in map(_result_json, results):
        prop, task = result.get("property"), result.get("task")
        if task not in tasks or task not in by_task:
            raise FarmError(f"property {prop} is for task {task}, which has no rows or no "
                            "circuit here")
        mine = [r for r in records if (r.property, r.task) == (prop, task)]
        try:
            entries.append(property_entry(result, mine,
                                          report.by_task()[tasks.index(task)].total,
                                          len(by_task[task].edges)))
        except KeyError as err:
            raise FarmError(f"property result {prop}/{task} has no {err}") from None
    groups = Counter((e["property"], e["task"]) for e in entries)
    if any(n > 1 for n in groups.values()) or {(r.property, r.task) for r in records} - set(groups):
        raise FarmError("each (property, task) needs exactly one result, and every query "
                        "record a result it belongs to")
    unplanned = claim_problems(ckpt, by_task, entries, records)
    if unplanned:
        raise FarmError(f"refusing to certify: {'; '.join(unplanned)}")
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "format_version": FORMAT_VERSION,
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "software": software_versions(),
        "model": model_metadata(ckpt),
        "checkpoint": {"file": WEIGHTS_FILE, "sha256": ckpt.sha256, "path": checkpoint_path},
        "tasks": task_entries(tasks),
        "rows": rows,
        "replay": {"min_margin": _rational(report.min_margin),
                   "min_margin_float": float(report.min_margin),
                   # None where the float32 runtime overflows (JSON has no inf)
                   "float32_gap": report.float32_gap if math.isfinite(report.float32_gap)
                   else None},
        "circuits": [c.to_json_dict() for c in circuits],
        "properties": entries,
        "queries": {"sha256": sidecar_sha256, "records": len(records)},
    }


# --------------------------------------------------------------------------- Lean


def lean_status(entry: Mapping[str, Any]) -> tuple[str, dict[str, int]]:
    """A property entry in the Lean checker's terms: instances verified / falsified / unknown.

    Lean has no ERROR: an instance that errored is undecided (unknown), and a
    replayed counterexample falsifies whatever else happened.
    """
    c = entry["counts"]
    undecided = c["unknown"] + c["errors"]
    counts = {"verified": c["instances"] - c["counterexamples"] - undecided,
              "falsified": c["counterexamples"], "unknown": undecided}
    status = {"VERIFIED": "verified", "FAILED": "falsified", "UNKNOWN": "unknown"}.get(
        entry["status"], "falsified" if c["counterexamples"] else "unknown")
    return status, counts


def lean_export_for(predicate: Mapping[str, Any], ckpt: Checkpoint) -> LeanExport:
    """The Lean module stating this certificate (named by its fingerprint)."""
    fp = fingerprint(predicate)
    properties = []
    for entry in predicate["properties"]:
        status, counts = lean_status(entry)
        properties.append({"property": entry["property"], "task": entry["task"],
                           "status": status, "counts": counts})
    return LeanExport(f"Cert{fp[:16]}", ckpt.config, dict(ckpt.weights), predicate["rows"],
                      predicate["checkpoint"]["sha256"], fp, properties, predicate["circuits"])


def lean_check(export: LeanExport, timeout_s: float = 3600.0) -> LakeOutcome:
    """Write the module into a private copy of the Lean package and `lake build` it.

    A copy, so concurrent checks and other certificates' modules cannot interfere;
    without `lake` nothing is written and the outcome is "not run".
    """
    if lake_path() is None:
        return LakeOutcome("not run", NO_TOOLCHAIN)
    with tempfile.TemporaryDirectory(prefix="farmcert-") as tmp:
        package = Path(tmp) / "lean"
        shutil.copytree(LEAN_PACKAGE, package, ignore=shutil.ignore_patterns(".lake", "Generated"))
        write_module(export, package)
        return run_lake_build(package, timeout_s)


def lean_entry(export: LeanExport, outcome: LakeOutcome) -> dict[str, Any]:
    """The certificate's record of the Lean check."""
    detail = {"ok": "lake build proved every theorem", "failed": outcome.log[-LEAN_LOG_TAIL:],
              "not run": outcome.log}[outcome.status]
    summary = outcome.status
    if outcome.status == "not run":
        summary += (": no Lean toolchain" if outcome.log.startswith("no Lean toolchain")
                    else f": {outcome.log}")
    return {"status": outcome.status, "outcome": summary, "detail": detail,
            "module": f"FarmCert.Generated.{export.name}",
            "certificate_fingerprint": export.certificate_fingerprint}


# --------------------------------------------------------------------------- issuing


def sidecar_path(certificate: str | os.PathLike[str]) -> Path:
    """`<dir>/<stem>.queries.parquet` beside `<dir>/<stem>.dsse.json`."""
    path = Path(certificate)
    return path.with_name(path.name.split(".", 1)[0] + SIDECAR_SUFFIX)


def sidecar_bytes(records: Sequence[QueryRecord]) -> bytes:
    """The query records as one Parquet file, in memory: it is hashed before it is written."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([asdict(r) for r in records], schema=SIDECAR_SCHEMA),
                   sink)
    return sink.getvalue().to_pybytes()


def read_sidecar(path: Path) -> list[QueryRecord]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise FarmError(f"cannot read query records {path}: {err}") from err
    if table.schema != SIDECAR_SCHEMA:
        raise FarmError(f"{path}: query records have schema {table.schema.names}, expected "
                        f"{SIDECAR_SCHEMA.names}")
    return [QueryRecord(**row) for row in table.to_pylist()]


def issue(checkpoint_dir: str | os.PathLike[str], circuits: Sequence[Circuit],
          results: Sequence[Any], records: Sequence[QueryRecord],
          private_key: str | os.PathLike[str], out: str | os.PathLike[str],
          tasks: Sequence[str] = DEFAULT_TASKS,
          lean: Callable[[LeanExport], LakeOutcome] | None = lean_check) -> dict[str, Any]:
    """Assemble, Lean-check (`lean=None` skips it), sign, then write the sidecar and the
    certificate (each atomically); returns the predicate. Nothing is written on failure."""
    ckpt = load_checkpoint(checkpoint_dir)
    weights = file_subject(Path(checkpoint_dir) / WEIGHTS_FILE)
    if weights["digest"]["sha256"] != ckpt.sha256:
        raise FarmError(f"{checkpoint_dir}/{WEIGHTS_FILE} changed while it was being read")
    out = Path(out)
    sidecar, data = sidecar_path(out), sidecar_bytes(records)
    queries = {"name": sidecar.name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
    predicate = assemble(ckpt, exact_replay(ckpt, tuple(tasks)), circuits, results, records,
                         queries["digest"]["sha256"],
                         os.path.relpath(Path(checkpoint_dir).resolve(), out.resolve().parent))
    export = lean_export_for(predicate, ckpt)
    outcome = lean(export) if lean is not None else LakeOutcome("not run", "skipped (--no-lean)")
    predicate["lean"] = lean_entry(export, outcome)
    envelope = sign_statement(predicate, [weights, queries], private_key)
    try:
        write_bytes_atomic(sidecar, data)
        write_text_atomic(out, json.dumps(envelope, indent=1) + "\n")
    except OSError as err:
        raise FarmError(f"cannot write certificate {out}: {err}") from err
    return predicate


# --------------------------------------------------------------------------- checking


COUNT_KEYS = ("instances", "queries", "escalated", "unsat", "sat", "unknown", "errors",
              "counterexamples")


def _counts_shape(name: str, counts: Any) -> str:
    """Why `counts` is not an object of the count keys, each a non-negative integer ("" if
    it is)."""
    if not isinstance(counts, Mapping) or set(counts) != set(COUNT_KEYS) or not all(
            type(counts[k]) is int and counts[k] >= 0 for k in COUNT_KEYS):
        return (f"{name}: counts must be an object of non-negative integers "
                f"{', '.join(COUNT_KEYS)}, not {str(counts)[:80]}")
    return ""


def _count_problems(prop: str, task: str, status: Any, counts: Mapping[str, Any],
                    records: Sequence[QueryRecord]) -> list[str]:
    """Whether counts, status and the per-query records tell one story (as `farm.verify.local.fold`
    folds them: ERROR > FAILED > UNKNOWN > VERIFIED)."""
    name = f"property {prop}/{task}"
    if shape := _counts_shape(name, counts):
        return [shape]
    c = counts
    verdicts = Counter(r.verdict for r in records)
    problems = []
    if c["queries"] != len(records):
        problems.append(f"{name}: {c['queries']} queries counted, {len(records)} query "
                        f"records")
    for verdict in ("unsat", "sat", "unknown"):
        if c[verdict] != verdicts[verdict]:
            problems.append(f"{name}: {verdict} count {c[verdict]}, but {verdicts[verdict]} "
                            f"query records say {verdict}")
    if set(verdicts) - set(VERDICTS):
        problems.append(f"{name}: unknown verdict(s) {sorted(set(verdicts) - set(VERDICTS))}")
    first_round = c["queries"] - c["escalated"]  # escalated: inconclusive sat, re-asked
    findings = c["instances"] - first_round  # instances settled without a query
    if c["escalated"] > c["sat"] or findings < 0 or (findings and prop != EDGE_NECESSITY):
        problems.append(f"{name}: {c['queries']} queries ({c['escalated']} escalated) for "
                        f"{c['instances']} instances")
    if not verdicts["error"] <= c["errors"] <= c["queries"]:
        problems.append(f"{name}: {c['errors']} errors, but {verdicts['error']} query records "
                        f"are errors")
    if not findings <= c["counterexamples"] <= c["sat"] - c["escalated"] + findings:
        problems.append(f"{name}: {c['counterexamples']} counterexamples do not fit {c['sat']} "
                        f"sat verdicts ({c['escalated']} escalated) and {max(findings, 0)} "
                        "instances settled without a query")
    if c["instances"] - c["counterexamples"] - c["unknown"] - c["errors"] < 0:
        problems.append(f"{name}: more instances undecided or falsified than exist")
    expected = ("ERROR" if c["errors"] else "FAILED" if c["counterexamples"] else
                "UNKNOWN" if c["unknown"] else "VERIFIED")
    if status != expected:
        problems.append(f"{name}: status {status!r}, but the counts make it {expected}")
    if status == "VERIFIED" and not c["unsat"] == first_round == c["instances"] > 0:
        problems.append(f"{name}: VERIFIED needs every one of {c['instances']} instances "
                        f"proved by an unsat query ({c['unsat']} unsat)")
    return problems


_SUBJECT_EPSILON = re.compile(r" eps (\S+) (?:guided|full)\Z")  # `Planner.robustness_query`


def _epsilon_problems(prop: str, task: str, epsilon: Any, records: Sequence[QueryRecord]
                      ) -> list[str]:
    """Robustness speaks of one ε > 0, the one its every query was planned for."""
    if prop != ROBUSTNESS:
        return []
    name = f"property {prop}/{task}"
    value = _fraction(epsilon)
    if value is None or value <= 0:
        return [f"{name}: needs the ε it was proved at, a positive rational (got {epsilon!r})"]
    stray = [r.subject for r in records if (m := _SUBJECT_EPSILON.search(r.subject)) is None
             or _fraction(m[1]) != value]
    return [f"{name}: {len(stray)} query record(s) are not at ε = {epsilon} (first: "
            f"{stray[0]!r})"] if stray else []


def _listed(problems: list[str], what: str, items: list[str]) -> None:
    problems += items[:MAX_REPORTED]
    if len(items) > MAX_REPORTED:
        problems.append(f"... and {len(items) - MAX_REPORTED} more {what}")


def _check_rows(pred: Mapping[str, Any], report: ReplayReport) -> list[str]:
    """Count, canonical order, task, prompt, target, alternate, positive exact margin, and
    the margin the exact evaluator recomputes from the checkpoint."""
    rows, expected = pred.get("rows"), report.rows
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        return ["rows: must be a list of objects"]
    problems: list[str] = []
    indices = Counter(r.get("index") for r in rows)
    if len(rows) != len(expected):
        problems.append(f"rows: {len(rows)} rows, but the domain of "
                        f"{', '.join(t['name'] for t in pred['tasks'])} has {len(expected)}")
    _listed(problems, "duplicated rows", [f"rows: row index {i} appears {n} times (duplicated "
                                          f"row)" for i, n in indices.items() if n > 1])
    _listed(problems, "missing rows", [f"rows: row index {e.row.index} is missing (dropped row)"
                                       for e in expected if e.row.index not in indices])
    if problems:
        return problems
    kinds: dict[str, list[str]] = {}
    for i, (row, exp) in enumerate(zip(rows, expected, strict=True)):
        where = f"row {i}"
        truth = {"index": exp.row.index, "task": exp.row.task.name,
                 "prompt": list(exp.row.prompt), "target": exp.row.target,
                 "alternate": exp.row.alternate}
        for key, value in truth.items():
            if row.get(key) != value:
                kinds.setdefault(key, []).append(
                    f"{where}: {key} is {row.get(key)!r}, expected {value!r}"
                    + (" (canonical order)" if key in ("index", "prompt", "task") else ""))
        margin = _parse_rational(row.get("margin"))
        if margin is None:
            kinds.setdefault("margin", []).append(f"{where}: margin {row.get('margin')!r} is "
                                                  "not a rational 'n/d' in lowest terms")
            continue
        if margin <= 0:
            kinds.setdefault("sign", []).append(f"{where}: margin {row['margin']} is not "
                                                "positive")
        if margin != exp.margin:
            kinds.setdefault("replay", []).append(
                f"{where}: margin {row['margin']} differs from the exact replay of the "
                f"checkpoint, {_rational(exp.margin)}")
        if row.get("margin_float") != float(margin):
            kinds.setdefault("float", []).append(f"{where}: margin_float "
                                                 f"{row.get('margin_float')!r} is not the "
                                                 f"margin {row['margin']} as a float")
    for kind, items in kinds.items():
        _listed(problems, f"{kind} problems", items)
    return problems


def _parse_rational(text: Any) -> Fraction | None:
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    num, den = text.split("/")
    try:
        n, d = int(num), int(den)
    except ValueError:
        return None
    if d <= 0 or not num.lstrip("-").isdigit() or not den.isdigit():
        return None
    value = Fraction(n, d)
    return value if value.denominator == d else None


def _fraction(text: Any) -> Fraction | None:
    """An exact rational exactly as `str(Fraction)` writes it ("1/100", "2"), else None."""
    value = _parse_rational(f"{text}/1" if isinstance(text, str) and "/" not in text else text)
    return value if str(value) == text else None


def _check_model(pred: Mapping[str, Any], ckpt: Checkpoint) -> list[str]:
    """Model metadata against the checkpoint, tensors named one by one."""
    stated, actual = pred.get("model"), model_metadata(ckpt)
    if not isinstance(stated, Mapping):
        return ["model: missing"]
    problems = [f"model: {key} is {stated.get(key)!r}, the checkpoint has {actual[key]!r}"
                for key in actual if key != "tensors" and stated.get(key) != actual[key]]
    shapes = {t["name"]: t["shape"] for t in actual["tensors"]}
    listed = stated.get("tensors")
    if not isinstance(listed, list) or not all(isinstance(t, Mapping) for t in listed):
        return [*problems, "model: tensors must be a list of {name, shape}"]
    named = {t.get("name"): t.get("shape") for t in listed}
    problems += [f"model: tensor {n!r} is not in the checkpoint (renamed tensor?)"
                 for n in named if n not in shapes]
    problems += [f"model: checkpoint tensor {n!r} is not in the certificate" for n in shapes
                 if n not in named]
    problems += [f"model: tensor {n!r} has shape {named[n]} in the certificate, {s} in the "
                 f"checkpoint" for n, s in shapes.items() if n in named and named[n] != s]
    if len(named) != len(listed):
        problems.append("model: a tensor is listed twice")
    return problems


def _check_properties(pred: Mapping[str, Any], records: list[QueryRecord]) -> list[str]:
    """Circuits parse and fit the model; counts fit rows, circuits and query records."""
    problems: list[str] = []
    edges: dict[str, int] = {}
    n_layers, sha = pred["model"]["config"]["n_layers"], pred["checkpoint"]["sha256"]
    for i, data in enumerate(pred.get("circuits") or []):
        try:
            circuit = Circuit.from_json_dict(data, f"circuit {i}")
        except FarmError as err:
            problems.append(str(err))
            continue
        if circuit.n_layers != n_layers or circuit.task in edges or circuit.task is None:
            problems.append(f"circuit {i}: needs a task of its own and {n_layers} layers")
        if circuit.metadata.get("checkpoint_sha256", sha) != sha:
            problems.append(f"circuit {i}: extracted from checkpoint "
                            f"{circuit.metadata['checkpoint_sha256']}, not this one")
        try:
            require_zero_ablation(circuit, f"circuit {i}")
        except FarmError as err:
            problems.append(str(err))
        edges[circuit.task] = len(circuit.edges)
    rows = {t["name"]: t["rows"] for t in pred["tasks"]}
    seen = set()
    for k, entry in enumerate(pred.get("properties") or []):
        if not isinstance(entry, Mapping):
            problems.append(f"properties: entry {k} is not an object")
            continue
        prop, task = entry.get("property"), entry.get("task")
        name = f"property {prop}/{task}"
        if prop not in (FUNCTIONAL_EQUIVALENCE, EDGE_NECESSITY, CONTENT_INVARIANCE,
                        ROBUSTNESS) or task not in rows or task not in edges:
            problems.append(f"{name}: unknown property, or a task without rows or circuit")
            continue
        if (prop, task) in seen:
            problems.append(f"{name}: listed twice")
        seen.add((prop, task))
        counts = entry.get("counts")
        mine = [r for r in records if (r.property, r.task) == (prop, task)]
        if shape := _counts_shape(name, counts):
            problems.append(shape)
            continue
        if not isinstance(entry.get("counterexamples"), list):
            problems.append(f"{name}: counterexamples must be a list")
            continue
        if counts.get("instances") != _instances(prop, rows[task], edges[task],
                                                 counts["queries"] - counts["escalated"]):
            problems.append(f"{name}: {counts.get('instances')} instances, but the task has "
                            f"{rows[task]} rows and its circuit {edges[task]} edges")
        if counts.get("counterexamples") != len(entry.get("counterexamples") or []):
            problems.append(f"{name}: counterexample count {counts.get('counterexamples')} is "
                            f"not the {len(entry.get('counterexamples') or [])} listed")
        problems += _count_problems(prop, task, entry.get("status"), counts, mine)
        problems += _epsilon_problems(prop, task, entry.get("epsilon"), mine)
        if entry.get("radius") is not None:
            problems.append(f"{name}: states certified radii, which no query record backs (the "
                            "radius search's answers are not in the sidecar); certify again: "
                            "farm certify leaves them out")
    stray = {(r.property, r.task) for r in records} - seen
    if stray:
        problems.append(f"query records: no property entry for {sorted(stray)}")
    return problems


@dataclass(frozen=True)
class CheckReport:
    """What `check_certificate` found: every problem by name (empty when it all checks)."""

    problems: list[str]
    predicate: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.problems


def read_envelope(path: str | os.PathLike[str], what: str = "certificate") -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FarmError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FarmError(f"cannot read {what} {path}: {err}") from err
    try:
        return json.loads(text, object_pairs_hook=reject_duplicate_keys(f"{what} {path}"))
    except json.JSONDecodeError as err:
        raise FarmError(f"{what} {path} is not JSON (truncated?): {err}") from None


def check_certificate(path: str | os.PathLike[str], public_key: str | os.PathLike[str],
                      checkpoint_dir: str | os.PathLike[str] | None = None,
                      require_lean: bool = False, require_verified: bool = False
                      ) -> CheckReport:
    """Verify the signature, then re-derive every checkable part of the predicate.

    The checkpoint defaults to the path the certificate records (relative to the
    certificate). Raises FarmError when nothing further can be checked (bad
    signature, unreadable or malformed files); returns every predicate-level
    problem found otherwise.
    """
    statement = verify_statement(read_envelope(path), public_key)
    try:
        return _check(Path(path), statement, checkpoint_dir, require_lean, require_verified)
    except (KeyError, TypeError, AttributeError, ValueError, ZeroDivisionError) as err:
        # A signed payload of the wrong shape is rejected, never half-checked.
        raise FarmError(f"malformed certificate: {type(err).__name__}: {err}") from err


def _sidecar(path: Path, subjects: Mapping[str, str]) -> tuple[Path, str]:
    """The query-record sidecar and the DSSE subject that binds it by hash: beside the
    certificate under its own stem (so a certificate renamed with its sidecar checks), or
    under the name it was signed with."""
    names = [n for n in subjects if n.endswith(SIDECAR_SUFFIX)]
    if len(names) != 1:
        raise FarmError(f"certificate's DSSE subjects {sorted(subjects)} must name exactly one "
                        f"query-record sidecar (*{SIDECAR_SUFFIX})")
    for candidate in dict.fromkeys((sidecar_path(path), path.parent / names[0])):
        if candidate.is_file():
            return candidate, names[0]
    raise FarmError(f"query records: neither {sidecar_path(path)} nor {path.parent / names[0]} "
                    f"(the name the certificate was signed with) exists")


def _check(path: Path, statement: Mapping[str, Any], checkpoint_dir: str | os.PathLike[str]
           | None, require_lean: bool, require_verified: bool) -> CheckReport:
    pred = statement["predicate"]
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    missing = [k for k in ("format_version", "created_at", "software", "model", "checkpoint",
                           "tasks", "rows", "replay", "circuits", "properties", "queries",
                           "lean") if k not in pred]
    if missing:
        raise FarmError(f"certificate lacks {', '.join(missing)}")
    if pred["format_version"] != FORMAT_VERSION:
        raise FarmError(f"certificate has format version {pred['format_version']!r}; this "
                        f"checker reads version {FORMAT_VERSION} (issue it again with farm "
                        "certify from the verify results)")
    problems: list[str] = []
    if checkpoint_dir is None:
        checkpoint_dir = path.parent / pred["checkpoint"]["path"]
    if not Path(checkpoint_dir).is_dir():
        raise FarmError(f"checkpoint directory {checkpoint_dir} does not exist (--checkpoint)")
    stated = pred["checkpoint"].get("sha256")
    if pred["checkpoint"].get("file") != WEIGHTS_FILE:
        problems.append(f"checkpoint: file is {pred['checkpoint'].get('file')!r}, but the "
                        f"SHA-256 is checked against the checkpoint's {WEIGHTS_FILE}")
    weights = file_subject(Path(checkpoint_dir) / WEIGHTS_FILE)["digest"]["sha256"]
    if subjects.get(WEIGHTS_FILE) != stated:
        problems.append(f"checkpoint: the certificate states SHA-256 {stated}, its DSSE "
                        f"subject {WEIGHTS_FILE} {subjects.get(WEIGHTS_FILE)}")
    if weights != stated:
        return CheckReport(problems + [
            f"checkpoint: {checkpoint_dir}/{WEIGHTS_FILE} has SHA-256 {weights}, the "
            f"certificate is for {stated} (modified weights or another checkpoint)"], pred)
    ckpt = load_checkpoint(checkpoint_dir)
    sidecar, subject = _sidecar(path, subjects)
    sidecar_sha = file_subject(sidecar)["digest"]["sha256"]
    if not sidecar_sha == pred["queries"].get("sha256") == subjects[subject]:
        return CheckReport(problems + [
            f"query records: {sidecar} has SHA-256 {sidecar_sha}, the certificate states "
            f"{pred['queries'].get('sha256')} and its DSSE subject {subject} "
            f"{subjects[subject]}"], pred)
    records = read_sidecar(sidecar)
    if len(records) != pred["queries"].get("records"):
        problems.append(f"query records: {len(records)} in {sidecar}, the certificate states "
                        f"{pred['queries'].get('records')}")
    problems += _check_model(pred, ckpt)
    tasks = [t.get("name") for t in pred["tasks"] if isinstance(t, Mapping)]
    try:
        truth = task_entries(tasks)
    except FarmError as err:
        return CheckReport([*problems, f"tasks: {err}"], pred)
    for stated_task, task in zip(pred["tasks"], truth, strict=True):
        problems += [f"tasks: {task['name']} {key} is {stated_task.get(key)!r}, the task "
                     f"defines {value!r}" for key, value in task.items()
                     if stated_task.get(key) != value]
    if tasks != list(dict.fromkeys(tasks)):
        problems.append("tasks: each task must be listed once")
    if problems:  # the rows are only meaningful for the right model and domain
        return CheckReport(problems, pred)
    report = exact_replay(ckpt, tuple(tasks))
    problems += _check_rows(pred, report)
    if pred["replay"].get("min_margin") != _rational(report.min_margin):
        problems.append(f"replay: minimum margin {pred['replay'].get('min_margin')}, the exact "
                        f"replay gives {_rational(report.min_margin)}")
    if pred["replay"].get("min_margin_float") != float(report.min_margin):
        problems.append(f"replay: min_margin_float {pred['replay'].get('min_margin_float')!r} "
                        f"is not the exact minimum margin as a float, "
                        f"{float(report.min_margin)!r}")
    gap = report.float32_gap if math.isfinite(report.float32_gap) else None
    if pred["replay"].get("float32_gap") != gap:
        problems.append(f"replay: float32_gap {pred['replay'].get('float32_gap')!r}, the float32 "
                        f"runtime here differs from the exact logits by at most {gap!r}")
    problems += _check_properties(pred, records)
    if not problems:  # the records belong to these circuits and properties: re-plan them
        parsed = [Circuit.from_json_dict(data, f"circuit {i}")
                  for i, data in enumerate(pred["circuits"])]
        circuits = {c.task: c for c in parsed if c.task}
        for i, circuit in enumerate(parsed):
            problems += provenance_problems(ckpt, circuit, f"circuit {i}")
        if not problems:  # a circuit that does not fit the model is not planned
            problems += claim_problems(ckpt, circuits, pred["properties"], records)
    lean = pred["lean"]
    if lean.get("certificate_fingerprint") != fingerprint(pred):
        problems.append(f"lean: the Lean module was generated for certificate "
                        f"{lean.get('certificate_fingerprint')}, this one is {fingerprint(pred)}")
    if require_lean and lean.get("status") != "ok":
        problems.append(f"lean: the Lean check is required but its outcome is "
                        f"{lean.get('outcome')!r}")
    if require_verified:  # a sound certificate may still certify a failure: a gate says no
        problems += [f"{r['property']}/{r['task']}: VERIFIED is required but it is "
                     f"{r['status']}" for r in pred["properties"] if r["status"] != "VERIFIED"]
        if not pred["properties"]:
            problems.append("properties: VERIFIED is required but none is certified")
    return CheckReport(problems, pred)
