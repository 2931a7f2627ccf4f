"""Circuits: a retained edge set over the model's residual graph (SPEC §3).

Nodes are `emb`, per layer the attention node(s) (`attn_l`, or `attn_l_h_k` at
head granularity) and `mlp_l`, then `logits`; an attention-only model (d_mlp = 0)
has no `mlp_l` nodes. Every earlier node feeds every later one; a circuit keeps a
subset of those edges and zero-ablates the rest.
This module is only the graph and its file format; `farm.model.exact` and the torch
controlled forward give it meaning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from farm.atomic import write_text_atomic
from farm.errors import FarmError

Granularity = Literal["block", "head"]
Edge = tuple[str, str]
_HEAD_NODE = re.compile(r"attn_(\d+)_h_(\d+)$")
_BLOCK_NODE = re.compile(r"(attn|mlp)_(\d+)$")


@dataclass(frozen=True)
class NodeRef:
    """What a node name means: its kind, layer and (for head nodes) head."""

    kind: Literal["emb", "attn", "mlp", "logits"]
    layer: int = -1
    head: int | None = None  # None on a block-level attention node: all heads

    def heads(self, n_heads: int) -> range | list[int]:
        """The heads an attention node stands for: all of its layer's, or its own."""
        return range(n_heads) if self.head is None else [self.head]


def parse_node(name: str) -> NodeRef:
    if name in ("emb", "logits"):
        return NodeRef(name)  # type: ignore[arg-type]
    if m := _HEAD_NODE.match(name):
        return NodeRef("attn", int(m[1]), int(m[2]))
    if m := _BLOCK_NODE.match(name):
        return NodeRef(m[1], int(m[2]))  # type: ignore[arg-type]
    raise FarmError(f"unknown circuit node {name!r}")


def head_node(layer: int, head: int) -> str:
    return f"attn_{layer}_h_{head}"


def graph_nodes(n_layers: int, n_heads: int, granularity: Granularity,
                attention_only: bool = False) -> list[str]:
    """All nodes in topological order (no `mlp_l` nodes on an attention-only model)."""
    nodes = ["emb"]
    for layer in range(n_layers):
        if granularity == "head":
            nodes += [head_node(layer, h) for h in range(n_heads)]
        else:
            nodes.append(f"attn_{layer}")
        if not attention_only:
            nodes.append(f"mlp_{layer}")
    return nodes + ["logits"]


def _graph_name(n_layers: int, n_heads: int | None, granularity: Granularity,
                attention_only: bool) -> str:
    heads = "" if n_heads is None else f", {n_heads}-head"
    kind = "attention-only " if attention_only else ""
    return f"the {n_layers}-layer{heads} {kind}{granularity}-level graph"


def graph_edges(nodes: list[str]) -> list[Edge]:
    """Every residual edge: each node feeds every later node, except heads of one layer."""
    refs = [parse_node(n) for n in nodes]
    edges = []
    for j, target in enumerate(nodes):
        for i in range(j):
            same_layer_heads = (refs[i].kind == refs[j].kind == "attn"
                                and refs[i].layer == refs[j].layer)
            if not same_layer_heads:
                edges.append((nodes[i], target))
    return edges


