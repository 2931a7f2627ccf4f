"""The ledger: unit verdicts persisted as they arrive, read back on resubmission.

One part file per solved shard of units, written atomically before `accept`
returns, so "shard done" means "on disk" (as for the query cache). The first
verdict per unit is kept; a unit decided again (a shard rerun after its actor
died with the answer in flight) is counted as a duplicate and ignored, so nothing
is counted twice. A part that cannot be read is set aside with a warning and its
units are decided again: a verdict is re-derivable, never trusted from a damaged
file. The folder belongs to one checkpoint (`farm run` keys it by the checkpoint's
hash; the units name their task and circuit).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.atomic import write_text_atomic
from farm.errors import FarmError
from farm.model.circuit import Edge
from farm.units.unit import Unit
from farm.units.verdict import UnitVerdict
from farm.verify.jobs import ShardReport


@dataclass(frozen=True)
class UnitShard:
    """Units dispatched together to one actor (`farm.verify.jobs.dispatch`), and the edges
    (per task) still lacking a witness when the shard was handed out, which its units
    search for."""

    index: int
    units: tuple[Unit, ...]
    search: tuple[tuple[str, Edge], ...] = ()  # (task, edge)


@dataclass(frozen=True)
class UnitShardReport(ShardReport):
    """A decided shard's report (`solved` holds the units' keys), with the edges its
    units found a witness of: the driver stops asking for those."""

    witnessed: tuple[tuple[str, Edge], ...] = ()  # (task, edge)


@dataclass(frozen=True)
class UnitShardResult:
    report: UnitShardReport
    verdicts: tuple[UnitVerdict, ...]


class Ledger:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.verdicts: dict[str, UnitVerdict] = {}
        self.duplicates = 0
        self.warnings: list[str] = []
        for part in sorted(self.root.glob("part-*.json")):
            try:
                data = json.loads(part.read_text(encoding="utf-8"))
                found = [UnitVerdict.from_json(v, str(part)) for v in data["verdicts"]]
            except (OSError, ValueError, KeyError, TypeError, FarmError) as err:
                aside = part.with_suffix(".damaged")
                os.replace(part, aside)
                self.warnings.append(f"{part} unreadable ({err}); moved to {aside.name}, "
                                     "its units are decided again")
                continue
            for v in found:
                self.verdicts.setdefault(v.unit.key, v)

    def expect(self, units: Sequence[Unit]) -> list[Unit]:
        """The units with no verdict yet."""
        return [u for u in units if u.key not in self.verdicts]

    def accept(self, result: UnitShardResult) -> ShardReport:
        """Persist a decided shard, then keep each unit's first verdict."""
        fresh = [v for v in result.verdicts if v.unit.key not in self.verdicts]
        self.duplicates += len(result.verdicts) - len(fresh)
        if fresh:
            text = json.dumps({"verdicts": [v.to_json() for v in fresh]}, sort_keys=True)
            name = hashlib.sha256(text.encode()).hexdigest()[:24]
            write_text_atomic(self.root / f"part-{name}.json", text + "\n")
        for v in fresh:
            self.verdicts[v.unit.key] = v
        return result.report

    def witnessed(self, units: Sequence[Unit]) -> list[tuple[str, Edge]]:
        """(task, edge) of every witness the verdicts of `units` found so far."""
        return sorted({(u.task, s.edge) for u in units if (v := self.verdicts.get(u.key))
                       for s in v.searched if s.input is not None})

    def collect(self, units: Sequence[Unit]) -> list[UnitVerdict]:
        """The verdicts of `units`, each decided by now."""
        missing = [u for u in units if u.key not in self.verdicts]
        if missing:
            raise FarmError(f"{len(missing)} units have no verdict (first [{missing[0].start}, "
                            f"{missing[0].stop}) of {missing[0].task})")
        return [self.verdicts[u.key] for u in units]

    def state(self) -> dict[str, Any]:
        """For the driver: duplicates ignored, damaged parts set aside (one line each)."""
        return {"verdicts": len(self.verdicts), "duplicates": self.duplicates,
                "warnings": list(self.warnings)}
