"""A circuit's run over a cube of prompts, encoded exactly in QF_LRA.

A cube fixes some positions to one token and lets the others range over token
sets. Each symbolic position p is a real variable x_p asserted to be one of its
tokens, so one query speaks of every prompt of the cube: UNSAT proves a claim
for all of them, and a SAT model's x_p name a prompt to replay exactly.

The circuit is piecewise linear in its activations, not in its tokens:
attention multiplies a query by a key and a weight by a value, both functions
of the prompt. Such a product stays linear exactly where one factor takes few
values. A quantity that depends on few symbolic positions (at most
`TABLE_LIMIT` combinations of their tokens) is a *table*: its exact value per
combination (`farm.model.exact`), read through one selector per combination,
so multiplying by it is a case split over them. Everything else is a term built
by `encoders.ops`' full encodings (every branch left to the solver, nothing
taken from a trace). A product of two wide factors has no exact linear form:
`TooWide` says so, and the caller splits the cube.

Which symbolic positions a quantity depends on is read from the circuit: a
node's input at t from its retained parents at t, an attention node's output at
t from its input at every j ≤ t (causal attention), the embedding from t alone.
Tables are taken only where a product needs one or a quantity reads a single
position (an embedding, a layer-0 key); wider sums and norms stay symbolic, so
the solver, not enumeration, carries the claim over the cube.

A symbolic operator's full case split is what makes a cube hard (the demo quote
class cube: no answer in 60 s from either solver). `Hints`, the branches exact
runs of prompts of the cube took, settle in advance what they all agree on: a
BandNorm sign, a side's projection or lift, a sparsemax or projection support,
a LeakyReLU sign. A settled part is encoded on its branch and its condition is a
*guard* in the negated claim, never an assumption: UNSAT proves every guard holds
on every prompt of the cube (each guard reads values that are exact wherever the
earlier guards hold), so the settled encoding is the exact one there. A hint
that is wrong (a sample missed a branch) can only make a query SAT, never prove
anything (`farm.verify.conquer` learns the prompt of such a model and asks again).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from encoders.circuit import _site
from encoders.lazy import Lazy
from encoders.ops import (
    Settled,
    band_norm_full,
    band_norm_guided,
    leaky_relu_full,
    sparsemax_guided,
    threshold_full,
)
from encoders.properties import Claim
from encoders.smtlib import Affine, Formula, Query, and_, eq, ite, not_, or_
from farm.errors import FarmError
from farm.model.circuit import Circuit, parse_node
from farm.model.exact import BandNormBranch, CircuitRun, ExactAffine, ExactModel, Position

__all__ = ["TABLE_LIMIT", "CubeQuery", "Hints", "Table", "TooWide", "cube_query",
           "encode_cube"]

TABLE_LIMIT = 64  # token combinations a table may hold: each is an exact run and a case
Vec = list[Affine]


class TooWide(FarmError):
    """The cube has no exact linear encoding (a product of two wide factors): split it."""


@dataclass(frozen=True)
class Table:
    """A value known exactly per combination of the tokens at `positions`."""

    positions: tuple[int, ...]
    values: dict[tuple[int, ...], list[Fraction]]


Value = Table | Vec
Site = tuple[int, str]  # (position, branch site as `farm.model.exact` records it)


@dataclass(frozen=True)
class Hints:
    """The branches the exact runs of some prompts of a cube took, per site: what the
    encoding may settle in advance (under guards) where they all agree."""

    seen: Mapping[Site, frozenset]
    prompts: frozenset[tuple[int, ...]] = frozenset()

    @classmethod
    def of(cls, runs: CircuitRun, prompts: Iterable[Sequence[int]]) -> Hints:
        return cls({}).add(runs, prompts)

    def add(self, runs: CircuitRun, prompts: Iterable[Sequence[int]]) -> Hints:
        """These hints and the branches of `prompts` as well."""
        seen = {site: set(records) for site, records in self.seen.items()}
        added = set(self.prompts)
        for prompt in map(tuple, prompts):
            added.add(prompt)
            for t, sites in enumerate(runs.row(prompt).trace):
                for site, record in sites.items():
                    seen.setdefault((t, site), set()).add(record)
        return Hints({site: frozenset(r) for site, r in seen.items()}, frozenset(added))

    def records(self, site: Site) -> frozenset:
        return self.seen.get(site, frozenset())


@dataclass(frozen=True)
class CubeQuery:
    """One cube claim as an SMT query: UNSAT proves `claim` on every prompt of `tokens`."""

    text: str
    hash: str  # sha256 of text: the query's identity
    tokens: tuple[tuple[int, ...], ...]  # per position, the tokens it ranges over
    token_vars: tuple[tuple[int, str], ...]  # (symbolic position, its variable)
    claim: Claim

    @property
    def model_vars(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.token_vars)

    def prompt(self, model: dict[str, Fraction]) -> tuple[int, ...]:
        """The prompt a SAT model names; FarmError if it is not one of the cube's."""
        prompt = [ts[0] for ts in self.tokens]
        for p, var in self.token_vars:
            value = model[var]
            if value.denominator != 1 or int(value) not in self.tokens[p]:
                raise FarmError(f"a SAT model puts {value} at position {p}, not one of "
                                f"{self.tokens[p]}: the cube encoding is wrong")
            prompt[p] = int(value)
        return tuple(prompt)


