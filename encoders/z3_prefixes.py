"""Reuse of z3's work on the prefix sections that queries share, in one warm process.

Queries over prompts with a common prefix begin with the same sections, word
for word (`encoders.smtlib.Section`), because causal attention makes position
t a function of the prompt up to t. A chain of sections is keyed by the sha256
of its exact text and stored as what z3's `simplify` and `propagate-values`
leave of it, section by section: each new section gets the facts of the chain
before it substituted and is then reduced alone. Both tactics rewrite a goal
into an *equivalent* one; on our queries, whose definitions start from
constants, what is left is mostly `x = c` facts. A query's last section is
parsed alone and the chain's facts are substituted into it. Substituting
x := c where the prefix implies x = c keeps the query equivalent, and dropping
the facts afterwards only weakens it, so an unsat answer on the result is an
unsat answer on the whole text. A sat answer on a weakened goal proves
nothing: the caller re-solves the whole text.

Sections differ between queries, but many of their assertions do not (a norm
on the same constant input, a weight matrix applied to the same named vector),
so each assertion line is parsed once and its term reused while every symbol
it names is declared, with the sort it was parsed with. Parsing is a function
of the text and the symbols' sorts, so this too changes only speed. That
premise holds for the texts `encoders.smtlib.Query` writes (its fixed header,
plain symbols declared before use); any other text is solved whole.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from types import ModuleType
from typing import Any

from encoders.smtlib import HEADER, SECTION_MARK, SYMBOL

__all__ = ["Z3Prefixes"]

_DECLARATION = re.compile(rf"\(declare-fun ({SYMBOL}) \(\) (?:Real|Bool)\)")
_SYMBOL = re.compile(SYMBOL)


class _Prefix:
    """One reduced chain of sections: its `x = c` facts as C pointers (with z3's C
    arrays for substituting them, built once), the reduced goals that keep those
    pointers alive, every other formula it reduced to, and the declarations of its
    symbols."""

    def __init__(self, z3: ModuleType, sources: list, targets: list, keep: tuple, rest: list,
                 declared: dict[str, str]) -> None:
        self.sources, self.targets, self.keep = sources, targets, keep
        self.rest, self.declared = rest, declared
        self._sources, self._targets = (z3.Ast * len(sources))(*sources), (
            z3.Ast * len(targets))(*targets)

    def extend(self, z3: ModuleType, reduced: Any, true: Any, false: Any,
               declared: dict[str, str]) -> _Prefix:
        """This chain followed by one more section, `reduced` being its reduced goal."""
        sources, targets, rest = _split(z3, reduced, true, false)
        return _Prefix(z3, self.sources + sources, self.targets + targets,
                       (*self.keep, reduced), self.rest + rest, declared)

    def substitute(self, z3: ModuleType, ctx: Any, asts: list) -> Any:
        """The conjunction of `asts` (C pointers to formulas kept alive elsewhere) with
        every fact substituted.

        Built through the C API: wrapping each of a section's hundreds of formulas
        in a Python object (as `z3.And` does) cost as much as parsing them."""
        n = len(asts)
        parts = (z3.Ast * max(n, 1))(*asts)
        # held by a Python reference (inc_ref) before the next API call can drop it
        conj = z3.BoolRef(z3.Z3_mk_and(ctx.ref(), n, parts), ctx) if n else z3.BoolVal(True, ctx)
        return z3.BoolRef(z3.Z3_substitute(ctx.ref(), conj.as_ast(), len(self.sources),
                                           self._sources, self._targets), ctx)


def _split(z3: ModuleType, goal: Any, true: Any, false: Any) -> tuple[list, list, list]:
    """Facts (symbol, value) among a reduced goal's formulas, as C pointers, and the rest.

    Read through the C API: wrapping every formula and argument in a Python object
    cost as much as reducing the section."""
    ref = goal.ctx.ref()
    sources, targets, rest = [], [], []
    for i in range(z3.Z3_goal_size(ref, goal.goal)):
        f = z3.Z3_goal_formula(ref, goal.goal, i)
        kind, args = _app(z3, ref, f)
        if kind == z3.Z3_OP_UNINTERPRETED and not args:  # a named guard the prefix proved
            sources.append(f)
            targets.append(true)
        elif kind == z3.Z3_OP_NOT and _symbol(z3, ref, args[0]):
            sources.append(args[0])
            targets.append(false)
        elif (kind == z3.Z3_OP_EQ and _symbol(z3, ref, args[0])
              and z3.Z3_is_numeral_ast(ref, args[1])):
            sources.append(args[0])
            targets.append(args[1])
        else:
            rest.append(z3.BoolRef(f, goal.ctx))
    return sources, targets, rest


def _app(z3: ModuleType, ref: Any, e: Any) -> tuple[int | None, list]:
    """The declaration kind and arguments of an application (None for anything else)."""
    if z3.Z3_get_ast_kind(ref, e) != z3.Z3_APP_AST:
        return None, []
    app = z3.Z3_to_app(ref, e)
    kind = z3.Z3_get_decl_kind(ref, z3.Z3_get_app_decl(ref, app))
    return kind, [z3.Z3_get_app_arg(ref, app, k) for k in range(z3.Z3_get_app_num_args(ref, app))]


def _symbol(z3: ModuleType, ref: Any, e: Any) -> bool:
    kind, args = _app(z3, ref, e)
    return kind == z3.Z3_OP_UNINTERPRETED and not args


class _Lines:
    """Parsed assertion lines by their text (least recently used dropped first), with
    the declared symbols each names, valid while every symbol keeps its sort: emptied
    when a query declares a symbol with another sort than the lines were parsed
    with. Each kept term holds a reference of its own (about 4.5 KB of z3 memory per
    line on our queries)."""

    def __init__(self, z3: ModuleType, limit: int) -> None:
        self.z3, self.limit = z3, limit
        self.ref = z3.main_ctx().ref()
        self.asts: OrderedDict[str, tuple[Any, frozenset[str]]] = OrderedDict()
        self.sorts: dict[str, str] = {}  # symbol -> its declaration line

    def clear(self) -> None:
        while self.asts:
            self.z3.Z3_dec_ref(self.ref, self.asts.popitem()[1][0])
        self.sorts = {}

    def usable(self, line: str, declared: dict[str, str]) -> bool:
        """Whether `line` is kept and every symbol it was parsed with is declared now
        (a text that names a symbol it never declares is not valid: solved whole)."""
        hit = self.asts.get(line)
        return hit is not None and hit[1] <= declared.keys()

    def check_sorts(self, *tables: dict[str, str]) -> None:
        """Take a query's declarations (symbol -> declaration line)."""
        known = self.sorts.items()
        if all(t.items() <= known for t in tables):
            return
        if any(self.sorts.get(n, d) != d for t in tables for n, d in t.items()):
            self.clear()
        for t in tables:
            self.sorts.update(t)

    def get(self, lines: list[str]) -> list:
        """The kept terms of `lines` (each must be kept), marked as just used."""
        for line in lines:
            self.asts.move_to_end(line)
        return [self.asts[line][0] for line in lines]

    def add(self, lines: list[str], parsed: Any, symbols: list[frozenset[str]]) -> None:
        for i, (line, names) in enumerate(zip(lines, symbols, strict=True)):
            ast = self.z3.Z3_ast_vector_get(self.ref, parsed.vector, i)
            self.z3.Z3_inc_ref(self.ref, ast)
            if (old := self.asts.get(line)) is not None:
                self.z3.Z3_dec_ref(self.ref, old[0])
            self.asts[line] = ast, names

    def trim(self) -> None:
        """Drop the least recently used beyond the limit (once the terms just handed out
        are referenced elsewhere: a query may have more lines than the limit)."""
        while len(self.asts) > self.limit:
            self.z3.Z3_dec_ref(self.ref, self.asts.popitem(last=False)[1][0])


