"""A brute force's progress on disk, one line per unit decided, so that a killed run
resumes where it stopped.

The first line names what the journal is of (checkpoint SHA-256, task, the units);
each later line is one unit's tally, appended and fsynced as it arrives. Reading keeps
the first tally of each unit, so a unit recorded twice counts once, and drops a last
line a kill cut short: a unit is done only once its whole line is on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm.atomic import write_text_atomic
from farm.errors import FarmError
from farm.proofs.maxk.brute import Tally, pair_prompts, pairs
from farm.tasks.max_of_k import MaxOfK

FORMAT = "farm.maxk-brute-journal/1"
Unit = tuple[int, int]  # [first, stop) of `brute.pairs`: the prompts of those (q, m)


def plan_units(task: MaxOfK, count: int) -> list[Unit]:
    """The domain as at most `count` units of consecutive (query, maximum) pairs, cut so
    that each holds about the same number of prompts (a pair's share grows with m)."""
    if count < 1:
        raise FarmError(f"the domain is cut into at least one unit, not {count}")
    sizes = [pair_prompts(task.k - 1, q, m) for q, m in pairs(task.vocab)]
    total, units, first, done = sum(sizes), [], 0, 0
    for i, size in enumerate(sizes):
        done += size
        if done * count >= total * (len(units) + 1) or i == len(sizes) - 1:
            units.append((first, i + 1))
            first = i + 1
    return units


@dataclass
class Journal:
    path: Path
    header: dict[str, Any]
    done: dict[Unit, Tally] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike[str], checkpoint_sha256: str, task: str,
             units: list[Unit]) -> Journal:
        """The journal at `path`, created if absent; refused if it is of another proof."""
        path = Path(path)
        header = {"format": FORMAT, "checkpoint_sha256": checkpoint_sha256, "task": task,
                  "units": [list(u) for u in units]}
        if not path.exists():
            write_text_atomic(path, json.dumps(header) + "\n")
            return cls(path, header)
        text = path.read_text()
        whole = text[:text.rfind("\n") + 1]  # a line without its newline was cut short
        lines = whole.splitlines()
        try:
            found = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            found = None
        if found != header:
            raise FarmError(f"{path} is not the journal of this brute force (checkpoint "
                            f"{checkpoint_sha256[:16]}…, {task}, {len(units)} units); remove "
                            "it or give another --journal")
        journal = cls(path, header)
        for number, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
                unit, tally = (entry["first"], entry["stop"]), Tally(**entry["tally"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise FarmError(f"{path}, line {number}: not a unit's tally ({err})") from None
            if unit not in units:
                raise FarmError(f"{path}, line {number}: unit {unit} is not in the plan")
            journal.done.setdefault(unit, tally)
        if whole != text:
            write_text_atomic(path, whole)
        return journal

    def record(self, unit: Unit, tally: Tally) -> None:
        """Append the unit's tally and make it durable before anything else happens."""
        if unit in self.done:
            return
        line = json.dumps({"first": unit[0], "stop": unit[1], "tally": asdict(tally)})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[unit] = tally

    def total(self) -> Tally:
        return sum(self.done.values(), Tally())
