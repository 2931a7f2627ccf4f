"""The motif DSL: typed programs from a prompt to a candidate token.

Three kinds of value: a token (`tok`), a whole number (`int`) and a truth value
(`bool`). The motifs are the ones small transformers are known to implement: the
token at a position, the first or last token of a class, the largest token
(Max-of-K), the token after the previous occurrence of the last one (induction),
a running counter of one class (minus another), its final, lowest or highest
value, parity, threshold detectors, comparisons, and a two-state machine driven
by two token classes.

Every program has one semantics, written once per node as `apply` over numpy
arrays (a batch of prompts at a time), and prints as a plain Python function a
user can paste and run (`program_source`); the tests hold the two to each other.
A program's size is its number of nodes: the search enumerates by it.
"""

from __future__ import annotations

import textwrap
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np

from farm.errors import FarmError
from farm.tasks.vocab import (
    BOS,
    CLOSE_CURLY,
    CLOSE_PAREN,
    CLOSE_SQUARE,
    DOUBLE_QUOTE,
    FILLER_POOL,
    OPEN_CURLY,
    OPEN_PAREN,
    OPEN_SQUARE,
    PAD,
    SINGLE_QUOTE,
    TASK_BRACKET,
    TASK_DEPTH,
    TASK_QUOTE,
)

Kind = Literal["tok", "int", "bool"]
NO_TOKEN = PAD  # what Find gives when no token of the class occurs
CLOSER = {OPEN_SQUARE: CLOSE_SQUARE, OPEN_CURLY: CLOSE_CURLY, OPEN_PAREN: CLOSE_PAREN}
TOKEN_NAMES = {PAD: "PAD", BOS: "BOS", TASK_QUOTE: "TASK_QUOTE", TASK_BRACKET: "TASK_BRACKET",
               TASK_DEPTH: "TASK_DEPTH", SINGLE_QUOTE: "'", DOUBLE_QUOTE: '"', OPEN_SQUARE: "[",
               OPEN_CURLY: "{", CLOSE_SQUARE: "]", CLOSE_CURLY: "}", OPEN_PAREN: "(",
               CLOSE_PAREN: ")"} | {t: chr(ord("A") + i) for i, t in enumerate(FILLER_POOL)}
_TABLE_SIZE = 1 + max(max(TOKEN_NAMES), max(CLOSER.values()))


@dataclass(frozen=True)
class TokenClass:
    """A named set of tokens: what counters count and machines react to."""

    name: str  # a Python identifier: it names variables in the printed program
    tokens: frozenset[int]

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.tokens:
            raise FarmError(f"token class {self.name!r}: needs an identifier and some tokens")

    def mask(self, prompts: np.ndarray) -> np.ndarray:
        return np.isin(prompts, list(self.tokens))

    def test(self, var: str) -> str:
        """Python for `var is of this class`."""
        if len(self.tokens) == 1:
            return f"{var} == {next(iter(self.tokens))}"
        return f"{var} in {{{', '.join(map(str, sorted(self.tokens)))}}}"


class Emitter:
    """Collects the statements a program's return expression needs, each once, in order."""

    def __init__(self) -> None:
        self.blocks: dict[str, list[str]] = {}

    def define(self, name: str, lines: list[str]) -> str:
        self.blocks.setdefault(name, lines)
        return name


class Program(ABC):
    """A DSL node: `kind` is what it computes, its fields are its parameters and children."""

    kind: ClassVar[Kind]
    tag: ClassVar[str]
    takes: ClassVar[tuple[Kind, ...]] = ()  # the kinds of its children, in order

    def children(self) -> tuple[Program, ...]:
        return tuple(v for v in self._values() if isinstance(v, Program))

    def _values(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]

    @property
    def size(self) -> int:
        return 1 + sum(child.size for child in self.children())

    @abstractmethod
    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        """The value on each prompt of a batch [n, L], given the children's values [n]."""

    def evaluate(self, prompts: np.ndarray) -> np.ndarray:
        prompts = np.asarray(prompts, dtype=np.int64)
        return self.apply(prompts, *(child.evaluate(prompts) for child in self.children()))

    @abstractmethod
    def python(self, out: Emitter) -> str:
        """A Python expression for the value (statements it needs go to `out`)."""

    def to_json(self) -> list[Any]:
        return [self.tag, *(_encode(v) for v in self._values())]

    def __str__(self) -> str:
        return self.python(Emitter())


