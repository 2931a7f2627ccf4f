"""Solver results by query hash, persisted as Parquet part files.

A query is named by the sha256 of its text, so a result found here is the
answer to exactly that query: reruns and retries cost nothing, and the files
are an audit trail a reader can open with any Arrow tool. Each `flush` writes
one new part file (temp file, fsync, `os.replace`), so a crash leaves either
a whole part or none; opening reads every part, later parts winning. A part
that cannot be read whole (truncated, copied half, edited) is set aside as
`NAME.damaged`, never deleted, and named in `warnings`: its answers are
simply absent, so their queries are solved again. The
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

__all__ = ["Record", "ResultCache", "SCHEMA", "STATUSES"]

STATUSES = ("sat", "unsat", "unknown", "error")
DAMAGED = ".damaged"  # suffix of a part set aside: kept for inspection, never read again

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
        """A stored row, or ValueError naming what is malformed: a record read back must be
        what `put` stored, or it is no answer."""
        if not isinstance(row["query_hash"], str) or row["status"] not in STATUSES:
            raise ValueError(f"a row has query hash {row['query_hash']!r} and status "
                             f"{row['status']!r}")
        model = json.loads(row["model"] or "null")
        if not (isinstance(model, dict) and all(isinstance(v, str) for v in model.values())):
            raise ValueError(f"query {row['query_hash'][:16]}: its model is not a JSON map "
                             "of variables to rationals")
        row["model"] = {v: Fraction(q) for v, q in model.items()}  # ValueError if not one
        return cls(**row)


class ResultCache:
    """A directory of Parquet parts, indexed in memory by query hash."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, Record] = {}
        self._pending: list[Record] = []
        self.warnings: list[str] = []  # one line per part set aside on opening
        for part in sorted(self.root.glob("part-*.parquet")):  # names sort in write order
            try:
                records = [Record._from_row(row)
                           for row in pq.read_table(part, schema=SCHEMA).to_pylist()]
            except (OSError, ValueError, ZeroDivisionError, KeyError, TypeError,
                    pa.ArrowException) as err:
                self.warnings.append(self._set_aside(part, err))
                continue
            self._index.update((r.query_hash, r) for r in records)

    @staticmethod
    def _set_aside(part: Path, err: Exception) -> str:
        """Rename a part that cannot be read whole out of the way; say so in one line."""
        said = " ".join(str(err).replace(f"'{part}'", "").replace(str(part), "").split())
        reason = said[:200] or type(err).__name__
        aside = part.with_name(part.name + DAMAGED)
        try:
            os.replace(part, aside)
        except OSError as move:
            return (f"cache part {part} is damaged ({reason}) and could not be set aside "
                    f"({move.strerror or move}); its queries are solved again")
        return (f"cache part {part} is damaged ({reason}); set aside as {aside.name}, its "
                "queries are solved again")

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
