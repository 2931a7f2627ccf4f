"""`farm circuit show`: print a circuit and draw it as a layered graph (PNG).
`farm circuit export`: write a circuit in the form the upstream verifier reads as meant."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from farm.commands import output_file
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.model.circuit import (
    Circuit,
    Edge,
    at_head_granularity,
    graph_edges,
    load_circuit,
    parse_node,
    read_circuit_json,
    require_fits,
    save_circuit,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("circuit",
                              description="Inspect circuits written by `farm extract` or "
                                          "imported from upstream circuit.json files, and "
                                          "export them in the form upstream's verifier reads "
                                          "as meant.")
    sub = p.add_subparsers(dest="circuit_command", required=True, metavar="SUBCOMMAND")
    show = sub.add_parser(
        "show", help="print a circuit's edges and optionally render it as a PNG",
        description="Print the circuit's metadata and retained edges. With --png, draw the "
                    "model graph in layers (emb at the bottom, logits on top) with the "
                    "retained edges; with --edge-log, label each retained edge with the "
                    "candidate-KL increase ACDC measured when it tried to remove it.")
    show.add_argument("circuit", help="circuit.json")
    show.add_argument("--png", type=output_file, help="write the graph drawing here")
    show.add_argument("--edge-log", help="edge_log.json from `farm extract`, for edge labels")
    show.set_defaults(func=run_show)
    export = sub.add_parser(
        "export", help="write a circuit at head granularity, for the upstream verifier",
        description="Write CIRCUIT with every attention node split into its heads "
                    "(attn_L_h_H), the form the upstream verifier (verifiable-transformers' "
                    "scripts/small/verify.py) evaluates soundly; it mis-evaluates block-level "
                    "nodes (attn_L). A block-level attention edge becomes the edges of all its "
                    "layer's heads; emb, mlp_L and logits keep their names, and the meaning is "
                    "unchanged: read back, it gives the same exact margins on every input. The "
                    "number of heads comes from --checkpoint, else from the circuit's n_heads.")
    export.add_argument("circuit", metavar="CIRCUIT",
                        help="circuit.json (block or head granularity)")
    export.add_argument("--out", type=output_file, required=True,
                        help="where to write the head-granularity circuit.json")
    export.add_argument("--checkpoint",
                        help="checkpoint the circuit is for: gives the number of heads, and "
                             "the circuit is refused unless its nodes exist in it")
    export.set_defaults(func=run_export)


def load_edge_deltas(path: str, circuit: Circuit) -> dict[Edge, float]:
    """KL increase per retained edge, from the ACDC step that tried (and kept) it."""
    try:
        steps = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FarmError(f"edge log {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise FarmError(f"edge log {path} is not valid JSON: {err}") from None
    if not isinstance(steps, list):
        raise FarmError(f"edge log {path}: expected a JSON list of tried edges")
    graph = set(graph_edges(circuit.nodes))
    deltas = {}
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not {"source", "target", "delta"} <= set(step):
            raise FarmError(f"edge log {path}: entry {i} needs 'source', 'target' and 'delta'")
        edge = (step["source"], step["target"])
        if edge not in graph:
            raise FarmError(f"edge log {path}: edge {edge[0]} -> {edge[1]} is not in the "
                            f"graph of circuit with nodes {circuit.nodes}")
        delta = step["delta"]
        if type(delta) not in (int, float):
            raise FarmError(f"edge log {path}: entry {i} has delta {delta!r}, not a number")
        if edge in circuit.edges:
            deltas[edge] = float(delta)
    return deltas


def node_positions(circuit: Circuit) -> dict[str, tuple[float, float]]:
    """emb at the bottom, then per layer attention (heads side by side) and MLP, logits on top."""
    pos = {}
    for node in circuit.nodes:
        ref = parse_node(node)
        if ref.kind == "emb":
            pos[node] = (0.0, 0.0)
        elif ref.kind == "logits":
            pos[node] = (0.0, 2.0 * circuit.n_layers + 1)
        elif ref.kind == "mlp":
            pos[node] = (0.0, 2.0 * ref.layer + 2)
        else:
            offset = 0.0 if ref.head is None else ref.head - (circuit.n_heads - 1) / 2
            pos[node] = (1.2 * offset, 2.0 * ref.layer + 1)
    return pos


def render(circuit: Circuit, path: str, deltas: dict[Edge, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    pos = node_positions(circuit)
    fig, ax = plt.subplots(figsize=(4 + circuit.n_heads, 1.4 * (2 * circuit.n_layers + 2)))
    for i, (source, target) in enumerate(circuit.ordered_edges()):
        (x0, y0), (x1, y1) = pos[source], pos[target]
        # skip edges bow out past the node column (bulge rad/2 · length ≈ 0.9), alternating
        # sides, so they neither cross intermediate nodes nor hide the direct edges
        length = math.hypot(x1 - x0, y1 - y0)
        rad = 0.0 if y1 - y0 <= 1 else (1.8 / length) * (1 if i % 2 else -1)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}",
                                     arrowstyle="-|>", mutation_scale=12, shrinkA=16,
                                     shrinkB=16, color="tab:blue", lw=1.4))
        if (source, target) in deltas:
            # midpoint of matplotlib's arc3 quadratic Bézier
            mx, my = (x0 + x1) / 2 + rad / 2 * (y1 - y0), (y0 + y1) / 2 - rad / 2 * (x1 - x0)
            ax.annotate(f"ΔKL {deltas[source, target]:.2g}", (mx, my), fontsize=7,
                        ha="center", va="center", backgroundcolor="white", zorder=5)
    constants = set(circuit.constant_sources())
    for node, (x, y) in pos.items():
        ax.annotate(node + (" (constant)" if node in constants else ""), (x, y), ha="center",
                    va="center", fontsize=9,
                    bbox={"boxstyle": "round", "ec": "gray",
                          "fc": "lightgray" if node in constants else "lightyellow"})
    xs = [x for x, _ in pos.values()]
    ax.set_xlim(min(xs) - 1.5, max(xs) + 1.5)
    ax.set_ylim(-0.6, 2 * circuit.n_layers + 1.6)
    ax.axis("off")
    meta = circuit.metadata
    ax.set_title(f"{circuit.task or 'circuit'}: {len(circuit.edges)} edges"
                 + (f", threshold {meta['threshold']}" if "threshold" in meta else ""))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_show(args: argparse.Namespace) -> int:
    if args.png and Path(args.png).suffix.lower() != ".png":
        raise FarmError(f"--png {args.png}: name a .png file")
    circuit = load_circuit(args.circuit)
    deltas = load_edge_deltas(args.edge_log, circuit) if args.edge_log else {}
    print(f"circuit {args.circuit}: task {circuit.task}, {circuit.n_layers} layers, "
          f"{circuit.granularity} granularity, {len(circuit.edges)} edges")
    for key, value in circuit.metadata.items():
        print(f"  {key}: {value}")
    for edge in circuit.ordered_edges():
        label = f"  (ΔKL {deltas[edge]:.4g})" if edge in deltas else ""
        print(f"  {edge[0]} -> {edge[1]}{label}")
    if constants := circuit.constant_sources():
        print(f"  constant sources (no retained input: each adds its output on a zero input): "
              f"{', '.join(constants)}")
    if args.png:
        render(circuit, args.png, deltas)
        print(f"wrote {args.png}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    data = read_circuit_json(args.circuit)
    circuit = Circuit.from_json_dict(data, source=str(args.circuit))
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        n_heads = ckpt.config.n_heads
        require_fits(circuit, ckpt.config.n_layers, n_heads, f"circuit {args.circuit}",
                     "the checkpoint", ckpt.sha256, attention_only=ckpt.config.attention_only)
    elif circuit.granularity == "block" and "n_heads" not in data:
        raise FarmError(f"circuit {args.circuit} does not record n_heads, so how many heads "
                        "its attention nodes stand for is unknown; give --checkpoint")
    else:
        n_heads = circuit.n_heads
    exported = at_head_granularity(circuit, n_heads)
    save_circuit(exported, args.out)
    print(f"wrote {args.out}: {len(exported.edges)} edges at head granularity "
          f"({n_heads} head{'s' if n_heads > 1 else ''} per layer), from {len(circuit.edges)} "
          f"{circuit.granularity}-level edges")
    return 0
