"""Exact-rational semantics of the verifiable GPT and of its circuits.

This is the ground truth every other component is held to: each stored float32
weight is taken at its exact binary value, config constants as written (22/5),
and every operation is done in `Fraction`s. A run also records which branch
every piecewise operator took (the *trace*): guided SMT encodings and the
circuit tracer read it.

Two things make it fast enough to replay the whole domain in about a second:
matrix products run on Python integers over a common denominator (one gcd per
output, not one per product), and positions are memoised by causal prefix
(position t depends only on tokens 0..t, and the 256 prompts share prefixes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from operator import mul
from typing import NamedTuple

import numpy as np

from farm.errors import FarmError
from farm.model.circuit import Circuit, parse_node, require_fits
from farm.model.gpt import LEAKY_SLOPE, GPTConfig

Vector = list[Fraction]
ZERO = Fraction(0)


# --------------------------------------------------------------------------- linear algebra


def exact(value: float) -> Fraction:
    """The exact binary value of a float (never its decimal print)."""
    return Fraction(float(value))


def _integer_form(vec: Sequence[Fraction]) -> tuple[list[int], int]:
    """(numerators, D) with vec[i] = numerators[i] / D and D the lcm of the denominators."""
    den = math.lcm(*(f.denominator for f in vec))
    return [f.numerator * (den // f.denominator) for f in vec], den


def vector_sum(vectors: Sequence[Sequence[Fraction]], d: int) -> Vector:
    """Sum of vectors over one common denominator: one gcd per coordinate, not one per add."""
    if not vectors:
        return [ZERO] * d
    den = math.lcm(*(f.denominator for v in vectors for f in v))
    return [Fraction(sum(f.numerator * (den // f.denominator) for f in column), den)
            for column in zip(*vectors, strict=True)]


def _weighted_sum(weights: Sequence[Fraction], vectors: Sequence[tuple[list[int], int]],
                  d: int) -> Vector:
    """Σ_j w_j v_j over one common denominator (each v_j in `_integer_form`): one gcd
    per coordinate, not two per term."""
    if not weights:
        return [ZERO] * d
    wn, wd = _integer_form(weights)
    den = math.lcm(*(vd for _, vd in vectors))
    scaled = [(w * (den // vd), vn) for w, (vn, vd) in zip(wn, vectors, strict=True)]
    return [Fraction(sum(f * vn[i] for f, vn in scaled), wd * den) for i in range(d)]


class ExactAffine:
    """y = W x + b over exact float32 values, W stored as integers over one power of two."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
        rows = [[exact(w) for w in row] for row in np.asarray(weight, dtype=np.float32)]
        b = [exact(v) for v in (np.asarray(bias, dtype=np.float32) if bias is not None
                                else np.zeros(len(rows), dtype=np.float32))]
        self.scale = math.lcm(*(f.denominator for row in rows for f in row),
                              *(f.denominator for f in b))
        self.weight = [[int(f * self.scale) for f in row] for row in rows]
        self.bias = [int(f * self.scale) for f in b]

    def __call__(self, x: Sequence[Fraction], rows: range | None = None) -> Vector:
        """W x + b, optionally only for a slice of output rows (one head's q, k or v)."""
        xn, xd = _integer_form(x)
        den = xd * self.scale
        rows = rows if rows is not None else range(len(self.weight))
        return [Fraction(sum(map(mul, self.weight[r], xn)) + self.bias[r] * xd, den)
                for r in rows]

    def covector(self, x: Sequence[Fraction], rows: range) -> tuple[Vector, Fraction]:
        """x · (W n + b)[rows] as a linear form in n: its coefficients and constant
        (a query's scores against keys computed from n)."""
        xn, xd = _integer_form(x)
        den = xd * self.scale
        ws = [self.weight[r] for r in rows]
        coeffs = [Fraction(sum(a * w[c] for a, w in zip(xn, ws, strict=True)), den)
                  for c in range(len(self.weight[0]))]
        return coeffs, Fraction(sum(a * self.bias[r] for a, r in zip(xn, rows, strict=True)),
                                den)

    def columns(self, x: Sequence[Fraction], cols: range) -> Vector:
        """W[:, cols] x + b: the output projection fed only some heads (zeros elsewhere)."""
        xn, xd = _integer_form(x)
        den = xd * self.scale
        return [Fraction(sum(map(mul, row[cols.start:cols.stop], xn)) + b * xd, den)
                for row, b in zip(self.weight, self.bias, strict=True)]


# --------------------------------------------------------------------------- piecewise operators


