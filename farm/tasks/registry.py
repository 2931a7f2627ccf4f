"""Task families by name, and task specs: a family plus parameters.

A spec is one string on the command line, `family` or `family:k=v,k=v`
(`quote_close:len=10,fillers=8`), or in a job spec a mapping `{family: {k: v}}`.
Parameters are whole numbers; those left out take the family's defaults. Each task
has one canonical name: the family alone when every parameter is its default
(so SPEC's `quote_close` and `bracket_type` keep their names, rows, query texts
and hashes), else the family with every parameter in its declared order. Parameters
a family gained later (`added`) are written only when set, so the tasks named before
keep their names (and the certificates that state them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from farm.errors import FarmError
from farm.tasks.depth import BracketDepth
from farm.tasks.induction import Induction, OffsetInduction
from farm.tasks.lookup import Lookup
from farm.tasks.max_of_k import MaxOfK
from farm.tasks.task import Prompt, Task
from farm.tasks.vocab import (
    CLOSE_CURLY,
    CLOSE_SQUARE,
    DOUBLE_QUOTE,
    OPEN_CURLY,
    OPEN_SQUARE,
    SINGLE_QUOTE,
    TASK_BRACKET,
    TASK_QUOTE,
)


@dataclass(frozen=True)
class Family:
    name: str
    summary: str
    defaults: Mapping[str, int]  # parameter -> default, in the order names are written
    build: Callable[..., Task]  # (canonical name, **parameters) -> Task
    added: Mapping[str, int] = field(default_factory=dict)  # later parameters -> default


FAMILIES = {f.name: f for f in (
    Family("quote_close", "close the quote the prompt opened", {"len": 6, "fillers": 4},
           lambda name, len, fillers: Lookup(name, TASK_QUOTE, {SINGLE_QUOTE: SINGLE_QUOTE,
                                             DOUBLE_QUOTE: DOUBLE_QUOTE}, len, fillers)),
    Family("bracket_type", "close the bracket the prompt opened", {"len": 6, "fillers": 4},
           lambda name, len, fillers: Lookup(name, TASK_BRACKET, {OPEN_SQUARE: CLOSE_SQUARE,
                                             OPEN_CURLY: CLOSE_CURLY}, len, fillers)),
    Family("bracket_depth", "may ')' come next: brackets well nested and one still open",
           {"len": 6, "fillers": 1}, lambda name, len, fillers: BracketDepth(name, len, fillers)),
    Family("induction", "a pattern, then again up to its last token: copy the token one "
           "period back; with len, distinct tokens and the pattern at any offset",
           {"vocab": 8, "period": 4},
           lambda name, vocab, period, len: (OffsetInduction(name, vocab, period, len) if len
                                             else Induction(name, vocab, period)),
           added={"len": 0}),
    Family("max_of_k", "the largest of k value tokens 0..vocab-1 (own vocabulary, no BOS)",
           {"k": 4, "vocab": 64}, lambda name, k, vocab: MaxOfK(name, k, vocab)),
)}
DEFAULT_TASKS = ("quote_close", "bracket_type")
_SPEC = re.compile(r"([a-z_][a-z0-9_]*)(?::(.*))?\Z")


def canonical(spec: str | Mapping[str, Any]) -> str:
    """The canonical name of a task spec (a string, or a job spec's {family: {k: v}})."""
    family, given = _parse(spec)
    params = {**family.defaults, **family.added, **given}
    if params == {**family.defaults, **family.added}:
        return family.name
    return family.name + ":" + ",".join(
        [f"{k}={params[k]}" for k in family.defaults]
        + [f"{k}={params[k]}" for k, v in family.added.items() if params[k] != v])


def _parse(spec: str | Mapping[str, Any]) -> tuple[Family, dict[str, int]]:
    if isinstance(spec, Mapping):
        if len(spec) != 1 or not isinstance(name := next(iter(spec)), str) or not isinstance(
                params := spec[name] or {}, Mapping):
            raise FarmError(f"task {dict(spec)!r}: expected {{family: {{parameter: value}}}}")
        given: dict[str, Any] = dict(params)
    else:
        if not isinstance(spec, str) or not (match := _SPEC.match(spec.strip())):
            raise FarmError(f"task {spec!r}: expected family or family:k=v,k=v")
        name, text = match.groups()
        given = {}
        for item in filter(None, (text or "").split(",")):
            key, sep, value = item.partition("=")
            if not sep or key.strip() in given:
                raise FarmError(f"task {spec!r}: {item!r} is not a new k=v parameter")
            given[key.strip()] = value.strip()
    family = FAMILIES.get(name)
    if family is None:
        raise FarmError(f"unknown task {name!r}; known families: {', '.join(FAMILIES)} "
                        "(write family or family:k=v,...)")
    unknown = set(given) - set(family.defaults) - set(family.added)
    if unknown:
        raise FarmError(f"task {family.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                        f"it takes {', '.join([*family.defaults, *family.added])}")
    values = {}
    for key, value in given.items():
        if isinstance(value, bool) or not str(value).isdigit():
            raise FarmError(f"task {family.name}: {key} must be a whole number, got {value!r}")
        values[key] = int(value)
    return family, values


@lru_cache(maxsize=256)
def _build(name: str) -> Task:
    family, given = _parse(name)
    return family.build(name, **{**family.defaults, **family.added, **given})


def get_task(spec: str | Mapping[str, Any]) -> Task:
    """The task a spec names (one object per canonical name)."""
    return _build(canonical(spec))


def task_help() -> str:
    """One line per family: its name, parameters with defaults, and what it asks."""
    return "; ".join(f"{f.name}:" + ",".join(f"{k}={v}" for k, v in
                                             {**f.defaults, **f.added}.items())
                     + f" ({f.summary})" for f in FAMILIES.values())


def get_tasks(specs: Iterable[str]) -> list[Task]:
    return [get_task(s) for s in specs]


@dataclass(frozen=True)
class Row:
    """One domain input with its expected answer: the unit of every check."""

    index: int
    task: Task
    prompt: Prompt

    @property
    def target(self) -> int:
        return self.task.target(self.prompt)

    @property
    def alternate(self) -> int:
        return self.task.alternate(self.prompt)


def domain_rows(tasks: Iterable[str] = DEFAULT_TASKS) -> list[Row]:
    """The domains of the given tasks in canonical order, one after another (SPEC: quote
    rows, then bracket rows), as rows: for the small domains that are replayed whole."""
    rows: list[Row] = []
    for task in get_tasks(tasks):
        start = len(rows)
        rows.extend(Row(start + i, task, p) for i, p in enumerate(task.domain()))
    return rows