# ------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Const(Program):
    kind, tag = "tok", "const"
    token: int

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return np.full(len(prompts), self.token, dtype=np.int64)

    def python(self, out: Emitter) -> str:
        return str(self.token)


@dataclass(frozen=True)
class At(Program):
    """The token at a fixed position."""

    kind, tag = "tok", "at"
    position: int

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return prompts[:, self.position]

    def python(self, out: Emitter) -> str:
        return f"prompt[{self.position}]"


@dataclass(frozen=True)
class Find(Program):
    """The first (or last) token of a class in the prompt; PAD if none occurs."""

    kind, tag = "tok", "find"
    which: str  # "first" or "last"
    of: TokenClass

    def __post_init__(self) -> None:
        if self.which not in ("first", "last"):
            raise FarmError(f"find: which is first or last, not {self.which!r}")

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        if self.which == "last":
            prompts = prompts[:, ::-1]
        mask = self.of.mask(prompts)
        found = prompts[np.arange(len(prompts)), mask.argmax(axis=1)]
        return np.where(mask.any(axis=1), found, NO_TOKEN)

    def python(self, out: Emitter) -> str:
        tokens = "prompt" if self.which == "first" else "reversed(prompt)"
        return f"next((t for t in {tokens} if {self.of.test('t')}), {NO_TOKEN})"


@dataclass(frozen=True)
class Largest(Program):
    """The largest token of the prompt (Max-of-K: token ids are the values)."""

    kind, tag = "tok", "largest"

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return prompts.max(axis=1)

    def python(self, out: Emitter) -> str:
        return "max(prompt)"


@dataclass(frozen=True)
class AfterPrevious(Program):
    """The induction motif: the token after the previous occurrence of the last token
    (the latest earlier position holding it); PAD if it has not occurred before."""

    kind, tag = "tok", "after_previous"

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        earlier = prompts[:, :-1] == prompts[:, -1:]  # [n, L-1]: position j holds it
        latest = earlier.shape[1] - 1 - earlier[:, ::-1].argmax(axis=1)
        found = prompts[np.arange(len(prompts)), np.minimum(latest + 1, prompts.shape[1] - 1)]
        return np.where(earlier.any(axis=1), found, NO_TOKEN)

    def python(self, out: Emitter) -> str:
        return ("next((prompt[j + 1] for j in range(len(prompt) - 2, -1, -1) "
                f"if prompt[j] == prompt[-1]), {NO_TOKEN})")


@dataclass(frozen=True)
class Closer(Program):
    """The token that closes an opener (a quote closes itself; any other token maps to
    itself)."""

    kind, tag = "tok", "closer"
    takes = ("tok",)
    arg: Program

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        table = np.arange(_TABLE_SIZE)
        table[list(CLOSER)] = list(CLOSER.values())
        (x,) = args
        return np.where(x < _TABLE_SIZE, table[np.clip(x, 0, _TABLE_SIZE - 1)], x)

    def python(self, out: Emitter) -> str:
        pairs = ", ".join(f"{k}: {v}" for k, v in CLOSER.items())
        out.define("CLOSER", [f"CLOSER = {{{pairs}}}  # opener -> closer; quotes close "
                              "themselves"])
        x = self.arg.python(out)
        return f"CLOSER.get({x}, {x})"


@dataclass(frozen=True)
class If(Program):
    kind, tag = "tok", "if"
    takes = ("bool", "tok", "tok")
    cond: Program
    then: Program
    other: Program

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        cond, then, other = args
        return np.where(cond, then, other)

    def python(self, out: Emitter) -> str:
        return f"({self.then.python(out)} if {self.cond.python(out)} else " \
               f"{self.other.python(out)})"


# ------------------------------------------------------------------------------- counters

_STATS = {"final": ("{}[-1]", lambda run: run[:, -1]),
          "lowest": ("min({})", lambda run: run.min(axis=1)),
          "highest": ("max({})", lambda run: run.max(axis=1))}