def cube_query(model: ExactModel, circuit: Circuit, tokens: Sequence[Sequence[int]],
               candidates: tuple[int, int], claim: Claim, hints: Hints | None = None
               ) -> CubeQuery:
    """The negation of `claim` about the margin logit[c0] − logit[c1] over the cube: some
    guard of what `hints` settle fails, or the claim does."""
    if claim.arity != 1:
        raise ValueError("a cube query states a claim about one run")
    q = Query()
    logits, token_vars, guards = encode_cube(q, model, circuit, tokens, tag="c", hints=hints)
    c0, c1 = candidates
    margin = q.define("m0", logits[c0] - logits[c1])
    q.add(or_(*([not_(and_(*guards))] if guards else []), claim.violated([margin])))
    text = q.text()
    return CubeQuery(text, hashlib.sha256(text.encode()).hexdigest(),
                     tuple(tuple(ts) for ts in tokens), token_vars, claim)


def encode_cube(q: Query, model: ExactModel, circuit: Circuit,
                tokens: Sequence[Sequence[int]], *, tag: str, hints: Hints | None = None
                ) -> tuple[Lazy[Affine], tuple[tuple[int, str], ...], list[Formula]]:
    """Define the circuit's run over every prompt of the cube in `q`: the final logits as
    terms, each symbolic position's token variable, and the guards of what `hints`
    settled (the logits are exact wherever they all hold). `TooWide` if not linear."""
    tokens = tuple(tuple(int(t) for t in ts) for ts in tokens)
    if len(tokens) != model.cfg.seq_len or not all(tokens):
        raise FarmError(f"a cube of {model.cfg.seq_len} positions, each with a token, is "
                        f"needed; got {tokens}")
    if any(len(set(ts)) != len(ts) or not all(0 <= t < model.cfg.vocab_size for t in ts)
           for ts in tokens):
        raise FarmError(f"cube {tokens} repeats a token or leaves the vocabulary")
    run = _CubeRun(q, model, circuit, tokens, tag, hints or Hints({}))
    last = len(tokens) - 1
    normed = run.norm(model.norm_final, run.node_input("logits", last), f"{tag}.{last}f",
                      (last, "logits.norm"))
    head = model.lm_head
    logits = Lazy(len(head.weight),
                  lambda r: Affine.row(head.weight[r], head.scale, normed, head.bias[r]))
    return logits, tuple(run.token_vars.items()), run.guards


