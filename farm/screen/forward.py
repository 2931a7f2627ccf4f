"""The screen: a batched interval forward pass of a model or circuit over concrete prompts.

It routes values along a circuit's retained edges exactly as `farm.model.exact`
does (zero ablation; a layer's retained heads share one W_o and b_o; only nodes
with a retained path to the logits are evaluated) and returns, for every prompt,
an interval containing the exact margin logit[target] − max over the other
candidates. Positions are evaluated once per distinct causal prefix in the batch
(SCALE principle 2): position t of a prompt depends only on tokens 0..t, and
consecutive prompts of a product domain share most of their prefixes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from farm.errors import FarmError
from farm.model.circuit import Circuit, graph_edges, parse_node
from farm.model.gpt import LEAKY_SLOPE, GPTConfig
from farm.screen.ball import Pair, radius_above, robust
from farm.screen.bandnorm import band_norm
from farm.screen.interval import (
    U2,
    Affine,
    Iv,
    Operand,
    add,
    div,
    dot,
    leaky_relu,
    sparsemax,
    up,
)


@dataclass(frozen=True)
class ScreenResult:
    """Per prompt: lo ≤ exact margin ≤ hi (lo = −inf, hi = inf where not decisive), and
    with an ε, `robust`: proved to decide the target on the whole ε-ball of r_E(x)."""

    lo: np.ndarray
    hi: np.ndarray
    robust: np.ndarray | None = None  # None: no ε was asked for

    @property
    def correct(self) -> np.ndarray:
        """Decided correctly: the exact margin is certainly positive."""
        return self.lo > 0

    @property
    def wrong(self) -> np.ndarray:
        """Decided wrongly: the margin is certainly ≤ 0 (a tie fails too, SPEC §1)."""
        return self.hi <= 0

    @property
    def decisive(self) -> np.ndarray:
        return self.correct | self.wrong


@dataclass(frozen=True)
class Prefixes:
    """The distinct causal prefixes of a batch: at position t, `ids[t][i]` is prompt i's
    prefix among `tokens[t]` (each prefix's last token), and `anc[t][j]` maps those
    prefixes to their ancestors at position j ≤ t."""

    ids: list[np.ndarray]
    tokens: list[np.ndarray]
    anc: list[list[np.ndarray]]

    @classmethod
    def of(cls, prompts: np.ndarray, vocab: int) -> Prefixes:
        ids, tokens, anc = [], [], []
        parent_ids = np.zeros(len(prompts), dtype=np.int64)
        for t in range(prompts.shape[1]):
            codes, inverse = np.unique(parent_ids * vocab + prompts[:, t], return_inverse=True)
            parent = codes // vocab
            ids.append(inverse.reshape(-1))
            tokens.append(codes % vocab)
            anc.append([a[parent] for a in anc[-1]] + [np.arange(len(codes))] if anc
                       else [np.arange(len(codes))])
            parent_ids = ids[-1]
        return cls(ids, tokens, anc)


class Screen:
    """A circuit's sound interval evaluator (the full model without a circuit)."""

    def __init__(self, config: GPTConfig, weights: Mapping[str, np.ndarray],
                 circuit: Circuit | None = None):
        self._require_variant(config)
        circuit = circuit or Circuit.full(config.n_layers, attention_only=config.attention_only)
        if circuit.n_layers != config.n_layers or (
                circuit.granularity == "head" and circuit.n_heads != config.n_heads) or (
                circuit.attention_only != config.attention_only):
            raise FarmError("the circuit's graph is not the model's")
        self.cfg, self.circuit = config, circuit

        def exact(name: str) -> np.ndarray:  # a float32 weight at its exact value
            return np.asarray(weights[name], dtype=np.float32).astype(np.float64)

        def bias(name: str) -> np.ndarray | None:  # absent: a model without biases
            return exact(name) if name in weights else None

        self.wte, self.wpe = exact("wte.weight"), exact("wpe.weight")
        modules = [("q", "attn.q"), ("k", "attn.k"), ("v", "attn.v"), ("o", "attn.o")]
        norms = ["norm_attn"]
        if not config.attention_only:
            modules += [("up", "mlp.up"), ("down", "mlp.down")]
            norms += ["norm_mlp"]
        self.layers = []
        for i in range(config.n_layers):
            p = f"blocks.{i}."
            self.layers.append({
                name: Affine.of(exact(f"{p}{mod}.weight").T, bias(f"{p}{mod}.bias"))
                for name, mod in modules})
        self.norms = {}
        if config.norm_variant != "none":
            for key in [f"blocks.{i}.{n}" for i in range(config.n_layers)
                        for n in norms] + ["norm_final"]:
                self.norms[key] = (exact(f"{key}.norm.weight"), exact(f"{key}.norm.bias"))
        self.half = (Iv.of_rational(float(config.half_low)),
                     Iv.of_rational(float(config.half_high)))
        self.lm_head = exact("lm_head.weight")
        self.lm_bias = (exact("lm_head.bias") if "lm_head.bias" in weights
                        else np.zeros(config.vocab_size))
        self.live = circuit.feeding_logits()
        self.parents = {n: circuit.parents(n) for n in circuit.nodes}
        self.all_positions = self._needs_all_positions()
        self._qkv: dict[tuple[int, int, int], tuple[Affine, Affine]] = {}

    def _require_variant(self, config: GPTConfig) -> None:
        if not config.is_piecewise_linear:
            raise FarmError("the screen needs the exact-verifiable model (BandNorm or none, "
                            "sparsemax, leaky_relu); the standard one has its own "
                            "(farm.screen.standard)")

    def _head_maps(self, layer: int, heads: Sequence[int]) -> tuple[Affine, Affine]:
        """For the contiguous heads of one attention node: the map onto their keys and
        values side by side, and onto their queries, keys and values side by side."""
        dh = self.cfg.head_dim
        key = (layer, heads[0], heads[-1] + 1)
        if key not in self._qkv:
            cols = slice(heads[0] * dh, (heads[-1] + 1) * dh)
            q, k, v = (self.layers[layer][n].columns(cols) for n in ("q", "k", "v"))
            self._qkv[key] = _side_by_side(k, v), _side_by_side(q, k, v)
        return self._qkv[key]

    def _needs_all_positions(self) -> set[str]:
        """Nodes whose output is read at every position: those feeding an attention node
        (its keys and values), directly or through an MLP; the rest only at the last."""
        children: dict[str, list[str]] = {n: [] for n in self.circuit.nodes}
        for s, t in graph_edges(self.circuit.nodes):
            if (s, t) in self.circuit.edges and t in self.live | {"logits"}:
                children[s].append(t)
        found: set[str] = set()
        for node in reversed(self.circuit.nodes):
            if any(parse_node(c).kind == "attn" or c in found for c in children[node]):
                found.add(node)
        return found

    # ------------------------------------------------------------------ the forward pass

    def _norm(self, key: str, x: Iv, ok: np.ndarray) -> Iv:
        if key not in self.norms:
            return x
        out, branch = band_norm(x, *self.norms[key], *self.half)
        ok &= branch.certain
        return out

    def _input(self, node: str, t: int, outputs: dict, heads: dict, rows: int) -> Iv:
        """Σ retained parents at position t; a layer's retained heads share one W_o."""
        d = self.cfg.d_model
        terms: list[Iv] = []
        by_layer: dict[int, list[int]] = {}
        for parent in self.parents[node]:
            ref = parse_node(parent)
            if ref.kind == "attn":
                by_layer.setdefault(ref.layer, []).extend(ref.heads(self.cfg.n_heads))
            else:
                terms.append(outputs[parent][t])
        dh = self.cfg.head_dim
        for layer, hs in by_layer.items():
            concat = Iv.point(np.zeros((rows, d)))
            for h in hs:
                concat.m[:, h * dh:(h + 1) * dh] = heads[layer, h][t].m
                concat.r[:, h * dh:(h + 1) * dh] = heads[layer, h][t].r
            terms.append(self.layers[layer]["o"](concat))
        if not terms:  # no retained parent: zero ablation feeds an exact zero
            return Iv.point(np.zeros((rows, d)))
        acc = terms[0]
        for term in terms[1:]:
            acc = add(acc, term)
        return acc

    def _emb(self, tokens: np.ndarray, t: int) -> Iv:
        m = self.wte[tokens] + self.wpe[t]
        return Iv(m, up(U2 * np.abs(m)))

    def run(self, prompts: np.ndarray, targets: np.ndarray, candidates: Sequence[int],
            epsilon: Fraction | None = None) -> ScreenResult:
        """Margin intervals for prompts [n, seq_len] (all one length) and their targets;
        with `epsilon`, also which prompts are proved robust on the ε-ball (SPEC §4: the
        final norm and lm_head on r_E(x) + η decide the target for all ‖η‖∞ ≤ ε)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        targets = np.asarray(targets, dtype=np.int64)
        cfg = self.cfg
        if prompts.ndim != 2 or not 1 <= prompts.shape[1] <= cfg.seq_len:
            raise FarmError(f"prompts must be [n, 1..{cfg.seq_len}], got {prompts.shape}")
        if prompts.size and (prompts.min() < 0 or prompts.max() >= cfg.vocab_size):
            raise FarmError("a prompt has a token outside the vocabulary")
        if not np.isin(targets, candidates).all() or len(set(candidates)) < 2:
            raise FarmError("every target must be one of at least two candidates")
        radius = None if epsilon is None else radius_above(epsilon)
        with np.errstate(all="ignore"):  # inf/nan only ever make an input not decisive
            return self._run(prompts, targets, list(candidates), radius)

    def _run(self, prompts: np.ndarray, targets: np.ndarray, candidates: list[int],
             radius: float | None) -> ScreenResult:
        cfg, T = self.cfg, prompts.shape[1]
        pre = Prefixes.of(prompts, cfg.vocab_size)
        last = T - 1
        sizes = [len(tok) for tok in pre.tokens]
        ok = [np.ones(s, dtype=bool) for s in sizes]
        outputs: dict[str, dict[int, Iv]] = {"emb": {t: self._emb(pre.tokens[t], t)
                                                      for t in range(T)}}
        heads: dict[tuple[int, int], dict[int, Iv]] = {}
        dh = cfg.head_dim
        flat = _flat_ancestors(pre)
        for layer, params in enumerate(self.layers):
            for node in self.circuit.nodes:
                ref = parse_node(node)
                if ref.kind != "attn" or ref.layer != layer or node not in self.live:
                    continue
                hs = list(ref.heads(cfg.n_heads))
                width = len(hs) * dh
                kv_map, qkv_map = self._head_maps(layer, hs)
                wanted = set(range(T) if node in self.all_positions else [last])
                queries: dict[int, Iv] = {}
                kvs: list[Iv] = []
                # a node that reads only the embedding sees one of `vocab` rows at t: its
                # norm and maps are evaluated once per token, its keys and values are
                # gathered from that small table, its queries per prefix's last token
                tokenwise = set(self.parents[node]) == {"emb"}
                vocab = np.arange(cfg.vocab_size)
                for t in range(T):
                    if tokenwise:
                        x, here = self._emb(vocab, t), np.ones(len(vocab), dtype=bool)
                    else:
                        x, here = self._input(node, t, outputs, heads, sizes[t]), ok[t]
                    normed = self._norm(f"blocks.{layer}.norm_attn", x, here)
                    mapped = (qkv_map if t in wanted or tokenwise else kv_map)(normed)
                    if tokenwise:
                        ok[t] &= here[pre.tokens[t]]
                    if t in wanted:
                        queries[t] = mapped[pre.tokens[t], :width] if tokenwise \
                            else mapped[:, :width]
                    kvs.append(mapped[:, -2 * width:])
                # every position's keys and values in one table, each row prepared once
                table = Iv(np.concatenate([kv.m for kv in kvs]),
                           np.concatenate([kv.r for kv in kvs]))
                keys = Operand.of(table[:, :width], dh)
                values = Operand.of(table[:, width:], cfg.seq_len)
                index = _token_rows(pre, cfg.vocab_size) if tokenwise else flat
                for t in sorted(wanted):
                    k, v = keys.rows(index[t]), values.rows(index[t])
                    for i, h in enumerate(hs):
                        cols = slice(i * dh, (i + 1) * dh)
                        heads.setdefault((layer, h), {})[t] = self._attend(
                            queries[t][:, cols], k[..., cols], v[..., cols])
            node = f"mlp_{layer}"
            if node not in self.live:
                continue
            outputs[node] = {}
            for t in range(T) if node in self.all_positions else [last]:
                x = self._input(node, t, outputs, heads, sizes[t])
                n = self._norm(f"blocks.{layer}.norm_mlp", x, ok[t])
                hidden = self._activate(params["up"](n))
                outputs[node][t] = params["down"](hidden)
        residual = self._input("logits", last, outputs, heads, sizes[last])
        final = self._norm("norm_final", residual, ok[last])
        certain = ok[last].copy()
        for t in range(last):  # an uncertain branch anywhere in the prefix
            certain &= ok[t][pre.anc[last][t]]
        i = pre.ids[last]
        result = self._margins(final[i], targets, candidates, certain[i])
        if radius is None:
            return result
        norm = self.norms.get("norm_final")
        proved = robust(residual[i], result.lo, radius, norm and (*norm, *self.half),
                        list(self._differences(targets, candidates)))
        return ScreenResult(result.lo, result.hi, proved & result.correct)

    def _attend(self, q: Iv, k: Operand, v: Operand) -> Iv:
        """Sparsemax attention of the queries q [n, dh] of one position's prefixes over
        their causal prefix: k and v [n, t + 1, dh], each prefix's ancestors' rows."""
        scores = div(dot(q, k, "nd,njd->nj"), np.float64(self.cfg.attn_scale))
        weights = self._pattern(scores, np.ones(scores.m.shape, dtype=bool))
        return dot(weights, v, "nj,njd->nd")

    def _pattern(self, scores: Iv, mask: np.ndarray) -> Iv:
        return sparsemax(scores, mask)

    def _activate(self, x: Iv) -> Iv:
        return leaky_relu(x, LEAKY_SLOPE.denominator)

    def _margins(self, y: Iv, targets: np.ndarray, candidates: list[int],
                 certain: np.ndarray) -> ScreenResult:
        """logit[target] − max over the other candidates, via difference rows of lm_head
        (no cancellation of two large logits in float)."""
        lo = np.full(len(targets), np.inf)
        hi = np.full(len(targets), np.inf)
        for rows, w, b in self._differences(targets, candidates):
            p_lo, p_hi = add(dot(y[rows], w, "nd,d->n", len(w.m)), b).ends()
            lo[rows] = np.minimum(lo[rows], p_lo)
            hi[rows] = np.minimum(hi[rows], p_hi)
        sound = certain & np.isfinite(lo) & np.isfinite(hi)
        return ScreenResult(np.where(sound, lo, -np.inf), np.where(sound, hi, np.inf))


    def _differences(self, targets: np.ndarray, candidates: list[int]) -> Iterator[Pair]:
        """Per target t and other candidate c: the rows whose target is t, and the
        difference of lm_head's rows and biases t − c (each one rounding of two exact
        floats)."""
        for t in candidates:
            rows = targets == t
            if not rows.any():
                continue
            for c in candidates:
                if c != t:
                    w = self.lm_head[t] - self.lm_head[c]
                    b = np.asarray(self.lm_bias[t] - self.lm_bias[c])
                    yield rows, Iv(w, up(U2 * np.abs(w))), Iv(b, up(U2 * np.abs(b)))


def _side_by_side(*maps: Affine) -> Affine:
    """One affine map onto the outputs of several, concatenated (biases all or none)."""
    biases = [m.bias for m in maps]
    bias = None if any(b is None for b in biases) else np.concatenate(biases)
    return Affine.of(np.hstack([m.wt for m in maps]), bias)


def _flat_ancestors(pre: Prefixes) -> list[np.ndarray]:
    """Per position t, [prefixes at t, t + 1]: each prefix's ancestors at positions 0..t
    as rows of a table that stacks every position's prefixes in order."""
    starts = np.cumsum([0] + [len(tok) for tok in pre.tokens])
    return [np.stack([starts[j] + a for j, a in enumerate(anc)], 1) for anc in pre.anc]


def _token_rows(pre: Prefixes, vocab: int) -> list[np.ndarray]:
    """`_flat_ancestors` for a table of `vocab` rows per position: per position t,
    [prefixes at t, t + 1], the row of each ancestor's token at positions 0..t."""
    return [np.stack([j * vocab + pre.tokens[j][a] for j, a in enumerate(anc)], 1)
            for anc in pre.anc]


def screen(config: GPTConfig, weights: Mapping[str, np.ndarray], prompts: np.ndarray,
           targets: np.ndarray, candidates: Sequence[int], circuit: Circuit | None = None,
           epsilon: Fraction | None = None) -> ScreenResult:
    """One-call form of `Screen(...).run(...)`."""
    return Screen(config, weights, circuit).run(prompts, targets, candidates, epsilon)
