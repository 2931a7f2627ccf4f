"""One circuit run on one concrete prompt, encoded exactly in QF_LRA.

The prompt is concrete, so every value is a constant the exact evaluator
already knows; the query's job is to make the solver re-derive them. Each
node input and norm output is a named variable defined by its linear
equation, and every piecewise operator between them stays for the solver to
check (guided: its recorded branch plus guards; full: its case splits).

Attention has two products of variables, broken with exact constants from the
run and an equality guard for each (a wrong constant fails its guard):

* scores q_t·k_j / s: the query q_t is the constant, so a score is affine in
  the named key k_j, and one guard vector per head (q_t) replaces one per key
  position;
* Σ_j w_j v_j: the sparsemax weights are the constants, so the head result is
  affine in the named values v_j.

The second factor of each product is what a prompt's prefix positions hold
for the positions after them. With several heads (head_dim < d_model) that is
each head's key and value, named per position: a score or a result coordinate
then costs head_dim big-number products instead of d_model. With one head they
are as wide as the normed input n_j they are computed from, so scores are
affine in n_j (through the constant u = q_t W_k / s), the result is
m = Σ_j w_j n_j, and W_o·W_v is fused once per model, which spares the
position that attends its own k and v (measured: 15 % less z3 time per query
on one head, 21 % less with named keys and values on two).

Only what the final position depends on is encoded (nodes are built on
demand), and the final logits are returned as terms, never defined, so a
property pays only for the logits it reads.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, TypeVar
from weakref import WeakKeyDictionary

from encoders.lazy import Lazy
from encoders.ops import (
    band_norm_full,
    band_norm_guided,
    leaky_relu_full,
    leaky_relu_guided,
    sparsemax_full,
    sparsemax_guided,
)
from encoders.smtlib import Affine, Formula, Fragment, Query, Section, and_, common_scale, eq
from farm.errors import FarmError
from farm.model.circuit import Circuit, parse_node
from farm.model.exact import ExactAffine, ExactModel, RowResult, exact
from farm.model.tracing import Trace

__all__ = ["EncodedRun", "encode_run"]

Mode = Literal["guided", "full"]
Vec = list[Affine]
T = TypeVar("T")
Matrix = tuple[list[list[int]], list[int], int]  # (rows, bias, their common denominator)


@dataclass(frozen=True)
class _Position:
    """One encoded prefix position: its section, the run's memo entries for it, its guard."""

    section: Section | None
    memo: tuple[dict, ...]  # the entries of _Run's memo tables at this position
    guard: Formula | None


POSITION_CACHE = 512  # prefix positions kept per model (10-100 KB of text each); a task's
# prompts have 46 proper prefixes per run tag and circuit
FRAGMENT_CACHE = 4096  # encoded sites kept per model (`_Run.replayed`), 1-10 KB of text each


@dataclass(frozen=True)
class EncodedRun:
    logits: Sequence[Affine]  # final-position logits over the vocabulary, as terms of the
    # query, each computed when first read
    final_residual: list[Affine]  # r_E(x), the input of the final norm
    guards: list[Formula]  # guided mode: per position, the Boolean naming its guards; [] if none
    run: _Run = field(repr=False, compare=False)  # what a later run of this prompt may share