@dataclass(frozen=True)
class Count(Program):
    """A running counter over the prompt, +1 for each token of `plus`, −1 for each of
    `minus` (if given), starting at 0: its final, lowest or highest value."""

    kind, tag = "int", "count"
    stat: str
    plus: TokenClass
    minus: TokenClass | None

    def __post_init__(self) -> None:
        if self.stat not in _STATS:
            raise FarmError(f"count: stat {self.stat!r} is not one of {', '.join(_STATS)}")

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        steps = self.plus.mask(prompts).astype(np.int64)
        if self.minus is not None:
            steps -= self.minus.mask(prompts)
        run = np.concatenate([np.zeros((len(prompts), 1), np.int64), steps.cumsum(axis=1)], 1)
        return _STATS[self.stat][1](run)

    def python(self, out: Emitter) -> str:
        name = f"{self.plus.name}_minus_{self.minus.name}" if self.minus else \
            f"{self.plus.name}_count"
        step = f"({self.plus.test('t')})" + (f" - ({self.minus.test('t')})" if self.minus
                                             else "")
        out.define(name, [f"{name} = [0]  # the running count, from before the first token",
                          "for t in prompt:",
                          f"    {name}.append({name}[-1] + {step})"])
        return _STATS[self.stat][0].format(name)


# ------------------------------------------------------------------------------- truths

_COMPARE = {">=": np.greater_equal, "<=": np.less_equal, "==": np.equal}


@dataclass(frozen=True)
class Is(Program):
    kind, tag = "bool", "is"
    takes = ("tok",)
    arg: Program
    token: int

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return args[0] == self.token

    def python(self, out: Emitter) -> str:
        return f"{self.arg.python(out)} == {self.token}"


@dataclass(frozen=True)
class Compare(Program):
    """A threshold detector: a number against a constant."""

    kind, tag = "bool", "compare"
    takes = ("int",)
    arg: Program
    op: str
    bound: int

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise FarmError(f"compare: op {self.op!r} is not one of {', '.join(_COMPARE)}")

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return _COMPARE[self.op](args[0], self.bound)

    def python(self, out: Emitter) -> str:
        return f"{self.arg.python(out)} {self.op} {self.bound}"


@dataclass(frozen=True)
class Odd(Program):
    """A parity toggle."""

    kind, tag = "bool", "odd"
    takes = ("int",)
    arg: Program

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return args[0] % 2 == 1

    def python(self, out: Emitter) -> str:
        return f"{self.arg.python(out)} % 2 == 1"


_MOVES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "set": ("1", lambda s: np.ones_like(s)),
    "reset": ("0", lambda s: np.zeros_like(s)),
    "flip": ("1 - {}", lambda s: 1 - s)}


@dataclass(frozen=True)
class Machine(Program):
    """A two-state machine over the prompt: state 0 at first; a token of `a` moves it by
    `a_move`, else a token of `b` by `b_move` (set, reset or flip); true if it ends in 1."""

    kind, tag = "bool", "machine"
    a: TokenClass
    a_move: str
    b: TokenClass
    b_move: str

    def __post_init__(self) -> None:
        if {self.a_move, self.b_move} - set(_MOVES):
            raise FarmError(f"machine: moves must be among {', '.join(_MOVES)}")

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        state = np.zeros(len(prompts), dtype=np.int64)
        in_a, in_b = self.a.mask(prompts), self.b.mask(prompts)
        for t in range(prompts.shape[1]):
            state = np.where(in_a[:, t], _MOVES[self.a_move][1](state),
                             np.where(in_b[:, t], _MOVES[self.b_move][1](state), state))
        return state == 1

    def python(self, out: Emitter) -> str:
        name = f"{self.a.name}_{self.a_move}_{self.b.name}_{self.b_move}"
        lines = [f"{name} = 0  # a two-state machine", "for t in prompt:"]
        for word, cls, move in (("if", self.a, self.a_move), ("elif", self.b, self.b_move)):
            lines += [f"    {word} {cls.test('t')}:",
                      f"        {name} = {_MOVES[move][0].format(name)}"]
        out.define(name, lines)
        return f"{name} == 1"


