"""Branch traces of the whole domain as one columnar table (Parquet).

Guided SMT encodings need, for every input, which branch each piecewise operator
took in exact arithmetic. `farm.model.exact` records that per row; this module runs it
once over the domain (prefix-memoised) and stores the records as one row per
(input, position, site), so the farm can ship and query traces without
re-running the exact evaluator. Each kind of site fills its own columns and
leaves the others null, which Parquet stores nearly for free; list<bool> is a
bitmap in Arrow and bit-packed in Parquet. The reader returns exactly the records
`RowResult.trace` holds, so encoders cannot tell which one they were given.

The file's metadata names what it traced: the prompts, the circuit (none: the
full model, as `farm.model.exact` runs it) and, when known, the checkpoint's SHA-256,
so a trace of other weights or another circuit is refused before any planning
instead of surfacing as guard failures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from farm.atomic import write_bytes_atomic
from farm.errors import FarmError
from farm.model.circuit import Circuit
from farm.model.exact import BandNormBranch, ExactModel, RowResult, SideBranch

FORMAT = "farm.trace/1"
BAND_NORM, SPARSEMAX, LEAKY_RELU = "band_norm", "sparsemax", "leaky_relu"
_SIDE_FIELDS = (("projected", pa.bool_()), ("rho", pa.int8()), ("lifted", pa.bool_()),
                ("fallback", pa.bool_()), ("support", pa.list_(pa.int8())))
SCHEMA = pa.schema([
    ("input", pa.int32()),
    ("position", pa.int8()),
    ("site", pa.dictionary(pa.int16(), pa.string())),
    ("kind", pa.dictionary(pa.int8(), pa.string())),
    ("signs", pa.list_(pa.int8())),  # band_norm: sign of each centred coordinate
    *[(f"{side}_{name}", kind) for side in "pn" for name, kind in _SIDE_FIELDS],
    ("attn_support", pa.list_(pa.int8())),  # sparsemax: positions with positive weight
    ("act_signs", pa.list_(pa.bool_())),  # leaky_relu: True where the pre-activation ≥ 0
])
Trace = list[dict[str, tuple]]


_KINDS = {"norm": BAND_NORM, "sparsemax": SPARSEMAX, "act": LEAKY_RELU}  # site suffix -> kind


def _kind(site: str) -> str:
    try:
        return _KINDS[site.rsplit(".", 1)[-1]]
    except KeyError:
        raise FarmError(f"trace site {site!r} names no known piecewise operator") from None


def traces_table(rows: Sequence[RowResult], circuit: Circuit | None = None,
                 checkpoint_sha256: str | None = None) -> pa.Table:
    """One table row per (input, position, site) of exact-run results, in input order.

    `checkpoint_sha256` names the weights that were run, so readers can refuse
    the file for another checkpoint.
    """
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for index, row in enumerate(rows):
        for position, sites in enumerate(row.trace):
            for site, record in sites.items():
                kind = _kind(site)
                values: dict[str, Any] = {"input": index, "position": position, "site": site,
                                          "kind": kind}
                if kind == BAND_NORM:
                    values["signs"] = record.signs
                    for side, branch in (("p", record.p), ("n", record.n)):
                        values.update({f"{side}_{k}": v for k, v in branch._asdict().items()})
                elif kind == SPARSEMAX:
                    values["attn_support"] = record
                else:
                    values["act_signs"] = record
                for name, column in columns.items():
                    column.append(values.get(name))
    metadata = {"format": FORMAT, "prompts": json.dumps([list(r.prompt) for r in rows]),
                "circuit": json.dumps(circuit.to_json_dict() if circuit else None)}
    if checkpoint_sha256 is not None:
        metadata["checkpoint_sha256"] = checkpoint_sha256
    return pa.table(columns, schema=SCHEMA.with_metadata(metadata))


def record_traces(model: ExactModel, prompts: Sequence[Sequence[int]], path: str | Path,
                  circuit: Circuit | None = None, checkpoint_sha256: str | None = None
                  ) -> pa.Table:
    """Trace every prompt in one exact run (shared prefixes computed once) and write Parquet."""
    table = traces_table(model.run(prompts, circuit), circuit, checkpoint_sha256)
    write_traces(table, path)
    return table


def write_traces(table: pa.Table, path: str | Path) -> None:
    """Write a trace table as Parquet atomically: a planner never reads half a trace."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(Path(path), sink.getvalue().to_pybytes())


