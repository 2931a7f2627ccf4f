"""Solver results by query hash, persisted as Parquet part files.

A query is named by the sha256 of its text, so a result found here is the
answer to exactly that query: reruns and retries cost nothing, and the files
are an audit trail a reader can open with any Arrow tool. Each `flush` writes
one new part file (temp file, fsync, `os.replace`), so a crash leaves either
a whole part or none; opening reads every part, later parts winning. The
cache stores what it is given: whether an "unknown" is worth retrying with a
longer timeout is the caller's decision (a later `put` for the hash wins).
Several processes may share a directory; each sees the others' parts on open.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from encoders.solvers import RaceResult

__all__ = ["Record", "ResultCache", "SCHEMA"]

SCHEMA = pa.schema([
    ("query_hash", pa.string()),
    ("property", pa.string()),
    ("task", pa.string()),
    ("subject", pa.string()),  # input index, pair or edge, as text
    ("status", pa.string()),
    ("winner", pa.string()),
    ("z3_seconds", pa.float64()),
    ("cvc5_seconds", pa.float64()),
    ("model", pa.string()),  # JSON {var: "n/d"}: exact, readable without this code
    ("reason", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True)
class Record:
    """One solved query, as stored."""

    query_hash: str
    property: str
    task: str
    subject: str
    status: str
    winner: str | None
    z3_seconds: float | None
    cvc5_seconds: float | None
    model: dict[str, Fraction]
    reason: str
    created_at: datetime

    @classmethod
    def from_result(cls, query_hash: str, property: str, task: str, subject: str,
                    result: RaceResult) -> Record:
        return cls(query_hash, property, task, subject, result.status, result.winner,
                   result.seconds("z3"), result.seconds("cvc5"), dict(result.model),
                   result.reason, datetime.now(UTC))

    def _row(self) -> dict:
        row = asdict(self)
        row["model"] = json.dumps(
            {v: f"{q.numerator}/{q.denominator}" for v, q in self.model.items()}, sort_keys=True)
        return row

    @classmethod
    def _from_row(cls, row: dict) -> Record:
        row["model"] = {v: Fraction(q) for v, q in json.loads(row["model"]).items()}
        return cls(**row)


class ResultCache:
    """A directory of Parquet parts, indexed in memory by query hash."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, Record] = {}
        self._pending: list[Record] = []
        for part in sorted(self.root.glob("part-*.parquet")):  # names sort in write order
            for row in pq.read_table(part, schema=SCHEMA).to_pylist():
                self._index[row["query_hash"]] = Record._from_row(row)

    def get(self, query_hash: str) -> Record | None:
        return self._index.get(query_hash)

    def put(self, records: Iterable[Record]) -> None:
        """Remember records now; they reach disk at the next `flush`."""
        for r in records:
            self._index[r.query_hash] = r
            self._pending.append(r)

    def flush(self) -> Path | None:
        """Write pending records as one new part file; return it (None if nothing pending)."""
        if not self._pending:
            return None
        table = pa.Table.from_pylist([r._row() for r in self._pending], schema=SCHEMA)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp, final = self.root / f".tmp-{name}", self.root / name
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._pending.clear()
        return final

    def __contains__(self, query_hash: str) -> bool:
        return query_hash in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._index.values())

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