class _CubeRun:
    """Encodes what the final position reads, memoised per (quantity, position)."""

    def __init__(self, q: Query, model: ExactModel, circuit: Circuit,
                 tokens: tuple[tuple[int, ...], ...], tag: str, hints: Hints) -> None:
        self.q, self.m, self.circuit, self.tokens, self.tag = q, model, circuit, tokens, tag
        self.hints, self.guards = hints, []
        self._memo: dict[tuple, object] = {}
        self.runs = model.runs(circuit)
        self.parents = {node: circuit.parents(node) for node in circuit.nodes}
        self.base = tuple(ts[0] for ts in tokens)
        self.token_vars: dict[int, str] = {}
        for p, ts in enumerate(tokens):
            if len(ts) > 1:
                x = q.real(f"{tag}.x{p}", model=True)
                q.add(or_(*(eq(x, t) for t in ts)))
                self.token_vars[p] = f"{tag}.x{p}"

    def memo(self, key: tuple, build: Callable[[], object]):
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    # --- which symbolic positions a quantity reads

    def reads_in(self, node: str, t: int) -> frozenset[int]:
        """Symbolic positions the input of `node` at t depends on."""
        return self.memo(("in", node, t), lambda: frozenset().union(
            *(self.reads_out(parent, t) for parent in self.parents[node])))

    def reads_out(self, node: str, t: int) -> frozenset[int]:
        ref = parse_node(node)
        if ref.kind == "emb":
            return frozenset({t} & self.token_vars.keys())
        if ref.kind == "mlp":
            return self.reads_in(node, t)
        return self.memo(("out", node, t), lambda: frozenset().union(
            *(self.reads_in(node, j) for j in range(t + 1))))

    def combinations(self, positions: frozenset[int]) -> int:
        return math.prod(len(self.tokens[p]) for p in positions)

    # --- tables: exact values per combination, and their selectors

    def table(self, positions: frozenset[int], t: int, read: Callable[[Position], list]
              ) -> Table:
        """`read` of the exact run's position t, for each combination of `positions` (the
        cube's other tokens cannot change it, so they keep their first one)."""
        ordered = tuple(sorted(positions))
        values = {}
        for combo in itertools.product(*(self.tokens[p] for p in ordered)):
            prompt = list(self.base)
            for p, token in zip(ordered, combo, strict=True):
                prompt[p] = token
            values[combo] = list(read(self.runs.position(tuple(prompt[:t + 1]))))
        return Table(ordered, values)

    def selector(self, positions: tuple[int, ...], combo: tuple[int, ...]) -> Formula:
        """The prompt holds `combo` at `positions`."""
        tests = [eq(Affine({self.token_vars[p]: 1}), token)
                 for p, token in zip(positions, combo, strict=True)]
        if len(tests) == 1:
            return tests[0]
        name = f"{self.tag}.s" + "_".join(f"{p}x{token}" for p, token in zip(positions, combo,
                                                                               strict=True))
        return self.memo(("sel", positions, combo), lambda: self.q.boolean(name, and_(*tests)))

    def indicator(self, positions: tuple[int, ...], combo: tuple[int, ...]) -> Affine:
        """1 where the prompt holds `combo` at `positions`, else 0."""
        name = f"{self.tag}.i" + "_".join(f"{p}x{token}" for p, token in zip(positions, combo,
                                                                               strict=True))
        return self.memo(("ind", positions, combo), lambda: self.q.define(
            name, ite(self.selector(positions, combo), 1, 0)))

    def terms(self, value: Value) -> Vec:
        """A value as affine terms: a table is Σ_c indicator_c · value_c."""
        if not isinstance(value, Table):
            return value
        if not value.positions:
            (only,) = value.values.values()
            return [Affine(const=c) for c in only]
        rows = [(self.indicator(value.positions, combo), vec)
                for combo, vec in value.values.items()]
        return [Affine.combine((vec[i], ind) for ind, vec in rows)
                for i in range(len(rows[0][1]))]

    def cases(self, table: Table, name: str, build: Callable[[list[Fraction]], Affine]
              ) -> Affine:
        """Σ_c ite(combo c, build(value_c), 0): a product with a table, one case per combo."""
        if not table.positions:
            (only,) = table.values.values()
            return build(only)
        return Affine.sum(
            self.q.define(f"{name}.c{k}", ite(self.selector(table.positions, combo),
                                              build(vec), 0))
            for k, (combo, vec) in enumerate(table.values.items()))

    # --- the residual graph

    def vector(self, name: str, values: Sequence[Affine]) -> Vec:
        return [self.q.define(f"{name}{i}", v) for i, v in enumerate(values)]

    def node_input(self, node: str, t: int) -> Vec:
        """Sum of the retained parents at t (zero ablation), named."""
        def build() -> Vec:
            terms: list[Vec] = []
            heads_by_layer: dict[int, list[tuple[str, int]]] = {}
            for parent in self.parents[node]:
                ref = parse_node(parent)
                if ref.kind == "attn":
                    heads_by_layer.setdefault(ref.layer, []).extend(
                        (parent, h) for h in ref.heads(self.m.cfg.n_heads))
                elif ref.kind == "emb":
                    terms.append(self.terms(self.embedding(t)))
                else:
                    terms.append(self.terms(self.mlp(parent, t)))
            terms += [self.attn_out(layer, heads, t) for layer, heads in heads_by_layer.items()]
            total = [Affine.sum(term[i] for term in terms) for i in range(self.m.cfg.d_model)]
            return self.vector(f"{self.tag}.{t}{_site(node)}.x", total)
        return self.memo(("x", node, t), build)

    def embedding(self, t: int) -> Table:
        positions = frozenset({t} & self.token_vars.keys())
        return self.table(positions, t, lambda pos: pos.outputs["emb"])

    def norm(self, params, x: Vec, tag: str, site: Site) -> Vec:
        """BandNorm (identity for norm none): on the hinted branch where every hint took
        one, else split by the solver except where the hints agree."""
        if params is None:
            return x
        cfg, records = self.m.cfg, self.hints.records(site)
        if len(records) == 1:
            out, guards = band_norm_guided(self.q, x, *params, cfg.half_low, cfg.half_high,
                                           next(iter(records)), tag=f"{tag}.bn")
        else:
            out, guards = band_norm_full(self.q, x, *params, cfg.half_low, cfg.half_high,
                                         tag=f"{tag}.bn", **_band_agreement(records))
        self.guards += guards
        return self.vector(f"{tag}.n", out)

    def rows(self, name: str, m: ExactAffine, x: Vec, rows: range) -> Vec:
        return self.vector(name, [Affine.row(m.weight[r], m.scale, x, m.bias[r]) for r in rows])

    def normed(self, node: str, t: int) -> Vec:
        ref = parse_node(node)
        params = self.m.layers[ref.layer]["norm_attn" if ref.kind == "attn" else "norm_mlp"]
        return self.memo(("n", node, t), lambda: self.norm(
            params, self.node_input(node, t), f"{self.tag}.{t}{_site(node)}",
            (t, f"{node}.norm")))

    def mlp(self, node: str, t: int) -> Value:
        """W_down LeakyReLU(W_up n + b_up) + b_down: a table where it reads one position."""
        reads = self.reads_in(node, t)
        if len(reads) <= 1:
            return self.table(reads, t, lambda pos: pos.outputs[node])

        def build() -> Vec:
            params, stem = self.m.layers[parse_node(node).layer], f"{self.tag}.{t}{_site(node)}"
            normed = self.normed(node, t)
            pre = self.rows(f"{stem}.u", params["up"], normed, range(len(params["up"].weight)))
            hidden = leaky_relu_full(self.q, pre, tag=f"{stem}.r")
            return self.rows(f"{stem}.o", params["down"], hidden,
                             range(len(params["down"].weight)))
        return self.memo(("mlp", node, t), build)

    # --- attention

    def projection(self, node: str, h: int, t: int, what: str) -> Value:
        """Head h's query, key or value at t: a table if its input takes few values."""
        layer, dh = parse_node(node).layer, self.m.cfg.head_dim
        reads = self.reads_in(node, t)
        if self.combinations(reads) <= TABLE_LIMIT:
            table = {"q": "queries", "k": "keys", "v": "values"}[what]
            return self.memo((what, node, h, t), lambda: self.table(
                reads, t, lambda pos: getattr(pos, table)[layer, h]))
        return self.memo((what, node, h, t), lambda: self.rows(
            f"{self.tag}.{t}{_site(node)}.h{h}{what}", self.m.layers[layer][what],
            self.normed(node, t), range(h * dh, (h + 1) * dh)))

    def head(self, node: str, h: int, t: int) -> Vec:
        """Σ_j w_j v_j with w = sparsemax(q_t·k_j / s): a table where the result reads one
        position, else each product split over its table factor's combinations."""
        layer = parse_node(node).layer
        reads = self.reads_out(node, t)
        if len(reads) <= 1:
            return self.terms(self.table(reads, t, lambda pos: pos.heads[layer, h]))
        stem = f"{self.tag}.{t}{_site(node)}.h{h}"
        query = self.projection(node, h, t, "q")
        scale = 1 / self.m.scale
        scores = [self.q.define(f"{stem}s{j}", self.dot(query, self.projection(node, h, j, "k"),
                                                        f"{stem}s{j}") * scale)
                  for j in range(t + 1)]
        weights = self.sparsemax(scores, f"{stem}w", (t, f"{node}.head{h}.sparsemax"))
        parts = [self.weigh(w, self.projection(node, h, j, "v"), f"{stem}v{j}")
                 for j, w in enumerate(weights)]
        return self.vector(f"{stem}r", [Affine.sum(col) for col in zip(*parts, strict=True)])

    def sparsemax(self, scores: Vec, tag: str, site: Site) -> Vec:
        """On the hinted support where every hint took one; else τ found by the solver,
        with the indices every hint keeps (or drops) settled."""
        supports = self.hints.records(site)
        if len(supports) == 1:
            weights, guards = sparsemax_guided(self.q, scores, next(iter(supports)), tag=tag)
        else:
            kept = [frozenset(s) for s in supports]
            inside = frozenset.intersection(*kept) if kept else frozenset()
            outside = frozenset(range(len(scores))).difference(*kept) if kept else frozenset()
            weights, guards = threshold_full(self.q, scores, Fraction(1), tag=tag,
                                             inside=inside, outside=outside)
        self.guards += guards
        return weights

    def dot(self, a: Value, b: Value, name: str) -> Affine:
        """a·b, split over the combinations of the factor with fewer of them."""
        tables = sorted((v for v in (a, b) if isinstance(v, Table)), key=lambda v: len(v.values))
        if not tables:
            raise TooWide(f"{name}: a query and a key both read more than {TABLE_LIMIT} token "
                          "combinations")
        if len(tables) == 2:
            joint = frozenset(a.positions) | frozenset(b.positions)
            if self.combinations(joint) <= TABLE_LIMIT:  # a table of exact scores
                return self.terms(self._joint_dot(a, b, joint))[0]
        small = tables[0]
        other = self.terms(b if small is a else a)
        return self.cases(small, name, lambda vec: Affine.dot(vec, other))

    def _joint_dot(self, a: Table, b: Table, joint: frozenset[int]) -> Table:
        ordered = tuple(sorted(joint))
        values = {}
        for combo in itertools.product(*(self.tokens[p] for p in ordered)):
            at = dict(zip(ordered, combo, strict=True))
            va = a.values[tuple(at[p] for p in a.positions)]
            vb = b.values[tuple(at[p] for p in b.positions)]
            values[combo] = [sum((x * y for x, y in zip(va, vb, strict=True)), Fraction(0))]
        return Table(ordered, values)

    def weigh(self, w: Affine, value: Value, name: str) -> Vec:
        """w · value for a weight w and a value vector, split over the value's combinations."""
        if not isinstance(value, Table):
            raise TooWide(f"{name}: an attention weight multiplies a value that reads more "
                          f"than {TABLE_LIMIT} token combinations")
        if not value.positions:
            (only,) = value.values.values()
            return [w * c for c in only]
        shares = [(self.q.define(f"{name}.c{k}", ite(self.selector(value.positions, combo),
                                                     w, 0)), vec)
                  for k, (combo, vec) in enumerate(value.values.items())]
        return [Affine.combine((vec[i], share) for share, vec in shares)
                for i in range(len(shares[0][1]))]

    def attn_out(self, layer: int, heads: list[tuple[str, int]], t: int) -> Vec:
        """W_o concat(retained heads, zeros) + b_o at t."""
        def build() -> Vec:
            o, dh = self.m.layers[layer]["o"], self.m.cfg.head_dim
            cols = [c for _, h in heads for c in range(h * dh, (h + 1) * dh)]
            results = [a for node, h in heads for a in self.head(node, h, t)]
            return self.vector(f"{self.tag}.{t}a{layer}.o", [
                Affine.row([row[c] for c in cols], o.scale, results, bias)
                for row, bias in zip(o.weight, o.bias, strict=True)])
        return self.memo(("o", layer, tuple(heads), t), build)



def _band_agreement(records: Iterable[BandNormBranch]) -> dict:
    """`band_norm_full`'s settled parts: what every hinted branch agrees on (nothing
    without hints): the sign of a centred coordinate, and per side whether it projects,
    whether it lifts and, where it always projects, the support's sure members."""
    records = list(records)
    if not records:
        return {}
    d = len(records[0].signs)
    fixed = {i: s for i in range(d)
             if (s := records[0].signs[i]) != 0 and all(r.signs[i] == s for r in records)}

    def agreed(values: list[bool]) -> bool | None:
        return values[0] if len(set(values)) == 1 else None

    settled = {}
    for name in ("p", "n"):
        sides = [getattr(r, name) for r in records]
        projected = agreed([b.projected for b in sides])
        inside = outside = frozenset()
        if projected:
            supports = [frozenset(b.support) for b in sides]
            inside = frozenset.intersection(*supports)
            outside = frozenset(range(d)) - frozenset().union(*supports)
        settled[name] = Settled(projected, agreed([b.lifted for b in sides]), inside, outside)
    return {"fixed_signs": fixed, "settled": settled}
