"""Solver-neutral QF_LRA terms rendered straight to SMT-LIB2 text.

A query *is* its text: both solvers parse the same bytes and its sha256 names it
in caches, retries and certificates. So this layer builds text, never solver
objects. Almost every term of a piecewise-linear network is affine, hence the
one arithmetic type `Affine` (var -> exact `Fraction` coefficient, plus a
constant); anything non-affine (an `ite`) is named by `Query.define`, which keeps
every assertion affine and the text linear in the size of the network.
Every relation and definition is multiplied through to integer coefficients
(`Query.define` says why).

Constants are exact rationals, rendered `(/ n d)` / `(- ...)`, never decimals:
a float print would silently change the model being verified.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from numbers import Rational
from typing import NamedTuple

__all__ = [
    "Affine", "Formula", "Fragment", "HEADER", "Mark", "Query", "SECTION_MARK", "SYMBOL", "Section",
    "Term",
    "TRUE", "FALSE", "common_scale",
    "lt", "le", "eq", "ge", "gt", "and_", "or_", "not_", "implies", "ite", "numeral",
]

_ZERO, _ONE, _MINUS_ONE = Fraction(0), Fraction(1), Fraction(-1)
SYMBOL = r"[A-Za-z_][A-Za-z0-9_.@$~^&*+=<>?!/-]*"  # the names `Query` accepts
_SYMBOL = re.compile(SYMBOL + r"\Z")


def numeral(q: Fraction) -> str:
    """SMT-LIB2 text of an exact rational."""
    return _ratio(q.numerator, q.denominator)


@lru_cache(maxsize=1 << 16)
def _ratio(n: int, d: int) -> str:
    """Cached on ints (hashing a Fraction is slow): weights repeat across queries."""
    body = str(abs(n)) if d == 1 else f"(/ {abs(n)} {d})"
    return f"(- {body})" if n < 0 else body


class Affine:
    """An exact affine expression `(sum(n_v * v) + n_0) / den` over real variables.

    Held over one positive integer denominator rather than a Fraction per
    coefficient: building a query is mostly rows of weight matrices applied to
    vectors, and this way a row costs integer products, not two gcds per term.
    `den` need not be least; `coeffs` and `const` are the reduced values, and
    the text is reduced (`_scale`), so equal expressions render alike.
    Immutable by convention; zero coefficients are dropped so cancellation
    leaves no `(* 0 x)` in the text. Coefficient order is insertion order,
    which keeps rendering deterministic without sorting.
    """

    __slots__ = ("nums", "num0", "den")

    def __init__(self, coeffs: Mapping[str, Rational] | None = None,
                 const: Rational = _ZERO) -> None:
        cs = {v: _rational(c) for v, c in coeffs.items() if c} if coeffs else {}
        c0 = _rational(const)
        self.den = math.lcm(c0.denominator, *(c.denominator for c in cs.values()))
        self.nums = {v: c.numerator * (self.den // c.denominator) for v, c in cs.items()}
        self.num0 = c0.numerator * (self.den // c0.denominator)

    @staticmethod
    def _of(nums: dict[str, int], num0: int, den: int) -> Affine:
        out = Affine.__new__(Affine)
        out.nums, out.num0, out.den = nums, num0, den
        return out

    def linear_part(self) -> Affine:
        """The expression without its constant."""
        return Affine._of(self.nums, 0, self.den)

    @property
    def coeffs(self) -> dict[str, Fraction]:
        return {v: Fraction(n, self.den) for v, n in self.nums.items()}

    @property
    def const(self) -> Fraction:
        return Fraction(self.num0, self.den)

    @staticmethod
    def combine(terms: Iterable[tuple[Rational, Affine | Rational]]) -> Affine:
        """The linear combination `sum(k * a for k, a in terms)`, over the least common
        denominator of the terms."""
        parts: list[tuple[int, int, Affine | None]] = []
        den = 1
        for k, a in terms:
            if type(k) is not Fraction:
                k = _rational(k)
            if not k:
                continue
            if isinstance(a, Affine):
                n, d = k.numerator, k.denominator * a.den
            else:
                if not (c := k * _rational(a)):
                    continue
                n, d, a = c.numerator, c.denominator, None
            parts.append((n, d, a))
            if den % d:
                den = den // math.gcd(den, d) * d
        num0 = sum(n if d == den else n * (den // d) for n, d, a in parts if a is None)
        return _merged(((n if d == den else n * (den // d), a) for n, d, a in parts
                        if a is not None), num0, den)

    @staticmethod
    def sum(terms: Iterable[Affine | Rational]) -> Affine:
        return Affine.combine((_ONE, t) for t in terms)

    @staticmethod
    def dot(ks: Iterable[Rational], xs: Iterable[Affine], const: Rational = _ZERO) -> Affine:
        """`sum(k_i * x_i) + const`: one row of a weight matrix applied to a vector."""
        return Affine.combine([*zip(ks, xs, strict=True), (_ONE, const)])

    @staticmethod
    def row(weights: Sequence[int], den: int, xs: Sequence[Affine], const: int = 0) -> Affine:
        """`(sum(w_i * x_i) + const) / den`: a row of an integer weight matrix over its
        common denominator applied to a vector. The planner's hottest loop: it costs
        integer products only, where `dot` pays for a Fraction per weight."""
        if len(weights) != len(xs):
            raise ValueError(f"row of {len(weights)} weights applied to {len(xs)} terms")
        lcm = 1
        for w, x in zip(weights, xs, strict=True):
            if w and lcm % x.den:
                lcm = lcm // math.gcd(lcm, x.den) * x.den
        return _merged(((w if x.den == lcm else w * (lcm // x.den), x)
                        for w, x in zip(weights, xs, strict=True) if w), const * lcm, lcm * den)

    def __add__(self, other: Affine | Rational) -> Affine:
        return _plus(self, 1, other)

    __radd__ = __add__

    def __sub__(self, other: Affine | Rational) -> Affine:
        return _plus(self, -1, other)

    def __rsub__(self, other: Rational) -> Affine:
        return _plus(-self, 1, other)

    def __neg__(self) -> Affine:
        return self * _MINUS_ONE

    def __mul__(self, k: Rational) -> Affine:
        k = _rational(k)
        if not k:
            return Affine._of({}, 0, 1)
        n = k.numerator
        nums = self.nums if n == 1 else {v: c * n for v, c in self.nums.items()}
        return Affine._of(nums, self.num0 * n, self.den * k.denominator)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Affine({self.coeffs!r}, {self.const!r})"

    def smt(self) -> str:
        """The expression as an SMT-LIB2 term."""
        const = self.const
        return _sum_text(self.coeffs, const.numerator, const.denominator)


def _plus(a: Affine, k: int, b: Affine | Rational) -> Affine:
    """a + k·b for k = ±1, as `combine` would build it (the same text), without its
    generality: most of the planner's arithmetic is this one case."""
    if not isinstance(b, Affine):
        b = _affine(b)
        if not b.num0:
            return a
    den = a.den if a.den == b.den else math.lcm(a.den, b.den)
    return _merged(((den // a.den, a), (k * (den // b.den), b)), 0, den)


def _merged(terms: Iterable[tuple[int, Affine]], num0: int, den: int) -> Affine:
    """`(sum(f * a.numerators) + num0) / den` for integer factors f that put each a over
    `den`: the one loop `combine` and `row` share."""
    nums: dict[str, int] = {}
    merged = False  # only merging two coefficients can produce a zero
    for f, a in terms:
        for v, c in a.nums.items():
            t = c if f == 1 else f * c
            prev = nums.get(v)
            if prev is None:
                nums[v] = t
            else:
                nums[v], merged = prev + t, True
        if a.num0:
            num0 += f * a.num0
    return Affine._of({v: c for v, c in nums.items() if c} if merged else nums, num0, den)


def _affine(x: Affine | Rational) -> Affine:
    if isinstance(x, Affine):
        return x
    x = _rational(x)
    return Affine._of({}, x.numerator, x.denominator)


def _rational(x: Rational) -> Fraction:
    """Exact value of `x`; floats are refused, since their decimal intent is already lost."""
    if type(x) is Fraction:
        return x
    if isinstance(x, Rational):
        return Fraction(x)
    raise TypeError(f"exact rational expected, got {type(x).__name__} {x!r}")


def _monomial(v: str, c: Fraction | int) -> str:
    if type(c) is int:  # as relations and definitions render them: no cache lookup
        if c > 0:
            return v if c == 1 else f"(* {c} {v})"
        return f"(- {v})" if c == -1 else f"(* (- {-c}) {v})"
    n, d = c.numerator, c.denominator
    if d == 1 and (n == 1 or n == -1):
        return v if n == 1 else f"(- {v})"
    return f"(* {_ratio(n, d)} {v})"


def _sum_text(coeffs: Mapping[str, int | Fraction], n0: int, d0: int = 1) -> str:
    """Coefficients (integers, as relations and definitions render them) and an exact
    constant n0/d0 in lowest terms as an SMT-LIB2 sum."""
    parts = [_monomial(v, c) for v, c in coeffs.items()]
    if n0 or not parts:
        parts.append(_ratio(n0, d0))
    return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"


def common_scale(values: Iterable[Affine]) -> int:
    """One L for every term of a vector (`Query.define`): the rows of a weight matrix
    applied to it then have the same coefficients whatever L is, so their text
    repeats between queries where L (a run's denominators) does not."""
    return math.lcm(*(_scale(a) for a in values))


def _scale(a: Affine) -> int:
    """The least positive L that makes L·a's coefficients integers, and its constant too
    when that costs at most `_CONSTANT_FACTOR` more."""
    scale = a.den // math.gcd(a.den, *a.nums.values()) if a.nums else 1
    with_constant = math.lcm(scale, a.den // math.gcd(a.den, a.num0))  # the constant's den
    return with_constant if with_constant <= scale * _CONSTANT_FACTOR else scale


_CONSTANT_FACTOR = 1 << 64  # a fifth of half_low or a bias's power of two: kept integral; a
# run's exact residual (hundreds of digits, robustness's offsets): left a rational constant


def _times(a: Affine, scale: int) -> tuple[dict[str, int], int, int]:
    """Integer coefficients of scale·a, `scale` a multiple of `_scale(a)`, and its exact
    constant as numerator and denominator in lowest terms (a Fraction would cost its
    own gcd and checks: this is every definition's and relation's constant)."""
    g = math.gcd(scale, a.den)
    up, down = scale // g, a.den // g  # down divides every coefficient's numerator
    if down == 1:
        return ({v: n * up for v, n in a.nums.items()} if up != 1 else a.nums), a.num0 * up, 1
    n0 = a.num0 * up
    g0 = math.gcd(n0, down)
    return {v: n * up // down for v, n in a.nums.items()}, n0 // g0, down // g0


class Formula:
    """A Boolean term, held as its rendered text (built once, joined later)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Formula({self.text!r})"


class Term:
    """A non-affine real term, `(ite cond then else)`; usable only through `Query.define`."""

    __slots__ = ("cond", "then", "else_")

    def __init__(self, cond: Formula, then: Affine, else_: Affine) -> None:
        self.cond, self.then, self.else_ = cond, then, else_


TRUE, FALSE = Formula("true"), Formula("false")


def _relation(op: str, a: Affine | Rational, b: Affine | Rational) -> Formula:
    """`a op b` normalised to `(op (sum of monomials) constant)`, multiplied through to
    integer coefficients (the constant stays exact: a relation between free variables
    and a run's constant would otherwise carry the constant's denominator, hundreds
    of digits, into every coefficient, which slows z3's simplex)."""
    d = _plus(a, -1, b) if isinstance(a, Affine) else _plus(-_affine(b), 1, a)
    if not d.nums:
        return TRUE if _CONST_TRUTH[op](d.num0) else FALSE
    nums, n0, d0 = _times(d, _scale(d))
    return Formula(f"({op} {_sum_text(nums, 0)} {_ratio(-n0, d0)})")


_CONST_TRUTH = {"<": lambda c: c < 0, "<=": lambda c: c <= 0, "=": lambda c: c == 0,
                ">=": lambda c: c >= 0, ">": lambda c: c > 0}


def lt(a: Affine | Rational, b: Affine | Rational) -> Formula:
    return _relation("<", a, b)


def le(a: Affine | Rational, b: Affine | Rational) -> Formula:
    return _relation("<=", a, b)


def eq(a: Affine | Rational, b: Affine | Rational) -> Formula:
    return _relation("=", a, b)


def ge(a: Affine | Rational, b: Affine | Rational) -> Formula:
    return _relation(">=", a, b)


def gt(a: Affine | Rational, b: Affine | Rational) -> Formula:
    return _relation(">", a, b)


def _connective(op: str, unit: Formula, fs: tuple[Formula, ...]) -> Formula:
    fs = tuple(f for f in fs if f is not unit)
    if not fs:
        return unit
    return fs[0] if len(fs) == 1 else Formula(f"({op} {' '.join(f.text for f in fs)})")


def and_(*fs: Formula) -> Formula:
    return _connective("and", TRUE, fs)


def or_(*fs: Formula) -> Formula:
    return _connective("or", FALSE, fs)


def not_(f: Formula) -> Formula:
    return Formula(f"(not {f.text})")


def implies(a: Formula, b: Formula) -> Formula:
    return Formula(f"(=> {a.text} {b.text})")


def ite(cond: Formula, then: Affine | Rational, else_: Affine | Rational) -> Term:
    """`then` if `cond` else `else_`, e.g. `ite(ge(x, 0), x, 0)` for relu."""
    return Term(cond, Affine.sum((then,)), Affine.sum((else_,)))


@dataclass(frozen=True)
class Section:
    """A finished run of declarations and assertions, shareable between queries.

    Queries over prompts with a common prefix share their prefix positions'
    definitions word for word; a section lets the planner build that text once
    and lets a solver reuse its work on it (`encoders.solvers`), while the query
    stays one self-contained script named by its whole text.
    """

    label: str
    decls: tuple[str, ...]
    asserts: tuple[str, ...]
    names: frozenset[str]
    model_vars: tuple[str, ...]
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = "\n".join((*self.decls, *self.asserts))
        object.__setattr__(self, "text", f"{SECTION_MARK}{self.label}\n{body}\n")


class Mark(NamedTuple):
    """How many lines and names the current section had (`Query.mark`)."""

    decls: int
    asserts: int
    names: int
    model_vars: int


class Fragment(NamedTuple):
    """Lines added to a section between two points (`Query.since`), to add again
    (`Query.replay`) where the same inputs would build the same text."""

    decls: tuple[str, ...]
    asserts: tuple[str, ...]
    names: tuple[str, ...]
    model_vars: tuple[str, ...]


SECTION_MARK = "; section "  # a comment line to both solvers; `encoders.solvers` splits on it
HEADER = "(set-option :produce-models true)\n(set-logic QF_LRA)\n"  # every query's first lines


class Query:
    """Declarations, definitions and assertions of one QF_LRA check, rendered once.

    The script is a sequence of labelled sections (`section`), each declaring
    its variables before asserting anything about them. `model_vars` are the
    variables a SAT model is read back for (e.g. the counterexample input); the
    text and its hash are frozen on first render.
    """

    _FOOTER = "(check-sat)\n"

    def __init__(self) -> None:
        self._done: list[Section] = []
        self._label = "main"
        self._decls: list[str] = []
        self._asserts: list[str] = []
        self._section_names: list[str] = []
        self._section_model_vars: list[str] = []
        self._names: set[str] = set()
        self._text: str | None = None

    def section(self, label: str) -> None:
        """Start a new section named `label` (closing the current one)."""
        self._check_open()
        self._close()
        self._label = label

    def seal(self) -> Section | None:
        """Close the current section and return it (None if it was empty), for `include`."""
        self._check_open()
        closed = self._close()
        self._label = "main"
        return closed

    def include(self, section: Section) -> None:
        """Append a section built by another query (its names must be new here)."""
        self._check_open()
        if clash := section.names & self._names:
            raise ValueError(f"section {section.label} redeclares {sorted(clash)[:3]}")
        self._close()
        self._done.append(section)
        self._names |= section.names

    def _close(self) -> Section | None:
        if not (self._decls or self._asserts):
            return None
        closed = Section(self._label, tuple(self._decls), tuple(self._asserts),
                         frozenset(self._section_names), tuple(self._section_model_vars))
        self._done.append(closed)
        self._decls, self._asserts = [], []
        self._section_names, self._section_model_vars = [], []
        return closed

    def mark(self) -> Mark:
        """Where the current section stands: `since(mark)` is what was added after it."""
        return Mark(len(self._decls), len(self._asserts), len(self._section_names),
                    len(self._section_model_vars))

    def since(self, mark: Mark) -> Fragment:
        """The declarations and assertions added to the current section since `mark`."""
        return Fragment(tuple(self._decls[mark.decls:]), tuple(self._asserts[mark.asserts:]),
                        tuple(self._section_names[mark.names:]),
                        tuple(self._section_model_vars[mark.model_vars:]))

    def replay(self, fragment: Fragment) -> None:
        """Add a fragment recorded by `since` (in this query or another): its names must be
        new here."""
        self._check_open()
        if clash := self._names.intersection(fragment.names):
            raise ValueError(f"fragment redeclares {sorted(clash)[:3]}")
        self._names.update(fragment.names)
        self._section_names += fragment.names
        self._section_model_vars += fragment.model_vars
        self._decls += fragment.decls
        self._asserts += fragment.asserts

    def real(self, name: str, *, model: bool = False) -> Affine:
        """Declare a real variable; `model=True` reads it back on SAT."""
        self._declare(name, "Real", model)
        return Affine._of({name: 1}, 0, 1)

    def boolean(self, name: str, value: Formula) -> Formula:
        """Name a formula by a fresh Boolean (e.g. one position's guards)."""
        self._declare(name, "Bool", False)
        self._asserts.append(f"(assert (= {name} {value.text}))")
        return Formula(name)

    def _declare(self, name: str, sort: str, model: bool) -> None:
        self._check_open()
        if not _SYMBOL.match(name) or name in self._names:
            raise ValueError(f"bad or duplicate SMT symbol {name!r}")
        self._names.add(name)
        self._section_names.append(name)
        self._decls.append(f"(declare-fun {name} () {sort})")
        if model:
            self._section_model_vars.append(name)

    def define(self, name: str, value: Affine | Term, *, model: bool = False,
               scale: int = 1) -> Affine:
        """Name `value` by a fresh variable, so later uses cost one symbol, not the whole term.

        The variable stands for L·value, L the least positive integer that makes
        the definition's coefficients integers, and the returned term is
        (1/L)·variable. Exact values along a chain of definitions from constant
        inputs (a circuit run on a prompt) then stay integers, which solvers add
        and multiply without the gcd that each rational operation costs (z3: 8×
        less time on a paper-size query). A constant that would grow L by more
        than 2^64 is left out of it: where a free variable meets a run's constant
        (robustness) it would put the constant's denominator, hundreds of digits,
        into every coefficient the solver pivots on.
        `scale` asks for an L that is also its multiple (`common_scale`: one L for
        a whole vector). Variables read back from a model (`model=True`) keep
        their plain value.
        """
        v = self.real(name, model=model)
        arms = (value.then, value.else_) if isinstance(value, Term) else (value,)
        scale = math.lcm(scale, *(_scale(a) for a in arms))
        rhs = [_sum_text(*_times(a, scale)) for a in arms]
        if isinstance(value, Term):
            rhs = [f"(ite {value.cond.text} {rhs[0]} {rhs[1]})"]
        lhs = name if scale == 1 or not model else f"(* {scale} {name})"
        self._asserts.append(f"(assert (= {lhs} {rhs[0]}))")
        return v if scale == 1 or model else Affine._of({name: 1}, 0, scale)

    def add(self, *fs: Formula) -> None:
        """Assert each formula."""
        self._check_open()
        self._asserts.extend(f"(assert {f.text})" for f in fs)

    @property
    def model_vars(self) -> tuple[str, ...]:
        return (*(v for s in self._done for v in s.model_vars), *self._section_model_vars)

    def __len__(self) -> int:
        """Number of assertions (definitions included)."""
        return sum(len(s.asserts) for s in self._done) + len(self._asserts)

    def text(self) -> str:
        """The SMT-LIB2 script; after this the query is frozen."""
        if self._text is None:
            self._close()
            self._text = "".join((HEADER, *(s.text for s in self._done), self._FOOTER))
        return self._text

    @property
    def hash(self) -> str:
        """sha256 hex of the text: the query's identity."""
        return hashlib.sha256(self.text().encode()).hexdigest()

    def _check_open(self) -> None:
        if self._text is not None:
            raise RuntimeError("query already rendered; its hash must not change")