@dataclass(frozen=True)
class Not(Program):
    kind, tag = "bool", "not"
    takes = ("bool",)
    arg: Program

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return ~args[0]

    def python(self, out: Emitter) -> str:
        return f"not ({self.arg.python(out)})"


@dataclass(frozen=True)
class _Junction(Program):
    """Two truths joined by `word` (and, or)."""

    kind = "bool"
    takes = ("bool", "bool")
    word: ClassVar[str]
    join: ClassVar[Callable[[np.ndarray, np.ndarray], np.ndarray]]
    left: Program
    right: Program

    def apply(self, prompts: np.ndarray, *args: np.ndarray) -> np.ndarray:
        return type(self).join(args[0], args[1])

    def python(self, out: Emitter) -> str:
        return f"({self.left.python(out)}) {self.word} ({self.right.python(out)})"


class And(_Junction):
    tag = word = "and"
    join = np.logical_and


class Or(_Junction):
    tag = word = "or"
    join = np.logical_or


NODES: dict[str, type[Program]] = {cls.tag: cls for cls in (
    Const, At, Find, Largest, AfterPrevious, Closer, If, Count, Is, Compare, Odd, Machine,
    Not, And, Or)}


# ------------------------------------------------------------------------------- text forms


def program_source(program: Program, doc: str = "") -> str:
    """The program as a self-contained Python function `program(prompt)`."""
    if program.kind != "tok":
        raise FarmError(f"a program must compute a token, not a {program.kind}")
    out = Emitter()
    result = program.python(out)
    tokens = sorted(set(_tokens(program)))
    lines = ["def program(prompt):"]
    if doc:
        text = textwrap.wrap(f'"""{doc}"""', 84)
        lines += ["    " + line for line in text]
    if tokens:
        lines.append("    # tokens: " + ", ".join(f"{t} {TOKEN_NAMES.get(t, '?')}" for t in tokens))
    for block in out.blocks.values():
        lines += ["    " + line for line in block]
    lines.append(f"    return {result}")
    return "\n".join(lines) + "\n"


def compile_program(source: str) -> Callable[[tuple[int, ...]], int]:
    """The function a printed program defines (`program_source`'s text run as Python)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<distilled program>", "exec"), namespace)  # our own printed text
    return namespace["program"]


def _tokens(program: Program) -> Iterable[int]:
    for value in program._values():
        if isinstance(value, Program):
            yield from _tokens(value)
        elif isinstance(value, TokenClass):
            yield from value.tokens
        elif isinstance(value, int) and not isinstance(value, bool) and (
                isinstance(program, Const | Is)):
            yield value
    if isinstance(program, Closer):
        yield from (t for pair in CLOSER.items() for t in pair)


def _encode(value: Any) -> Any:
    if isinstance(value, Program):
        return value.to_json()
    if isinstance(value, TokenClass):
        return {"class": value.name, "tokens": sorted(value.tokens)}
    return value


def parse_program(data: Any) -> Program:
    """A program from its JSON form (`Program.to_json`); FarmError naming what is wrong."""
    try:
        return _decode_node(data)
    except (FarmError, TypeError, ValueError, KeyError, IndexError) as err:
        raise FarmError(f"not a DSL program: {data!r} ({err})") from None


def _decode_node(data: Any) -> Program:
    if not isinstance(data, list) or not data or data[0] not in NODES:
        raise ValueError(f"expected [tag, ...] with a tag among {', '.join(NODES)}")
    cls = NODES[data[0]]
    if len(data) - 1 != len(fields(cls)):  # type: ignore[arg-type]
        raise ValueError(f"{data[0]} takes {len(fields(cls))} arguments")  # type: ignore[arg-type]
    node = cls(*(_decode(v) for v in data[1:]))
    kinds = tuple(child.kind for child in node.children())
    if kinds != cls.takes:
        raise ValueError(f"{data[0]} takes children of kinds {cls.takes}, got {kinds}")
    return node


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return _decode_node(value)
    if isinstance(value, dict):
        return TokenClass(str(value["class"]), frozenset(int(t) for t in value["tokens"]))
    if value is None or isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise ValueError(f"unexpected {value!r}")