@dataclass(frozen=True)
class Circuit:
    """A set of retained edges; everything else contributes zero."""

    n_layers: int
    n_heads: int
    granularity: Granularity
    edges: frozenset[Edge]
    task: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    attention_only: bool = False  # drawn on the graph of a model without MLP blocks

    def __post_init__(self) -> None:
        nodes = self.nodes
        allowed = set(graph_edges(nodes))
        for edge in sorted(self.edges):
            if edge not in allowed:
                absent = [n for n in edge if n not in nodes]
                raise FarmError(f"circuit edge {edge[0]} -> {edge[1]} is not an edge of "
                                + _graph_name(self.n_layers, None, self.granularity,
                                              self.attention_only)
                                + (f": it has no node {absent[0]}" if absent else ""))

    @classmethod
    def full(cls, n_layers: int, n_heads: int = 1, granularity: Granularity = "block",
             task: str | None = None, attention_only: bool = False) -> Circuit:
        """The circuit that keeps every edge: it equals the model."""
        nodes = graph_nodes(n_layers, n_heads, granularity, attention_only)
        return cls(n_layers, n_heads, granularity, frozenset(graph_edges(nodes)), task,
                   attention_only=attention_only)

    @property
    def nodes(self) -> list[str]:
        return graph_nodes(self.n_layers, self.n_heads, self.granularity, self.attention_only)

    def ordered_edges(self) -> list[Edge]:
        """Retained edges in the graph's canonical order."""
        return [e for e in graph_edges(self.nodes) if e in self.edges]

    def parents(self, node: str) -> list[str]:
        return [s for s, t in self.ordered_edges() if t == node]

    def feeding_logits(self) -> set[str]:
        """Nodes with a retained path to the logits: no other node can change them."""
        found, todo = set(), ["logits"]
        while todo:
            for parent in self.parents(todo.pop()):
                if parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found

    def constant_sources(self) -> list[str]:
        """Nodes other than emb that feed a retained edge but have no retained input: under
        zero ablation each adds its output on a zero input, a constant, to its children."""
        sources = {s for s, _ in self.edges}
        return [n for n in self.nodes if n in sources and n != "emb" and not self.parents(n)]

    def without(self, edge: Edge) -> Circuit:
        return self.with_edges(self.edges - {edge})

    def with_edges(self, edges: frozenset[Edge]) -> Circuit:
        """The same graph, task and metadata with another edge set."""
        return replace(self, edges=edges)

    def to_json_dict(self) -> dict[str, Any]:
        """The upstream `circuit.json` layout (SPEC §5), plus our extra fields."""
        meta = {"ablation": "zero", "metric": "candidate_kl", **self.metadata}
        return {
            "task": self.task,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "granularity": self.granularity,
            "nodes": self.nodes,
            "edges": [{"source": s, "target": t} for s, t in self.ordered_edges()],
            "num_edges": len(self.edges),
            **meta,
        }

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "circuit") -> Circuit:
        if not isinstance(data, dict):
            raise FarmError(f"{source}: expected a JSON object")
        for key in ("n_layers", "nodes", "edges"):
            if key not in data:
                raise FarmError(f"{source}: missing field {key!r}")
        nodes = data["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise FarmError(f"{source}: field 'nodes' must be a list of node names")
        refs = [parse_node(n) for n in nodes]
        head_refs = [r for r in refs if r.kind == "attn" and r.head is not None]
        granularity: Granularity = "head" if head_refs else "block"
        attention_only = not any(r.kind == "mlp" for r in refs)
        if data.get("granularity", granularity) != granularity:
            raise FarmError(f"{source}: granularity is {data['granularity']!r}, but its nodes "
                            f"are {granularity}-level")
        n_layers = data["n_layers"]
        if not _positive_int(n_layers):
            raise FarmError(f"{source}: field 'n_layers' must be a positive integer")
        n_heads = data.get("n_heads")
        if n_heads is None:
            n_heads = max(r.head for r in head_refs) + 1 if head_refs else 1
        if not _positive_int(n_heads):
            raise FarmError(f"{source}: field 'n_heads' must be a positive integer")
        expected = graph_nodes(n_layers, n_heads, granularity, attention_only)
        if nodes != expected:
            graph = _graph_name(n_layers, n_heads, granularity, attention_only)
            if extra := [n for n in nodes if n not in expected]:
                raise FarmError(f"{source}: field 'nodes' names {', '.join(extra)}, which "
                                f"{graph} does not have")
            raise FarmError(f"{source}: field 'nodes' is {nodes}, expected {expected} "
                            f"({graph})")
        if not isinstance(data["edges"], list):
            raise FarmError(f"{source}: field 'edges' must be a list of {{source, target}}")
        edges = set()
        for i, edge in enumerate(data["edges"]):
            if not (isinstance(edge, dict) and isinstance(edge.get("source"), str)
                    and isinstance(edge.get("target"), str)):
                raise FarmError(f"{source}: edges[{i}] needs a 'source' and a 'target' node name")
            edges.add((edge["source"], edge["target"]))
        known = {"task", "n_layers", "n_heads", "granularity", "nodes", "edges", "num_edges"}
        metadata = {k: v for k, v in data.items() if k not in known}
        if not isinstance(metadata.get("checkpoint_sha256", ""), str):
            raise FarmError(f"{source}: field 'checkpoint_sha256' must be a hex string")
        task = data.get("task")
        if task is not None and not isinstance(task, str):
            raise FarmError(f"{source}: field 'task' must be a task name")
        try:
            circuit = cls(n_layers, n_heads, granularity, frozenset(edges), task, metadata,
                          attention_only)
        except FarmError as err:
            raise FarmError(f"{source}: {err}") from None
        if "num_edges" in data and data["num_edges"] != len(edges):
            raise FarmError(f"{source}: num_edges is {data['num_edges']} but {len(edges)} "
                            "distinct edges are listed")
        return circuit


def at_head_granularity(circuit: Circuit, n_heads: int) -> Circuit:
    """The same circuit with each attention node split into its heads (`attn_l_h_k`).

    A block-level attention edge becomes the edges of all its layer's heads: every head
    then reads the block's input and every consumer receives W_o over all heads, so zero
    ablation evaluates it exactly as before (SPEC §3). Upstream's verifier evaluates this
    form soundly and mis-evaluates block-level attention nodes.
    """
    if circuit.granularity == "head":
        if circuit.n_heads != n_heads:
            raise FarmError(f"circuit is already at head granularity with {circuit.n_heads} "
                            f"heads per layer, not {n_heads}")
        return circuit

    def split(node: str) -> list[str]:
        ref = parse_node(node)
        return ([head_node(ref.layer, h) for h in range(n_heads)] if ref.kind == "attn"
                else [node])

    edges = frozenset((s, t) for a, b in circuit.edges for s in split(a) for t in split(b))
    return replace(circuit, n_heads=n_heads, granularity="head", edges=edges)


def require_fits(circuit: Circuit, n_layers: int, n_heads: int, source: str = "circuit",
                 model: str = "the model", sha256: str | None = None, *,
                 attention_only: bool) -> None:
    """Refuse a circuit drawn for another model than one of these dimensions (and, given
    its sha256, another checkpoint), naming first the nodes the model lacks: evaluating
    or planning it would read those nodes as something they are not."""
    have = {node for granularity in ("block", "head")
            for node in graph_nodes(n_layers, n_heads, granularity, attention_only)}
    if unknown := [n for n in circuit.nodes if n not in have]:
        heads = f"{n_heads} head{'s' if n_heads > 1 else ''}"
        kind = "attention-only, " if attention_only else ""
        raise FarmError(f"{source} names node(s) {', '.join(unknown)}, which {model} "
                        f"({kind}{n_layers} layers, {heads} per layer) does not have")
    if circuit.attention_only and not attention_only:
        raise FarmError(f"{source} is drawn on the attention-only graph (no mlp nodes), but "
                        f"{model} has MLP blocks")
    if circuit.n_layers != n_layers:
        raise FarmError(f"{source} has {circuit.n_layers} layers, {model} has {n_layers}")
    if circuit.granularity == "head" and circuit.n_heads != n_heads:
        raise FarmError(f"{source} has {circuit.n_heads} heads per layer, {model} has "
                        f"{n_heads}")
    recorded = circuit.metadata.get("checkpoint_sha256")
    if sha256 is not None and recorded is not None and recorded != sha256:
        raise FarmError(f"{source} was extracted from checkpoint {recorded[:16]}…, not "
                        f"{sha256[:16]}…")


def require_zero_ablation(circuit: Circuit, source: str) -> None:
    """Refuse a circuit extracted under another ablation: the exact semantics, the
    encoders and certificates are those of zero ablation (SPEC §3)."""
    ablation = circuit.metadata.get("ablation", "zero")
    if ablation != "zero":
        raise FarmError(f"{source} was extracted under {ablation} ablation, but what is "
                        "verified is zero ablation (SPEC §3: a removed edge contributes 0); "
                        "extract it again with --ablation zero")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose every key is given once (json keeps the last of a duplicate)."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise json.JSONDecodeError(f"duplicate key(s) {', '.join(twice)}", "", 0)
    return dict(pairs)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def read_circuit_json(path: str | Path) -> Any:
    """A circuit file's JSON, unchecked: for callers that need to know which fields it
    states (an upstream file may leave n_heads out)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise FarmError(f"circuit file {path} does not exist") from None
    except IsADirectoryError:
        raise FarmError(f"circuit file {path} is a directory; give its circuit.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FarmError(f"circuit file {path} is not valid JSON: {err}") from None


def load_circuit(path: str | Path) -> Circuit:
    return Circuit.from_json_dict(read_circuit_json(path), source=str(path))


def save_circuit(circuit: Circuit, path: str | Path) -> None:
    """Write `circuit.json` atomically."""
    write_text_atomic(Path(path), json.dumps(circuit.to_json_dict(), indent=2) + "\n")