class TraceReader:
    """Reads a trace file back into `RowResult.trace` records, one input at a time.

    `checkpoint_sha256` is the checkpoint the file was recorded for (None when
    the file does not say).
    """

    def __init__(self, path: str | Path, checkpoint: str | None = None):
        """`checkpoint` (a SHA-256) is the one the caller plans on: a file recorded for
        another is refused, its branches belong to other weights."""
        self.path = Path(path)
        try:
            table = pq.read_table(path)
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as err:
            raise FarmError(f"cannot read trace file {path}: {err}") from None
        meta = table.schema.metadata or {}
        if meta.get(b"format") != FORMAT.encode():
            raise FarmError(f"{path} is not a {FORMAT} trace file")
        self.prompts: list[tuple[int, ...]] = [tuple(p) for p in json.loads(meta[b"prompts"])]
        circuit = json.loads(meta[b"circuit"])
        self.circuit = Circuit.from_json_dict(circuit, str(path)) if circuit else None
        recorded = meta.get(b"checkpoint_sha256")
        self.checkpoint_sha256 = recorded.decode() if recorded is not None else None
        if checkpoint is not None and self.checkpoint_sha256 not in (None, checkpoint):
            raise FarmError(f"trace {path} was recorded for checkpoint {self.checkpoint_sha256}, "
                            f"not {checkpoint}")
        self.table = table.combine_chunks()
        inputs = self.table["input"].to_numpy()
        self._bounds = np.searchsorted(inputs, np.arange(len(self.prompts) + 1))

    def __len__(self) -> int:
        return len(self.prompts)

    def traces_of(self, circuit: Circuit, prompts: Sequence[tuple[int, ...]]
                  ) -> dict[tuple[int, ...], Trace]:
        """The records of `prompts`, refused unless this file traced `circuit` on them.

        Matched by prompt, not index, so a whole-domain trace serves any subset.
        A file with no circuit recorded traced the full model (as `farm.model.exact` runs
        with no circuit), so it serves only a circuit that keeps every edge.
        """
        traced = self.circuit
        if traced is None:  # in the planned circuit's shape: any full one equals the model
            traced = Circuit.full(circuit.n_layers, circuit.n_heads, circuit.granularity,
                                  circuit.task, circuit.attention_only)
        if traced != circuit:
            what = "another circuit" if self.circuit else "the full model (no circuit recorded)"
            raise FarmError(f"trace {self.path} was recorded for {what}: "
                            f"{_difference(traced, circuit)}")
        index = {p: k for k, p in enumerate(self.prompts)}
        missing = [p for p in prompts if p not in index]
        if missing:
            raise FarmError(f"trace {self.path} has no record of {len(missing)} of the "
                            f"{len(prompts)} prompts planned, e.g. {list(missing[0])}: it was "
                            "recorded for other prompts")
        return {p: self.trace(index[p]) for p in prompts}

    def trace(self, index: int) -> Trace:
        """The branch records of one input: per position, site → branch (as farm.model.exact)."""
        if not 0 <= index < len(self):
            raise FarmError(f"input {index} is outside the trace (0..{len(self) - 1})")
        start, stop = self._bounds[index], self._bounds[index + 1]
        trace: Trace = [{} for _ in self.prompts[index]]
        for rec in self.table.slice(start, stop - start).to_pylist():
            trace[rec["position"]][rec["site"]] = _branch(rec)
        return trace


def _branch(rec: dict[str, Any]) -> tuple:
    if rec["kind"] == BAND_NORM:
        p, n = (SideBranch(*(rec[f"{side}_{name}"] for name, _ in _SIDE_FIELDS[:-1]),
                           tuple(rec[f"{side}_support"])) for side in "pn")
        return BandNormBranch(tuple(rec["signs"]), p, n)
    if rec["kind"] == SPARSEMAX:
        return tuple(rec["attn_support"])
    return tuple(rec["act_signs"])


def _difference(traced: Circuit, planned: Circuit) -> str:
    """What tells two circuits apart, for the user."""
    found = []
    if extra := sorted(traced.edges - planned.edges):
        found.append(f"it has edge(s) {extra} not planned")
    if absent := sorted(planned.edges - traced.edges):
        found.append(f"it lacks the planned edge(s) {absent}")
    return "; ".join(found) or (
        f"it is a {traced.granularity} circuit of {traced.n_layers} layers for task "
        f"{traced.task}, not a {planned.granularity} one of {planned.n_layers} for {planned.task}")