class Z3Prefixes:
    """An LRU of reduced prefix chains; `goal(text)` is a query's goal built on them."""

    def __init__(self, z3: ModuleType, limit: int = 256, line_limit: int = 20_000) -> None:
        """Keeps `limit` prefix chains and `line_limit` parsed lines (a 1-head FE query
        has about 300; 20,000 lines hold about 90 MB of terms)."""
        self.z3, self.limit = z3, limit
        self.reduce = z3.Then("simplify", "propagate-values")
        self.states: OrderedDict[bytes, _Prefix] = OrderedDict()
        self.lines = _Lines(z3, line_limit)
        self._constants = z3.BoolVal(True), z3.BoolVal(False)  # alive while their pointers are
        self._true, self._false = (c.as_ast() for c in self._constants)

    def goal(self, text: str) -> list | None:
        """Formulas whose unsat proves `text` unsat; None when there is no prefix to
        share (a single section)."""
        head, *sections = text.split("\n" + SECTION_MARK)
        if len(sections) < 2 or head + "\n" != HEADER:  # not a `Query`'s text: solved whole
            return None
        keys, key = [], hashlib.sha256(head.encode()).digest()
        for section in sections[:-1]:
            key = hashlib.sha256(key + section.encode()).digest()
            keys.append(key)
        start, prefix = 0, _Prefix(self.z3, [], [], (), [], {})
        for i in reversed(range(len(keys))):
            if keys[i] in self.states:
                self.states.move_to_end(keys[i])
                start, prefix = i + 1, self.states[keys[i]]
                break
        ctx = self.z3.main_ctx()
        for i in range(start, len(keys)):
            new, declared = self._parse(head, prefix, sections[i])
            goal = self.z3.Goal()
            goal.add(prefix.substitute(self.z3, ctx, new))
            (reduced,) = self.reduce(goal)
            prefix = self.states[keys[i]] = prefix.extend(self.z3, reduced, self._true,
                                                          self._false, declared)
            if len(self.states) > self.limit:
                self.states.popitem(last=False)
        last = prefix.substitute(self.z3, ctx, self._parse(head, prefix, sections[-1])[0])
        self.lines.trim()
        return [last, *prefix.rest]

    def _parse(self, head: str, prefix: _Prefix, section: str) -> tuple[list, dict[str, str]]:
        """One section's assertions as C pointers, parsing only lines not seen before, and
        the declarations known after it. The lines are parsed with the earlier symbols
        they use re-declared (z3 names a constant by name and sort, so they are the
        prefix's own)."""
        decls: dict[str, str] = {}
        asserts = []
        for line in section.split("\n")[1:]:  # [0] is the label
            if line.startswith("(assert"):
                asserts.append(line)
            elif (m := _DECLARATION.fullmatch(line)) and not asserts and not (
                    m[1] in decls or m[1] in prefix.declared):  # as `Query` declares
                decls[m[1]] = line
            elif line and line != "(check-sat)":  # anything else: the whole text decides
                raise self.z3.Z3Exception(f"unexpected line in a section: {line[:40]}")
        self.lines.check_sorts(prefix.declared, decls)
        known = prefix.declared | decls
        missing = list(dict.fromkeys(a for a in asserts if not self.lines.usable(a, known)))
        if missing:
            symbols = [frozenset(n for n in _SYMBOL.findall(a) if n in known) for a in missing]
            used = "".join(known[n] for n in frozenset().union(*symbols))
            parsed = self.z3.parse_smt2_string(head + used + "\n".join(missing))
            if len(parsed) != len(missing):  # one formula per assertion line, or no reuse
                raise self.z3.Z3Exception("an assertion line did not parse to one formula")
            self.lines.add(missing, parsed, symbols)
        return self.lines.get(asserts), known