def encode_run(q: Query, model: ExactModel, circuit: Circuit, prompt: tuple[int, ...], *,
               tag: str, mode: Mode = "guided", result: RowResult | None = None,
               branches: Trace | None = None, base: EncodedRun | None = None) -> EncodedRun:
    """Define the circuit's run on `prompt` in `q` (names prefixed by `tag`).

    `result` is the exact run of this circuit on this prompt (computed if not
    given); its constants are used, and in guided mode the branches of
    `branches` (a trace read back from `farm.model.tracing`) or else its own trace.
    The guards say where that is exact: a wrong branch record fails its guard,
    it never makes a claim true. Guards are returned, never asserted.

    `base`, an earlier run of the same prompt in `q` (edge necessity: the
    circuit, then the circuit minus an edge), lends this run its variables for
    every node whose inputs are the same in both circuits, so only what the
    difference reaches is encoded again; their guards are the base's.
    """
    if mode not in ("guided", "full"):
        raise ValueError(f"mode must be 'guided' or 'full', got {mode!r}")
    prompt = tuple(int(t) for t in prompt)
    result = result or model.run([prompt], circuit)[0]
    if result.prompt != prompt:
        raise FarmError(f"exact result is for prompt {result.prompt}, not {prompt}")
    if branches is not None and len(branches) != len(prompt):
        raise FarmError(f"trace has {len(branches)} positions, prompt {prompt} has {len(prompt)}")
    run = _Run(q, model, circuit, result, tag, mode, branches or result.trace)
    last = len(prompt) - 1
    key: tuple = (tag, circuit, mode)
    if base is not None:
        if base.run.result.prompt != prompt or base.run.mode != mode:
            raise ValueError("a base run must be of the same prompt and mode")
        run.borrow(base.run)
        key += (base.run.tag, base.run.circuit)  # this run's text names the base's variables
    for t in range(last):
        key = (key, prompt[t], tuple(sorted(run.trace[t].items())))
        run.prefix_position(t, key)
    q.section(f"{tag}.p{last}")
    residual = run.node_input("logits", last)
    normed = run.norm(model.norm_final, residual, "logits", last)
    weights, bias, den = _matrix(model.lm_head)
    logits = Lazy(len(weights), lambda r: Affine.row(weights[r], den, normed, bias[r]))
    run.name_guards(last)
    return EncodedRun(logits, residual, run.position_guards, run)


# --------------------------------------------------------------------------- exact constants


class _Consts:
    """A model's exact embeddings, W_o·W_v fused per head (one-head models), and the
    encoded prefix positions and sites of recent runs; built once per model."""

    def __init__(self, model: ExactModel) -> None:
        self.model = model
        self._ov: dict[tuple[int, int], Matrix] = {}
        self._embeddings: dict[tuple[int, int], list[Fraction]] = {}
        self.positions: OrderedDict[tuple, _Position] = OrderedDict()  # LRU
        self.fragments: OrderedDict[tuple, tuple[Fragment, object, tuple[Formula, ...]]] = (
            OrderedDict())  # LRU

    def embedding(self, token: int, t: int) -> list[Fraction]:
        """wte[token] + wpe[t], exactly, computed once per model."""
        if (token, t) not in self._embeddings:
            self._embeddings[token, t] = [exact(a) + exact(b) for a, b in zip(
                self.model.wte[token], self.model.wpe[t], strict=True)]
        return self._embeddings[token, t]

    def ov(self, layer: int, head: int) -> Matrix:
        """W_o[:, head] · (W_v[head] m + b_v[head]) as one matrix over m, b_o left out."""
        if (layer, head) not in self._ov:
            params, dh = self.model.layers[layer], self.model.cfg.head_dim
            o, v = params["o"], params["v"]
            cols = range(head * dh, (head + 1) * dh)
            rows = [[sum(o_row[c] * v.weight[c][k] for c in cols)
                     for k in range(len(v.weight[0]))] for o_row in o.weight]
            bias = [sum(o_row[c] * v.bias[c] for c in cols) for o_row in o.weight]
            self._ov[layer, head] = (rows, bias, o.scale * v.scale)
        return self._ov[layer, head]


_CONSTS: WeakKeyDictionary[ExactModel, _Consts] = WeakKeyDictionary()


def _consts(model: ExactModel) -> _Consts:
    if (c := _CONSTS.get(model)) is None:
        c = _CONSTS[model] = _Consts(model)
    return c


def _signature(x: Sequence[Affine]) -> tuple:
    """Everything of a vector of terms that an encoding built on it can depend on."""
    return tuple((tuple(a.nums.items()), a.num0, a.den) for a in x)


