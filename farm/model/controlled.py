"""The controlled forward: a circuit (SPEC §3) run batched in torch.

`farm.model.exact` gives a circuit its exact meaning one prompt at a time; circuit
discovery needs the same function over the whole domain in one pass per tried
edge. This module only routes values along the circuit's edges: every operator
(norms, attention heads, W_o, MLP, lm_head) is the model's own submodule, so the
two can never drift apart. Tests hold it to `ExactModel.run` on every row.

Ablation: a removed edge contributes 0 (zero ablation, the verified semantics) or
the source node's mean output over the domain, per position (mean ablation).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

import torch

from farm.errors import FarmError
from farm.model.circuit import Circuit, graph_edges, parse_node, require_fits
from farm.model.gpt import VerifiableGPT

Ablation = Literal["zero", "mean"]
ABLATIONS: tuple[Ablation, ...] = ("zero", "mean")
HeadKey = tuple[int, int]  # (layer, head)


@dataclass(frozen=True)
class NodeOutputs:
    """What each node emits: emb/mlp outputs [batch, pos, d], head results [batch, pos, d_head]."""

    vectors: dict[str, torch.Tensor]
    heads: dict[HeadKey, torch.Tensor]

    def mean(self) -> NodeOutputs:
        """Per-position means over the batch: the values mean ablation substitutes."""
        return NodeOutputs({k: v.mean(0) for k, v in self.vectors.items()},
                           {k: v.mean(0) for k, v in self.heads.items()})


@dataclass(frozen=True)
class ControlledOutput:
    logits: torch.Tensor  # [batch, pos, vocab]
    final_residual: torch.Tensor  # [batch, pos, d]: the input of the final norm, r_E(x)
    outputs: NodeOutputs


def check_compatible(model: VerifiableGPT, circuit: Circuit) -> None:
    """Refuse a circuit drawn for a different graph than the model's."""
    require_fits(circuit, model.cfg.n_layers, model.cfg.n_heads,
                 attention_only=model.cfg.attention_only)


def controlled_forward(model: VerifiableGPT, circuit: Circuit, tokens: torch.Tensor,
                       means: NodeOutputs | None = None) -> ControlledOutput:
    """Run `circuit` on token ids [batch, pos]; with `means`, removed edges carry the mean.

    Computation follows the model's dtype and device (use a float64 copy to compare
    with exact arithmetic).
    """
    check_compatible(model, circuit)
    if tokens.dim() != 2 or tokens.shape[1] > model.cfg.seq_len:
        raise FarmError(f"tokens must be [batch, ≤{model.cfg.seq_len}], got "
                        f"{tuple(tokens.shape)}")
    return _Router(model, circuit, means).run(tokens)


class FlipScreen:
    """Where removing edges from a circuit likely changes its decision, judged in float64.

    Edge necessity needs one input whose exact decision changes; evaluating
    ablated circuits exactly, input after input, is its planning's main cost.
    One batched float pass per ablated circuit puts the inputs it flips first
    (clearest flip first); the exact evaluator still decides every candidate,
    so the screen only orders the search.
    """

    def __init__(self, model: VerifiableGPT, circuit: Circuit,
                 prompts: Sequence[Sequence[int]], candidates: tuple[int, int]) -> None:
        self.model = copy.deepcopy(model).to(torch.float64)
        self.circuit = circuit
        self.tokens = torch.tensor([list(p) for p in prompts])
        self.candidates = candidates

    @functools.cached_property
    def decisions(self) -> torch.Tensor:
        """The unablated circuit's float decisions, on first use (a run that plans no
        edge necessity never asks)."""
        return torch.sign(self._margins(self.circuit))

    def _margins(self, circuit: Circuit) -> torch.Tensor:
        with torch.no_grad():
            logits = controlled_forward(self.model, circuit, self.tokens).logits[:, -1]
        return logits[:, self.candidates[0]] - logits[:, self.candidates[1]]

    def __call__(self, ablated: Circuit) -> list[int]:
        """Indices of the prompts whose float decision `ablated` changes, clearest first."""
        margins = self._margins(ablated)
        flipped = torch.nonzero(torch.sign(margins) != self.decisions).flatten()
        return sorted(flipped.tolist(), key=lambda i: -abs(float(margins[i])))


def domain_means(model: VerifiableGPT, tokens: torch.Tensor) -> NodeOutputs:
    """Mean node outputs of the full model over `tokens`, per position (for mean ablation)."""
    # a block node records every head's result
    full = Circuit.full(model.cfg.n_layers, attention_only=model.cfg.attention_only)
    with torch.no_grad():
        return controlled_forward(model, full, tokens).outputs.mean()


class _Router:
    """Sums retained parents into each node's input, in topological order."""

    def __init__(self, model: VerifiableGPT, circuit: Circuit, means: NodeOutputs | None):
        self.model, self.circuit, self.means = model, circuit, means
        self.n_heads = model.cfg.n_heads
        retained = circuit.edges
        # every possible parent of each node, split into kept and ablated
        self.parents: dict[str, list[tuple[str, bool]]] = {n: [] for n in circuit.nodes}
        for source, target in graph_edges(circuit.nodes):
            self.parents[target].append((source, (source, target) in retained))

    def run(self, tokens: torch.Tensor) -> ControlledOutput:
        m = self.model
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        out = NodeOutputs({"emb": m.wte(tokens) + m.wpe(pos)}, {})
        for layer, block in enumerate(m.blocks):
            for node in self.circuit.nodes:
                ref = parse_node(node)
                if ref.kind != "attn" or ref.layer != layer:
                    continue
                heads = block.attn.heads(block.norm_attn(self.node_input(node, out)))
                for h in ref.heads(self.n_heads):
                    out.heads[layer, h] = heads[:, :, h]
            if self.circuit.attention_only:
                continue
            node = f"mlp_{layer}"
            out.vectors[node] = block.mlp(block.norm_mlp(self.node_input(node, out)))
        residual = self.node_input("logits", out)
        return ControlledOutput(m.lm_head(m.norm_final(residual)), residual, out)

    def node_input(self, node: str, out: NodeOutputs) -> torch.Tensor:
        """Σ retained parents (+ means of ablated ones); a layer's heads share one W_o.

        Terms are added in parent order, as the model's residual stream adds them, so
        the full circuit reproduces the model's float rounding too.
        """
        emb = out.vectors["emb"]
        total = torch.zeros_like(emb)
        for group, parents in groupby(self.parents[node], key=lambda p: _term(p[0])):
            sources = [(parse_node(name), out if kept else self.means) for name, kept in parents
                       if kept or self.means is not None]
            if not sources:
                continue
            if isinstance(group, str):
                total = total + sources[0][1].vectors[group]
                continue
            slots: list[torch.Tensor] = [emb.new_zeros(emb.shape[:2] + (self.model.cfg.head_dim,))
                                         for _ in range(self.n_heads)]
            for ref, source in sources:
                for h in ref.heads(self.n_heads):
                    slots[h] = source.heads[group, h].expand_as(slots[h])
            total = total + self.model.blocks[group].attn.o(torch.cat(slots, dim=-1))
        return total


def _term(node: str) -> str | int:
    """Parents that form one residual term: an attention layer's heads, or a node by itself."""
    ref = parse_node(node)
    return ref.layer if ref.kind == "attn" else node