class SideBranch(NamedTuple):
    """Which way one side (p or n) of BandNorm went."""

    projected: bool  # Σs > half_high: projected onto the simplex-like band
    rho: int  # projection index (0-based) when projected, else -1
    lifted: bool  # deficit > 0: raised to half_low
    fallback: bool  # no coordinate was active: the even/odd fallback mask was used
    support: tuple[int, ...]  # coordinates receiving the lift (active or fallback)


class BandNormBranch(NamedTuple):
    signs: tuple[int, ...]  # sign of each centred coordinate c_i: +1, 0 or -1
    p: SideBranch
    n: SideBranch


def _band_side(s: list[int], den: int, fallback: tuple[int, ...], half_low: Fraction,
               half_high: Fraction) -> tuple[list[int], int, SideBranch]:
    """One side of BandNorm (SPEC §2 step 3) on s/den, in integers over a common
    denominator: each step that divides (by the projection's k, by half_high's and
    half_low's denominators, by the lift's support) multiplies the denominator up
    instead, so a side costs integer products, not a gcd per operation."""
    d = len(s)
    hn, hd = half_high.numerator, half_high.denominator
    projected = sum(s) * hd > hn * den
    rho = -1
    if projected:  # cand_k = (cumsum_k / den - half_high) / k, compared multiplied through
        ordered = sorted(s, reverse=True)
        above, total, cumsums = 0, 0, []
        for k, v in enumerate(ordered, start=1):
            total += v
            cumsums.append(total)
            above += v * k * hd > total * hd - hn * den
        rho = min(max(above - 1, 0), d - 1)
        k = rho + 1
        tau = cumsums[rho] * hd - hn * den  # tau / (k · hd · den) is SPEC's threshold
        s = [v * k * hd - tau if v * k * hd > tau else 0 for v in s]
        den *= k * hd
    ln, ld = half_low.numerator, half_low.denominator
    deficit = ln * den - sum(s) * ld  # over ld · den
    active = tuple(i for i, v in enumerate(s) if v > 0)
    support = active or fallback
    if deficit > 0:
        m = len(support)
        s = [v * ld * m for v in s]
        for i in support:
            s[i] += deficit
        den *= ld * m
    return s, den, SideBranch(projected, rho, deficit > 0, not active, support)