def _matrix(affine: ExactAffine) -> Matrix:
    """A weight matrix as the exact evaluator holds it: integers over one denominator."""
    return affine.weight, affine.bias, affine.scale


def _apply(m: Matrix, x: Sequence[Affine], rows: range | None = None, bias: bool = True
           ) -> Vec:
    weights, b, den = m
    return [Affine.row(weights[r], den, x, b[r] if bias else 0)
            for r in rows or range(len(weights))]


def _bias(m: Matrix) -> list[Fraction]:
    _, b, den = m
    return [Fraction(v, den) for v in b]


# --------------------------------------------------------------------------- the run


def _attention_ancestors(circuit: Circuit) -> list[str]:
    """Attention nodes on a retained path to the logits, in graph order: at the last
    position they attend over every earlier one, so those are what a prefix must hold."""
    live = circuit.feeding_logits()
    return [n for n in circuit.nodes if n in live and parse_node(n).kind == "attn"]


def _constant_nodes(parents: dict[str, list[str]]) -> frozenset[str]:
    """Nodes whose values are the same in every prompt: under zero ablation a node with
    no retained input (a constant source) and any node fed only by such nodes."""
    constant: set[str] = set()
    for node, inputs in parents.items():  # in graph order: parents first
        if node not in ("emb", "logits") and all(p in constant for p in inputs):
            constant.add(node)
    return frozenset(constant)


def _site(node: str) -> str:
    """Short variable-name stem of a node: attn_0 -> a0, attn_1_h_0 -> a1h0, mlp_0 -> m0."""
    ref = parse_node(node)
    if ref.kind == "attn":
        return f"a{ref.layer}" + ("" if ref.head is None else f"h{ref.head}")
    return {"mlp": f"m{ref.layer}", "emb": "e", "logits": "f"}[ref.kind]


