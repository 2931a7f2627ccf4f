"""Tasks: vocabulary, exhaustive domains, reference programs, candidate sets.

A task is data, not code paths: a `Task` knows its prompts in canonical order,
its reference program P (a lookup from the decisive token to the target) and
its candidate set T. New tasks register themselves with `register` and every
consumer (training, exact replay, encoders, certificates) picks them up by name.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from farm.errors import FarmError

PAD, BOS, TASK_QUOTE, TASK_BRACKET = 0, 1, 2, 3
FILLERS = (5, 6, 7, 8)  # A B C D
SINGLE_QUOTE, DOUBLE_QUOTE = 9, 10
OPEN_SQUARE, OPEN_CURLY, CLOSE_SQUARE, CLOSE_CURLY = 11, 12, 13, 14
TOKEN_NAMES = {PAD: "PAD", BOS: "BOS", TASK_QUOTE: "TASK_QUOTE", TASK_BRACKET: "TASK_BRACKET",
               5: "A", 6: "B", 7: "C", 8: "D", SINGLE_QUOTE: "'", DOUBLE_QUOTE: '"',
               OPEN_SQUARE: "[", OPEN_CURLY: "{", CLOSE_SQUARE: "]", CLOSE_CURLY: "}"}


@dataclass(frozen=True)
class Task:
    """A prompt family `[BOS, task_token, x1, opener, x2, x3]` closed by a lookup program."""

    name: str
    task_token: int
    program: dict[int, int]  # opener -> target: the reference program P
    fillers: tuple[int, ...] = FILLERS
    n_before: int = 1  # fillers between the task token and the opener
    n_after: int = 2  # fillers after the opener

    @property
    def openers(self) -> tuple[int, ...]:
        return tuple(self.program)

    @property
    def candidates(self) -> tuple[int, ...]:
        """The candidate set T, in ascending token order."""
        return tuple(sorted(set(self.program.values())))

    @property
    def seq_len(self) -> int:
        return 2 + self.n_before + 1 + self.n_after

    @property
    def opener_position(self) -> int:
        return 2 + self.n_before

    def domain(self) -> list[tuple[int, ...]]:
        """Every prompt, in canonical order: fillers outermost (lexicographic), opener innermost."""
        rows = []
        for fill in itertools.product(self.fillers, repeat=self.n_before + self.n_after):
            for opener in self.openers:
                before, after = fill[: self.n_before], fill[self.n_before:]
                rows.append((BOS, self.task_token, *before, opener, *after))
        return rows

    def target(self, prompt: tuple[int, ...]) -> int:
        """P(x): the reference program's answer for a prompt."""
        return self.program[prompt[self.opener_position]]

    def alternate(self, prompt: tuple[int, ...]) -> int:
        """The other candidate: the token a wrong decision would pick."""
        target = self.target(prompt)
        (other,) = [t for t in self.candidates if t != target]
        return other

    def same_class(self, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        """The content-invariance relation R: prompts sharing the decisive token."""
        return a[self.opener_position] == b[self.opener_position]


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} is already registered")
    if len(task.candidates) != 2:
        raise ValueError(f"task {task.name!r}: the decision needs exactly two candidates")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FarmError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}") from None


def task_names() -> list[str]:
    return list(_REGISTRY)


def get_tasks(names: Iterable[str]) -> list[Task]:
    return [get_task(n) for n in names]


QUOTE_CLOSE = register(Task("quote_close", TASK_QUOTE,
                            {SINGLE_QUOTE: SINGLE_QUOTE, DOUBLE_QUOTE: DOUBLE_QUOTE}))
BRACKET_TYPE = register(Task("bracket_type", TASK_BRACKET,
                             {OPEN_SQUARE: CLOSE_SQUARE, OPEN_CURLY: CLOSE_CURLY}))
DEFAULT_TASKS = ("quote_close", "bracket_type")


@dataclass(frozen=True)
class Row:
    """One domain input with its expected answer: the unit of every check."""

    index: int
    task: Task
    prompt: tuple[int, ...]

    @property
    def target(self) -> int:
        return self.task.target(self.prompt)

    @property
    def alternate(self) -> int:
        return self.task.alternate(self.prompt)


def domain_rows(tasks: Iterable[str] = DEFAULT_TASKS) -> list[Row]:
    """The exhaustive domain of the given tasks in canonical order (quote rows, then bracket)."""
    rows: list[Row] = []
    for task in get_tasks(tasks):
        start = len(rows)
        rows.extend(Row(start + i, task, p) for i, p in enumerate(task.domain()))
    return rows
