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
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from types import ModuleType
from typing import Any

from encoders.smtlib import SECTION_MARK, SYMBOL

__all__ = ["Z3Prefixes"]

_DECLARATION = re.compile(r"\(declare-fun (\S+) \(\) (?:Real|Bool)\)")
_SYMBOL = re.compile(SYMBOL)


class _Prefix:
    """One reduced chain of sections: its `x = c` facts (with z3's C arrays for
    substituting them, built once), every other formula it reduced to, and the
    declarations of its symbols."""

    def __init__(self, z3: ModuleType, facts: list[tuple[Any, Any]], rest: list,
                 declared: dict[str, str]) -> None:
        self.facts, self.rest, self.declared = facts, rest, declared
        self.sources, self.targets = (z3.Ast * len(facts))(), (z3.Ast * len(facts))()
        for i, (a, b) in enumerate(facts):
            self.sources[i], self.targets[i] = a.as_ast(), b.as_ast()

    def substitute(self, z3: ModuleType, formulas: Any) -> Any:
        """The conjunction of `formulas` (a parsed AstVector) with every fact substituted.

        Built through the C API: wrapping each of a section's hundreds of formulas
        in a Python object (as `z3.And` does) cost as much as parsing them."""
        ctx = formulas.ctx
        n = len(formulas)
        parts = (z3.Ast * max(n, 1))()  # the vector keeps each part alive
        for i in range(n):
            parts[i] = z3.Z3_ast_vector_get(ctx.ref(), formulas.vector, i)
        # held by a Python reference (inc_ref) before the next API call can drop it
        conj = z3.BoolRef(z3.Z3_mk_and(ctx.ref(), n, parts), ctx) if n else z3.BoolVal(True, ctx)
        return z3.BoolRef(z3.Z3_substitute(ctx.ref(), conj.as_ast(), len(self.facts),
                                           self.sources, self.targets), ctx)


def _split(z3: ModuleType, formulas: Any) -> tuple[list[tuple[Any, Any]], list]:
    """Facts (symbol, value) among reduced formulas, and the rest."""
    facts, rest = [], []
    for f in formulas:
        if z3.is_eq(f) and _symbol(z3, f.arg(0)) and z3.is_rational_value(f.arg(1)):
            facts.append((f.arg(0), f.arg(1)))
        elif _symbol(z3, f):  # a named guard the prefix proved true
            facts.append((f, z3.BoolVal(True)))
        elif z3.is_not(f) and _symbol(z3, f.arg(0)):
            facts.append((f.arg(0), z3.BoolVal(False)))
        else:
            rest.append(f)
    return facts, rest


def _symbol(z3: ModuleType, e: Any) -> bool:
    return z3.is_const(e) and e.decl().kind() == z3.Z3_OP_UNINTERPRETED


class Z3Prefixes:
    """An LRU of reduced prefix chains; `goal(text)` is a query's goal built on them."""

    def __init__(self, z3: ModuleType, limit: int = 256) -> None:
        self.z3, self.limit = z3, limit
        self.reduce = z3.Then("simplify", "propagate-values")
        self.states: OrderedDict[bytes, _Prefix] = OrderedDict()

    def goal(self, text: str) -> list | None:
        """Formulas whose unsat proves `text` unsat; None when there is no prefix to
        share (a single section)."""
        head, *sections = text.split("\n" + SECTION_MARK)
        if len(sections) < 2:
            return None
        keys, key = [], hashlib.sha256(head.encode()).digest()
        for section in sections[:-1]:
            key = hashlib.sha256(key + section.encode()).digest()
            keys.append(key)
        start, prefix = 0, _Prefix(self.z3, [], [], {})
        for i in reversed(range(len(keys))):
            if keys[i] in self.states:
                self.states.move_to_end(keys[i])
                start, prefix = i + 1, self.states[keys[i]]
                break
        for i in range(start, len(keys)):
            new, declared = self._parse(head, prefix, sections[i])
            goal = self.z3.Goal()
            goal.add(prefix.substitute(self.z3, new))
            (reduced,) = self.reduce(goal)
            facts, rest = _split(self.z3, reduced)
            prefix = self.states[keys[i]] = _Prefix(self.z3, prefix.facts + facts,
                                                    prefix.rest + rest, declared)
            if len(self.states) > self.limit:
                self.states.popitem(last=False)
        new, _ = self._parse(head, prefix, sections[-1])
        return [prefix.substitute(self.z3, new), *prefix.rest]

    def _parse(self, head: str, prefix: _Prefix, section: str) -> tuple[Any, dict[str, str]]:
        """One section's formulas, re-declaring the earlier symbols it uses (z3 names a
        constant by name and sort, so they are the prefix's own), and the declarations
        known after it."""
        body = section.split("\n", 1)[1]  # drop the label line
        declared = prefix.declared
        earlier = "".join(declared[n] for n in set(_SYMBOL.findall(body)) if n in declared)
        new = self.z3.parse_smt2_string(head + earlier + body)
        return new, declared | {m[1]: m[0] for m in _DECLARATION.finditer(body)}
