"""Enumerating DSL programs smallest first, one per behaviour on the examples.

Bottom-up enumeration: programs of size s are built from those of smaller sizes,
and a program is kept only if its values on the examples differ from every kept
program of its kind (observational equivalence). Two programs that agree on every
example can replace each other inside any larger program without changing its
values there, so pruning loses no behaviour the examples can tell apart, and the
first token program consistent with the examples is a smallest one.

What the search may build from (`Motifs`) comes from the task's domain: the
positions that vary, the classes of the tokens that occur there, and the task's
candidate tokens as constants.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

import numpy as np

from farm.distill.dsl import (
    AfterPrevious,
    And,
    At,
    Closer,
    Compare,
    Const,
    Count,
    Find,
    If,
    Is,
    Kind,
    Largest,
    Machine,
    Not,
    Odd,
    Or,
    Program,
    TokenClass,
)
from farm.tasks.task import Task
from farm.tasks.vocab import (
    CLOSE_CURLY,
    CLOSE_PAREN,
    CLOSE_SQUARE,
    DOUBLE_QUOTE,
    FILLER_POOL,
    OPEN_CURLY,
    OPEN_PAREN,
    OPEN_SQUARE,
    SINGLE_QUOTE,
)

_NAMES = {SINGLE_QUOTE: "squote", DOUBLE_QUOTE: "dquote", OPEN_SQUARE: "lsquare",
          OPEN_CURLY: "lcurly", CLOSE_SQUARE: "rsquare", CLOSE_CURLY: "rcurly",
          OPEN_PAREN: "lparen", CLOSE_PAREN: "rparen"} | {
    t: f"filler_{chr(ord('A') + i)}" for i, t in enumerate(FILLER_POOL)}
_GROUPS = {"quotes": {SINGLE_QUOTE, DOUBLE_QUOTE},
           "openers": {OPEN_SQUARE, OPEN_CURLY, OPEN_PAREN},
           "closers": {CLOSE_SQUARE, CLOSE_CURLY, CLOSE_PAREN},
           "fillers": set(FILLER_POOL)}
_MOVES = ("set", "reset", "flip")
_OPS = (">=", "<=", "==")


@dataclass(frozen=True)
class Motifs:
    """The leaves a search builds from."""

    positions: tuple[int, ...]  # positions whose token varies over the domain
    classes: tuple[TokenClass, ...]
    outputs: tuple[int, ...]  # constants a program may answer: the task's candidates
    tokens: tuple[int, ...]  # tokens a program may test a token against
    bounds: tuple[int, ...]  # thresholds a counter may be compared with

    @classmethod
    def of(cls, task: Task) -> Motifs:
        domain = task.domain()
        positions = tuple(p for p, ts in enumerate(domain.positions) if len(ts) > 1)
        varying = sorted({t for p in positions for t in domain.positions[p]})
        # SPEC's token names and groups mean nothing to a family with its own vocabulary
        spec = type(task).vocab_size is Task.vocab_size
        classes = [TokenClass(_NAMES.get(t, f"token_{t}") if spec else f"token_{t}",
                              frozenset({t})) for t in varying]
        for name, group in _GROUPS.items() if spec else ():
            tokens = frozenset(group & set(varying))
            if 1 < len(tokens) < len(varying):
                classes.append(TokenClass(name, tokens))
        span = len(positions)
        return cls(positions, tuple(classes), task.candidates, tuple(varying),
                   tuple(range(-span, span + 1)))

    def leaves(self) -> Iterator[Program]:
        """Every program of size 1."""
        yield from (Const(t) for t in self.outputs)
        yield from (At(p) for p in self.positions)
        yield Largest()
        yield AfterPrevious()
        for c in self.classes:
            yield Find("first", c)
            yield Find("last", c)
        for stat in ("final", "lowest", "highest"):
            for plus in self.classes:
                yield Count(stat, plus, None)
                for minus in self.classes:
                    if not plus.tokens & minus.tokens:
                        yield Count(stat, plus, minus)
        for a, b in product(self.classes, repeat=2):
            if not a.tokens & b.tokens:
                for a_move, b_move in product(_MOVES, repeat=2):
                    yield Machine(a, a_move, b, b_move)


class Enumerator:
    """The programs of each size and kind that behave differently on `examples`.

    Conditions appear at the root only: a program is a token expression, or `If(cond,
    a, b)` over two token expressions (nested conditions are and/or/not of truths).
    So the root `If`s are never enumerated: for each pair of branches the examples
    fix which truth values the condition must take, and one array test over all
    truths of a size finds the first that does."""

    def __init__(self, motifs: Motifs, examples: np.ndarray):
        self.motifs = motifs
        self.examples = np.asarray(examples, dtype=np.int64)  # [m, seq_len], m may be 0
        self.levels: dict[tuple[Kind, int], list[tuple[Program, np.ndarray]]] = {}
        self.seen: set[tuple[Kind, bytes]] = set()
        self.enumerated = 0  # programs built and evaluated (or, at the root, tested)

    def smallest(self, decisions: np.ndarray, max_size: int) -> Program | None:
        """The first program of the smallest size whose value on every example is the
        decision given for it; None if there is none up to `max_size`."""
        for size in range(1, max_size + 1):
            for program, values in self.level("tok", size):
                if np.array_equal(values, decisions):
                    return program
            if (found := self._root_if(size, decisions)) is not None:
                return found
        return None

    def level(self, kind: Kind, size: int) -> list[tuple[Program, np.ndarray]]:
        """The kept programs of one kind and size (built on first use, after the smaller
        sizes of that kind, so that the first program of a behaviour is a smallest)."""
        if size < 1:
            return []
        if (kind, size) not in self.levels:
            self.level(kind, size - 1)
            kept = self.levels[kind, size] = []
            for program, args in self._candidates(kind, size):
                values = program.apply(self.examples, *args)
                self.enumerated += 1
                if (key := (kind, values.tobytes())) not in self.seen:
                    self.seen.add(key)
                    kept.append((program, values))
        return self.levels[kind, size]

    def _candidates(self, kind: Kind, size: int
                    ) -> Iterator[tuple[Program, tuple[np.ndarray, ...]]]:
        """(program, its children's values) for every way to build one of this kind and
        size from smaller programs."""
        if size == 1:
            yield from ((leaf, ()) for leaf in self.motifs.leaves() if leaf.kind == kind)
            return
        below = size - 1
        if kind == "tok":
            for arg, v in self.level("tok", below):
                yield Closer(arg), (v,)
        elif kind == "bool":
            for arg, v in self.level("int", below):
                for op, bound in product(_OPS, self.motifs.bounds):
                    yield Compare(arg, op, bound), (v,)
                yield Odd(arg), (v,)
            for arg, v in self.level("tok", below):
                for token in self.motifs.tokens:
                    yield Is(arg, token), (v,)
            for arg, v in self.level("bool", below):
                yield Not(arg), (v,)
            for left_size in range(1, below // 2 + 1):
                lefts = self.level("bool", left_size)
                rights = self.level("bool", below - left_size)
                for i, (left, lv) in enumerate(lefts):
                    for right, rv in rights[i + 1:] if left_size == below - left_size else rights:
                        yield And(left, right), (lv, rv)
                        yield Or(left, right), (lv, rv)

    def _root_if(self, size: int, decisions: np.ndarray) -> Program | None:
        for cond_size in range(1, size - 2):
            conds = self.level("bool", cond_size)
            if not conds:
                continue
            table = np.array([v for _, v in conds]).reshape(len(conds), -1)
            for then_size in range(1, size - cond_size - 1):
                for (then, tv), (other, ov) in product(
                        self.level("tok", then_size),
                        self.level("tok", size - 1 - cond_size - then_size)):
                    then_ok, other_ok = tv == decisions, ov == decisions
                    if then == other or not (then_ok | other_ok).all():
                        continue
                    self.enumerated += len(conds)
                    fits = (table[:, then_ok & ~other_ok].all(axis=1)
                            & ~table[:, other_ok & ~then_ok].any(axis=1))
                    if fits.any():
                        return If(conds[int(fits.argmax())][0], then, other)
        return None


def smallest_consistent(motifs: Motifs, examples: np.ndarray, decisions: np.ndarray,
                        max_size: int) -> tuple[Program | None, int]:
    """The first (smallest) program whose value on every example is the decision given
    for it, or None if no program up to `max_size` is; with how many programs the search
    enumerated."""
    search = Enumerator(motifs, examples)
    return search.smallest(np.asarray(decisions, dtype=np.int64), max_size), search.enumerated