def band_norm(x: Sequence[Fraction], gamma: Vector, beta: Vector, half_low: Fraction,
              half_high: Fraction) -> tuple[Vector, BandNormBranch]:
    """Signed L1 BandNorm (SPEC §2), with the branch it took."""
    d = len(x)
    xn, xd = _integer_form(x)
    total = sum(xn)
    c = [d * v - total for v in xn]  # centred, over d · xd
    even, odd = tuple(range(0, d, 2)), tuple(range(1, d, 2))
    p, pd, pb = _band_side([v if v > 0 else 0 for v in c], d * xd, even, half_low, half_high)
    n, nd, nb = _band_side([-v if v < 0 else 0 for v in c], d * xd, odd, half_low, half_high)
    zd = math.lcm(pd, nd)
    z = [a * (zd // pd) - b * (zd // nd) for a, b in zip(p, n, strict=True)]
    zt = sum(z)
    gn, gd = _integer_form(gamma)
    bn, bd = _integer_form(beta)
    den = gd * bd * d * zd  # out_i = g_i (d z_i - Σz) / (d zd) + b_i
    out = [Fraction(g * (d * v - zt) * bd + b * gd * d * zd, den)
           for g, v, b in zip(gn, z, bn, strict=True)]
    signs = tuple((v > 0) - (v < 0) for v in c)
    return out, BandNormBranch(signs, pb, nb)


def sparsemax(z: Sequence[Fraction]) -> tuple[Vector, tuple[int, ...]]:
    """Sparsemax and its support (the indices with positive weight)."""
    ordered = sorted(z, reverse=True)
    total, k, k_total = ZERO, 0, ZERO
    for j, v in enumerate(ordered, start=1):
        total += v
        if 1 + j * v > total:
            k, k_total = j, total
    tau = (k_total - 1) / k
    out = [v - tau if v > tau else ZERO for v in z]
    return out, tuple(i for i, v in enumerate(out) if v > 0)


def leaky_relu(x: Sequence[Fraction]) -> tuple[Vector, tuple[bool, ...]]:
    """LeakyReLU (slope 1/100) and the sign pattern (True where x ≥ 0)."""
    signs = tuple(v >= 0 for v in x)
    return [v if s else v * LEAKY_SLOPE for v, s in zip(x, signs, strict=True)], signs


# --------------------------------------------------------------------------- the model


@dataclass
class Position:
    """Everything the exact run knows about one position of one causal prefix."""

    outputs: dict[str, Vector]  # emb and mlp nodes -> output at this position
    heads: dict[tuple[int, int], Vector] = field(default_factory=dict)  # (layer, head) result
    queries: dict[tuple[int, int], Vector] = field(default_factory=dict)  # per head
    keys: dict[tuple[int, int], Vector] = field(default_factory=dict)  # before W_o, per head
    values: dict[tuple[int, int], Vector] = field(default_factory=dict)
    patterns: dict[tuple[int, int], Vector] = field(default_factory=dict)  # sparsemax weights
    branches: dict[str, tuple] = field(default_factory=dict)  # site -> branch record
    residuals: dict[str, Vector] = field(default_factory=dict)  # node -> its input
    forms: dict[tuple, tuple[list[int], int]] = field(default_factory=dict, repr=False,
                                                      compare=False)  # see `form`

    def form(self, what: str, layer: int, head: int) -> tuple[list[int], int]:
        """A head's key or value in `_integer_form`, computed once: every later position
        of the prompt reads it."""
        key = (what, layer, head)
        if (hit := self.forms.get(key)) is None:
            hit = self.forms[key] = _integer_form(getattr(self, what)[layer, head])
        return hit


@dataclass(frozen=True)
class RowResult:
    prompt: tuple[int, ...]
    logits: Vector  # final-position logits
    final_residual: Vector  # r_E(x): the input of the final norm
    trace: list[dict[str, tuple]]  # per position: site -> branch record
    positions: list[Position]  # every exact intermediate value, per position

    def margin(self, target: int, alternate: int) -> Fraction:
        return self.logits[target] - self.logits[alternate]

    def best_margin(self, target: int, candidates: Sequence[int]) -> Fraction:
        """logit[target] − the best other candidate's logit (≤ 0: decided wrongly)."""
        return self.logits[target] - max(self.logits[c] for c in candidates if c != target)


class ExactModel:
    """The verifiable GPT (or one of its circuits) in exact rational arithmetic."""

    def __init__(self, config: GPTConfig, weights: Mapping[str, np.ndarray]):
        if not config.is_piecewise_linear:
            raise FarmError("exact semantics needs norm_variant signed_l1_band_norm or none, "
                            "attn_variant sparsemax and activation leaky_relu; got "
                            f"{config.norm_variant}/{config.attn_variant}/{config.activation}")
        self.cfg = config
        self.scale = exact(config.attn_scale)
        self.wte = np.asarray(weights["wte.weight"], dtype=np.float32)
        self.wpe = np.asarray(weights["wpe.weight"], dtype=np.float32)
        self.layers = []
        for i in range(config.n_layers):
            p = f"blocks.{i}."
            modules = [("q", "attn.q"), ("k", "attn.k"), ("v", "attn.v"), ("o", "attn.o")]
            norms = ["norm_attn"]
            if not config.attention_only:
                modules += [("up", "mlp.up"), ("down", "mlp.down")]
                norms += ["norm_mlp"]
            self.layers.append({
                name: ExactAffine(weights[f"{p}{mod}.weight"], weights.get(f"{p}{mod}.bias"))
                for name, mod in modules
            } | {norm: self._norm_params(weights, f"{p}{norm}") for norm in norms})
        self.norm_final = self._norm_params(weights, "norm_final")
        self.lm_head = ExactAffine(weights["lm_head.weight"], weights.get("lm_head.bias"))

    def _norm_params(self, weights: Mapping[str, np.ndarray], prefix: str):
        if self.cfg.norm_variant == "none":
            return None
        return ([exact(v) for v in weights[f"{prefix}.norm.weight"]],
                [exact(v) for v in weights[f"{prefix}.norm.bias"]])

    def _norm(self, params, x: Vector, site: str, branches: dict[str, tuple]) -> Vector:
        if params is None:
            return list(x)
        out, branch = band_norm(x, *params, self.cfg.half_low, self.cfg.half_high)
        branches[site] = branch
        return out

    def run(self, prompts: Iterable[Sequence[int]], circuit: Circuit | None = None,
            ) -> list[RowResult]:
        """Exact final-position logits (and traces) for each prompt, under a circuit if given.

        Only nodes with a retained path to the logits are evaluated (and traced).
        """
        runs = self.runs(circuit)
        return [runs.row(p) for p in prompts]

    def runs(self, circuit: Circuit | None = None) -> CircuitRun:
        """The circuit's exact run of any prompt, on demand (`CircuitRun.row`)."""
        cfg = self.cfg
        circuit = circuit or Circuit.full(cfg.n_layers, attention_only=cfg.attention_only)
        require_fits(circuit, cfg.n_layers, cfg.n_heads, attention_only=cfg.attention_only)
        return CircuitRun(self, circuit)


class CircuitRun:
    """One circuit's evaluation, memoised by causal prefix across prompts."""

    def __init__(self, model: ExactModel, circuit: Circuit):
        self.m, self.circuit = model, circuit
        self.parents = {node: circuit.parents(node) for node in circuit.nodes}
        self.live = circuit.feeding_logits()  # the rest cannot change the logits: skipped
        self.memo: dict[tuple[int, ...], Position] = {}

    def row(self, prompt: Sequence[int]) -> RowResult:
        prompt = tuple(int(t) for t in prompt)
        if not 1 <= len(prompt) <= self.m.cfg.seq_len:
            raise FarmError(f"prompt {prompt} must have 1..{self.m.cfg.seq_len} tokens")
        if not all(0 <= t < self.m.cfg.vocab_size for t in prompt):
            raise FarmError(f"prompt {prompt} has a token outside the vocabulary")
        positions = [self.position(prompt[: t + 1]) for t in range(len(prompt))]
        last = positions[-1]
        branches: dict[str, tuple] = {}
        residual = self.node_input("logits", last)
        normed = self.m._norm(self.m.norm_final, residual, "logits.norm", branches)
        logits = self.m.lm_head(normed)
        trace = [dict(p.branches) for p in positions]
        trace[-1].update(branches)
        return RowResult(prompt, logits, residual, trace, positions)

    def node_input(self, node: str, pos: Position) -> Vector:
        """Sum of the retained parents' outputs; a layer's retained heads share one W_o."""
        terms: list[Vector] = []
        heads_by_layer: dict[int, list[int]] = {}
        for parent in self.parents[node]:
            ref = parse_node(parent)
            if ref.kind == "attn":
                heads = ref.heads(self.m.cfg.n_heads)
                heads_by_layer.setdefault(ref.layer, []).extend(heads)
            else:
                terms.append(pos.outputs[parent])
        terms += [self.attn_out(layer, heads, pos) for layer, heads in heads_by_layer.items()]
        return vector_sum(terms, self.m.cfg.d_model)

    def attn_out(self, layer: int, heads: list[int], pos: Position) -> Vector:
        """W_o concat(retained heads, zeros) + b_o at one position."""
        dh = self.m.cfg.head_dim
        concat = [ZERO] * self.m.cfg.d_model
        for h in heads:
            concat[h * dh:(h + 1) * dh] = pos.heads[layer, h]
        return self.m.layers[layer]["o"](concat)

    def scores(self, q: Vector, history: list[Position], layer: int, h: int) -> Vector:
        """q·k_j / s against each position's key, one gcd per score."""
        qn, qd = _integer_form(q)
        sn, sd = self.m.scale.numerator, self.m.scale.denominator
        return [Fraction(sum(map(mul, qn, kn)) * sd, qd * kd * sn)
                for kn, kd in (p.form("keys", layer, h) for p in history)]

    def position(self, prefix: tuple[int, ...]) -> Position:
        if (hit := self.memo.get(prefix)) is not None:
            return hit
        cfg, t = self.m.cfg, len(prefix) - 1
        earlier = [self.position(prefix[: s + 1]) for s in range(t)]
        emb = [exact(a) + exact(b) for a, b in zip(self.m.wte[prefix[-1]], self.m.wpe[t],
                                                    strict=True)]
        pos = Position(outputs={"emb": emb})
        dh = cfg.head_dim
        for layer, params in enumerate(self.m.layers):
            for node in self.circuit.nodes:
                ref = parse_node(node)
                if ref.kind != "attn" or ref.layer != layer or node not in self.live:
                    continue
                x = pos.residuals[node] = self.node_input(node, pos)
                n = self.m._norm(params["norm_attn"], x, f"{node}.norm", pos.branches)
                for h in ref.heads(cfg.n_heads):
                    rows = range(h * dh, (h + 1) * dh)
                    q = pos.queries[layer, h] = params["q"](n, rows)
                    pos.keys[layer, h] = params["k"](n, rows)
                    pos.values[layer, h] = params["v"](n, rows)
                    history = [*earlier, pos]
                    weights, support = sparsemax(self.scores(q, history, layer, h))
                    pos.branches[f"{node}.head{h}.sparsemax"] = support
                    pos.patterns[layer, h] = weights
                    pos.heads[layer, h] = _weighted_sum(
                        [weights[j] for j in support],
                        [history[j].form("values", layer, h) for j in support], dh)
            node = f"mlp_{layer}"
            if node not in self.live:
                continue
            x = pos.residuals[node] = self.node_input(node, pos)
            n = self.m._norm(params["norm_mlp"], x, f"{node}.norm", pos.branches)
            hidden, signs = leaky_relu(params["up"](n))
            pos.branches[f"{node}.act"] = signs
            pos.outputs[node] = params["down"](hidden)
        self.memo[prefix] = pos
        return pos