class _Run:
    """Encodes nodes on demand, memoised per (node, position), collecting guards."""

    def __init__(self, q: Query, model: ExactModel, circuit: Circuit, result: RowResult,
                 tag: str, mode: Mode, trace: Trace) -> None:
        self.q, self.m, self.result, self.tag, self.mode = q, model, result, tag, mode
        self.circuit, self.trace = circuit, trace
        self.consts = _consts(model)
        self.parents = {node: circuit.parents(node) for node in circuit.nodes}
        self.guards: list[Formula] = []  # of the position being encoded
        self.position_guards: list[Formula] = []  # one named conjunction per position
        self._inputs: dict[tuple[str, int], Vec] = {}
        self._normed: dict[tuple[str, int], Vec] = {}
        self._heads: dict[tuple[str, int, int], Vec] = {}
        self._kv: dict[tuple[str, int, int], tuple[Vec, Vec]] = {}
        self._mlps: dict[tuple[str, int], Vec] = {}
        self._attn_outs: dict[tuple[int, tuple[tuple[str, int], ...], int], Vec] = {}
        self.readers = _attention_ancestors(circuit)
        self.constant = _constant_nodes(self.parents)
        self.named_kv = model.cfg.head_dim < model.cfg.d_model  # see the module docstring

    # --- positions: sections of the query, shared by every prompt with the same prefix

    def prefix_position(self, t: int, key: tuple) -> None:
        """Encode what later positions read from position t (keys and values, or the
        normed inputs, of the attention nodes they attend with) as one section, or
        include it from the cache.

        Causal attention makes position t's values a function of the prefix up to t,
        so `key` (tag, circuit, mode, then tokens and branches up to t) fixes its text.
        """
        cache = self.consts.positions
        if (hit := cache.get(key)) is not None:
            cache.move_to_end(key)
            if hit.section is not None:  # None: nothing later positions read
                self.q.include(hit.section)
            for table, entries in zip(self._memo_tables(), hit.memo, strict=True):
                table.update(entries)
            if hit.guard is not None:
                self.position_guards.append(hit.guard)
            return
        self.q.section(f"{self.tag}.p{t}")
        for node in self.readers:
            if not self.named_kv:
                self.normed(node, t)
                continue
            for h in parse_node(node).heads(self.m.cfg.n_heads):
                self.key_value(node, h, t)
        guard = self.name_guards(t)
        memo = tuple({k: v for k, v in table.items() if k[-1] == t}
                     for table in self._memo_tables())
        cache[key] = _Position(self.q.seal(), memo, guard)
        if len(cache) > POSITION_CACHE:
            cache.popitem(last=False)

    def _memo_tables(self) -> tuple[dict, ...]:
        return self._inputs, self._normed, self._heads, self._kv, self._mlps, self._attn_outs

    def borrow(self, base: _Run) -> None:
        """Take `base`'s encoded values of the nodes computed alike in both circuits:
        those whose parents, and their parents' parents, are the same in both."""
        same: set[str] = set()
        for node in self.circuit.nodes:  # in graph order: parents first
            parents = set(self.parents[node])
            if parents == set(base.parents[node]) and parents <= same:
                same.add(node)
        for mine, theirs in zip(self._memo_tables(), base._memo_tables(), strict=True):
            mine.update((k, v) for k, v in theirs.items()
                        if (k[0] in same if isinstance(k[0], str)
                            else all(n in same for n, _ in k[1])))  # _attn_outs: by heads

    def guard(self, name: str, formulas: Sequence[Formula]) -> None:
        """Name one site's guards (a norm, a head's query, its support) by a Boolean.

        A site's guards often repeat word for word between queries where the
        position's whole conjunction does not (layer 0 at the final position
        reads its token only), and the z3 child parses a repeated line once."""
        if formulas:
            self.guards.append(self.q.boolean(f"{name}.g", and_(*formulas)))

    def name_guards(self, t: int) -> Formula | None:
        """Name position t's site Booleans by one, so a claim's negation stays short."""
        if not self.guards:
            return None
        guard = self.q.boolean(f"{self.tag}.g{t}", and_(*self.guards))
        self.guards = []
        self.position_guards.append(guard)
        return guard

    def replayed(self, key: tuple, build: Callable[[], T]) -> T:
        """`build()`, whose text and guards are a function of `key`, encoded once per
        model: where the same inputs come again (a norm of the final token's embedding,
        or of a sum whose terms share their scales) its lines are added again.

        The key must hold everything the text depends on (the run's tag, the site,
        the branch, the inputs' `_signature`): what is replayed is the text
        `build()` would write, so a key that missed something could make a query
        speak of other inputs."""
        memo = self.consts.fragments
        if (hit := memo.get(key)) is not None:
            memo.move_to_end(key)
            fragment, out, guards = hit
            self.q.replay(fragment)
            self.guards += guards
            return out
        mark, before = self.q.mark(), len(self.guards)
        out = build()
        memo[key] = (self.q.since(mark), out, tuple(self.guards[before:]))
        if len(memo) > FRAGMENT_CACHE:
            memo.popitem(last=False)
        return out

    def branch(self, t: int, site: str) -> tuple:
        """The recorded branch of `site` at position t (guided mode)."""
        try:
            return self.trace[t][site]
        except KeyError:
            raise FarmError(f"trace of {self.result.prompt} has no branch for {site} at "
                            f"position {t}") from None

    def name(self, node: str, t: int, what: str) -> str:
        return f"{self.tag}.{t}{_site(node)}.{what}"

    def vector(self, name: str, values: Sequence[Affine], scale: int = 1) -> Vec:
        return [self.q.define(f"{name}{i}", v, scale=scale) for i, v in enumerate(values)]

    def rows(self, name: str, m: Matrix, x: Vec, rows: range) -> Vec:
        """Rows of `m` applied to `x`, named without the constants, which join after:
        the bias and what x's constants contribute. With x's variables over one
        scale (`common_scale`, as norms and these rows name their outputs) the rows
        then read the same in every query, and z3 parses a repeated line once."""
        weights, bias, den = m
        cd, cn = 1, None  # x's constants over one denominator, None if it has none
        if any(a.num0 for a in x):
            x, consts = [a.linear_part() for a in x], [a.const for a in x]
            cd = math.lcm(*(c.denominator for c in consts))
            cn = [c.numerator * (cd // c.denominator) for c in consts]
        terms = _apply(m, x, rows, bias=False)
        named = self.vector(name, terms, common_scale(terms))
        return [a + Fraction((sum(map(operator.mul, weights[r], cn)) if cn else 0)
                             + bias[r] * cd, den * cd)
                for a, r in zip(named, rows, strict=True)]

    # --- the residual graph

    def node_input(self, node: str, t: int) -> Vec:
        """Sum of the retained parents at position t (zero ablation), as named variables."""
        if (node, t) in self._inputs:
            return self._inputs[node, t]
        terms: list[Affine | Fraction] = []
        heads_by_layer: dict[int, list[tuple[str, int]]] = {}
        for parent in self.parents[node]:
            ref = parse_node(parent)
            if ref.kind == "attn":
                heads = ref.heads(self.m.cfg.n_heads)
                heads_by_layer.setdefault(ref.layer, []).extend((parent, h) for h in heads)
            elif ref.kind == "emb":
                terms.append(self.embedding(t))
            else:
                terms.append(self.mlp(parent, t))
        for layer, heads in heads_by_layer.items():
            terms.append(self.attn_out(layer, tuple(heads), t))
        d = self.m.cfg.d_model
        total = [Affine.sum(term[i] for term in terms) for i in range(d)]
        x = self._inputs[node, t] = self.vector(self.name(node, t, "x"), total)
        return x

    def embedding(self, t: int) -> list[Fraction]:
        return self.consts.embedding(self.result.prompt[t], t)

    def norm(self, params, x: Vec, node: str, t: int) -> Vec:
        """The node's norm (identity for norm_variant none), its output named over one
        scale (see `rows`)."""
        if params is None:
            return x
        branch = self.branch(t, f"{node}.norm") if self.mode == "guided" else None
        return self.replayed(("norm", self.tag, self.mode, node, t, branch, _signature(x)),
                             lambda: self._norm(params, x, node, t, branch))

    def _norm(self, params, x: Vec, node: str, t: int, branch) -> Vec:
        gamma, beta = params
        cfg, tag = self.m.cfg, self.name(node, t, "bn")
        if branch is not None:
            out, guards = band_norm_guided(self.q, x, gamma, beta, cfg.half_low, cfg.half_high,
                                           branch, tag=tag)
            self.guard(tag, guards)
        else:
            out, guards = band_norm_full(self.q, x, gamma, beta, cfg.half_low, cfg.half_high,
                                         tag=tag)
            self.guards += guards  # none: nothing is settled inside a circuit run
        return self.vector(self.name(node, t, "n"), out, common_scale(out))

    def normed(self, node: str, t: int) -> Vec:
        if (node, t) not in self._normed:
            layer = parse_node(node).layer
            key = "norm_attn" if parse_node(node).kind == "attn" else "norm_mlp"
            self._normed[node, t] = self.norm(self.m.layers[layer][key],
                                              self.node_input(node, t), node, t)
        return self._normed[node, t]

    # --- attention

    def key_value(self, node: str, h: int, t: int) -> tuple[Vec, Vec]:
        """k and v of one head at position t, named: every later position reads them
        (encoded once per model for each normed input, as norms are)."""
        if (node, h, t) not in self._kv:
            params, dh = self.m.layers[parse_node(node).layer], self.m.cfg.head_dim
            rows, n_t = range(h * dh, (h + 1) * dh), self.normed(node, t)
            self._kv[node, h, t] = self.replayed(
                ("kv", self.tag, node, h, t, _signature(n_t)),
                lambda: tuple(self.rows(self.name(node, t, f"h{h}{what}"),
                                        _matrix(params[what]), n_t, rows)
                              for what in ("k", "v")))
        return self._kv[node, h, t]

    def head(self, node: str, h: int, t: int) -> Vec:
        """Σ_j w_j v_j for one head at position t (or m = Σ_j w_j n_j, see the module
        docstring), the weights w_j exact and guarded; terms, named by `attn_out`.

        A head of a constant node reads the same values in every prompt, so its
        text at position t is encoded once per model and replayed after."""
        if node not in self.constant:
            return self._head(node, h, t)
        return self.replayed(self._head_key(node, h, t), lambda: self._head(node, h, t))

    def _head_key(self, node: str, h: int, t: int) -> tuple:
        """Everything the text of a constant node's head depends on (see `replayed`).

        What it reads from earlier positions is encoded first, so that it stays in
        the memo tables (the head's replayed text does not define it); its own key
        and value follow from its normed input's signature, and are written where
        they always were, after the query's guard."""
        read = [self.normed(node, t), *(x for j in range(t) for x in self._kv_of(node, h, j))]
        layer = parse_node(node).layer
        position = self.result.positions[t]
        return ("head", self.tag, self.mode, node, h, t,
                self.branch(t, f"{node}.head{h}.sparsemax") if self.mode == "guided" else None,
                tuple(position.queries[layer, h]), tuple(position.patterns[layer, h]),
                *(_signature(x) for x in read))

    def _kv_of(self, node: str, h: int, j: int) -> tuple[Vec, Vec]:
        """The key and value head h of `node` reads at position j (the normed input
        twice with one head, see the module docstring)."""
        if self.named_kv:
            return self.key_value(node, h, j)
        normed = self.normed(node, j)
        return normed, normed

    def _head(self, node: str, h: int, t: int) -> Vec:
        layer, dh = parse_node(node).layer, self.m.cfg.head_dim
        params, rows = self.m.layers[layer], range(h * dh, (h + 1) * dh)
        q_const = self.result.positions[t].queries[layer, h]
        normed = self.normed(node, t)
        q_var = self.replayed(("q", layer, h, _signature(normed)),  # no text: kept only
                              lambda: _apply(_matrix(params["q"]), normed, rows))
        self.guard(self.name(node, t, f"h{h}q"),
                   [eq(v, c) for v, c in zip(q_var, q_const, strict=True)])
        keys, values = zip(*(self._kv_of(node, h, j) for j in range(t + 1)), strict=True)
        if self.named_kv:
            u, u0 = [c / self.m.scale for c in q_const], Fraction(0)
        else:
            u, u0 = params["k"].covector(q_const, rows)
            u, u0 = [c / self.m.scale for c in u], u0 / self.m.scale
        scores = self.vector(self.name(node, t, f"h{h}s"), [Affine.dot(u, k, u0) for k in keys])
        tag = self.name(node, t, f"h{h}w")
        if self.mode == "guided":
            support = self.branch(t, f"{node}.head{h}.sparsemax")
            weights, guards = sparsemax_guided(self.q, scores, support, tag=tag)
            self.guard(tag, guards)
        else:
            weights = sparsemax_full(self.q, scores, tag=tag)
        w_const = self.result.positions[t].patterns[layer, h]
        self.guard(tag + "c", [eq(w, c) for w, c in zip(weights, w_const, strict=True)
                               if w.nums or w.const != c])
        used = [(w, v) for w, v in zip(w_const, values, strict=True) if w]
        return [Affine.combine((w, v[i]) for w, v in used) for i in range(len(values[0]))]

    def attn_out(self, layer: int, heads: tuple[tuple[str, int], ...], t: int) -> Vec:
        """W_o concat(retained heads, zeros) + b_o: the retained heads' columns of W_o,
        or the fused W_o·W_v on m with one head; named, like every node output that
        joins a residual sum (see `mlp`).

        The heads' results are named over one common scale and the projection
        without its bias, which joins as a constant: the projection's text is
        then the same in every query, where a run's denominators would have put
        different coefficients and a bias of a hundred digits in each row (z3
        parses a repeated line once)."""
        if (layer, heads, t) in self._attn_outs:
            return self._attn_outs[layer, heads, t]
        if all(node in self.constant and (node, h, t) not in self._heads for node, h in heads):
            # a constant node's output: encoded once per model, replayed after
            key = ("attn_out", layer, heads, *(self._head_key(node, h, t) for node, h in heads))
            results, out = self.replayed(key, lambda: self._attn_out(layer, heads, t))
        else:
            results, out = self._attn_out(layer, heads, t)
        self._heads.update(results)
        self._attn_outs[layer, heads, t] = out
        return out

    def _attn_out(self, layer: int, heads: tuple[tuple[str, int], ...], t: int
                  ) -> tuple[dict[tuple[str, int, int], Vec], Vec]:
        """The heads' results not named before, named, and the layer's output."""
        new = {(node, h): self.head(node, h, t) for node, h in heads
               if (node, h, t) not in self._heads}
        scale = common_scale(a for result in new.values() for a in result)
        results = {(node, h, t): self.vector(self.name(node, t, f"h{h}r"), result, scale)
                   for (node, h), result in new.items()}
        w_o = _matrix(self.m.layers[layer]["o"])
        weights, _, den = w_o
        bias = _bias(w_o)
        terms = []
        for node, h in heads:
            result = results.get((node, h, t)) or self._heads[node, h, t]
            if self.named_kv:
                cols = [row[h * len(result):(h + 1) * len(result)] for row in weights]
                terms.append([Affine.row(c, den, result) for c in cols])
            else:
                ov = self.consts.ov(layer, h)
                terms.append(_apply(ov, result, bias=False))
                bias = [b + c for b, c in zip(bias, _bias(ov), strict=True)]
        which = "".join(f"h{h}" for _, h in heads)
        named = self.vector(f"{self.tag}.{t}a{layer}.o{which}.",
                            [Affine.sum(col) for col in zip(*terms, strict=True)])
        return results, [o + b for o, b in zip(named, bias, strict=True)]

    # --- MLP

    def mlp(self, node: str, t: int) -> Vec:
        """W_down LeakyReLU(W_up n + b_up) + b_down, named (encoded once per model for
        each input and activation pattern, as norms are).

        Naming each output keeps the residual sums it joins short: a sum of
        named vectors has one coefficient per source, where an expanded MLP
        would put all 64 hidden units in every coordinate, each coefficient
        multiplied up to the sum's common denominator (`Query.define`)."""
        if (node, t) in self._mlps:
            return self._mlps[node, t]
        normed = self.normed(node, t)
        signs = self.branch(t, f"{node}.act") if self.mode == "guided" else None
        out = self._mlps[node, t] = self.replayed(
            ("mlp", self.tag, self.mode, node, t, signs, _signature(normed)),
            lambda: self._mlp(node, t, normed, signs))
        return out

    def _mlp(self, node: str, t: int, normed: Vec, signs: tuple[bool, ...] | None) -> Vec:
        params = self.m.layers[parse_node(node).layer]
        up, down = _matrix(params["up"]), _matrix(params["down"])
        pre = self.rows(self.name(node, t, "u"), up, normed, range(len(up[0])))
        if signs is not None:
            hidden, guards = leaky_relu_guided(pre, signs)
            self.guard(self.name(node, t, "act"), guards)
        else:
            hidden = leaky_relu_full(self.q, pre, tag=self.name(node, t, "r"))
        return self.rows(self.name(node, t, "o"), down, hidden, range(len(down[0])))
