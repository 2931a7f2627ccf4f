"""`farm circuit export` (head granularity for the upstream verifier) and circuit files whose
nodes a checkpoint does not have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.cli import main
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import Circuit, graph_nodes, load_circuit, save_circuit
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task

TASKS = ("quote_close", "bracket_type")
# A sparse block-level circuit: attention into attention, a skip edge, and a constant
# source (mlp_0 has no retained input), so that every way of expanding edges matters.
SPARSE = {("emb", "attn_0"), ("attn_0", "attn_1"), ("emb", "attn_1"), ("attn_1", "logits"),
          ("mlp_0", "logits"), ("attn_0", "mlp_1"), ("mlp_1", "logits")}


@pytest.fixture(scope="module")
def checkpoints(trained, trained_two_heads, tmp_path_factory) -> dict[int, tuple[Path, Checkpoint]]:
    """The 1- and 2-head session models as checkpoint directories, by number of heads."""
    root = tmp_path_factory.mktemp("export")
    found = {}
    for result in (trained, trained_two_heads):
        ckpt = Checkpoint.from_model(result.model.cpu())
        save_checkpoint(ckpt, root / f"h{ckpt.config.n_heads}")
        found[ckpt.config.n_heads] = root / f"h{ckpt.config.n_heads}", ckpt
    return found


def margins(ckpt: Checkpoint, circuit: Circuit) -> list:
    """Exact margin of every domain input of both tasks under `circuit`."""
    exact, out = ExactModel(ckpt.config, ckpt.weights), []
    for task in map(get_task, TASKS):
        prompts = task.domain()
        out += [r.margin(task.target(p), task.alternate(p))
                for r, p in zip(exact.run(prompts, circuit), prompts, strict=True)]
    return out


def export(src: Path, out: Path, *extra: str) -> Circuit:
    assert main(["circuit", "export", str(src), "--out", str(out), *extra]) == 0
    return load_circuit(out)


@pytest.mark.parametrize("n_heads", [1, 2])
@pytest.mark.parametrize("edges", ["full", "sparse"])
def test_export_round_trip_keeps_every_exact_margin(checkpoints, tmp_path, n_heads, edges):
    path, ckpt = checkpoints[n_heads]
    full = Circuit.full(2, n_heads, "block", "quote_close")
    circuit = full if edges == "full" else Circuit(2, n_heads, "block", frozenset(SPARSE),
                                                   "quote_close")
    save_circuit(circuit, tmp_path / "block.json")
    back = export(tmp_path / "block.json", tmp_path / "head.json", "--checkpoint", str(path))
    written = json.loads((tmp_path / "head.json").read_text())
    assert (written["granularity"], written["n_heads"]) == ("head", n_heads)
    assert written["nodes"] == graph_nodes(2, n_heads, "head")
    heads = {e[0] for e in back.edges} | {e[1] for e in back.edges}
    assert {n for n in heads if not n.startswith("attn")} == \
        {n for e in circuit.edges for n in e if not n.startswith("attn")}
    # each attention endpoint becomes all n_heads of its layer
    per_end = {e: sum(n.startswith("attn") for n in e) for e in circuit.edges}
    assert len(back.edges) == sum(n_heads ** k for k in per_end.values())
    assert margins(ckpt, back) == margins(ckpt, circuit)
    if edges == "sparse":
        assert margins(ckpt, circuit) != margins(ckpt, full)  # the comparison can tell


def test_keeping_one_head_only_is_another_circuit(checkpoints, tmp_path):
    """Expanding a block edge to one head instead of all would change the margins."""
    path, ckpt = checkpoints[2]
    save_circuit(Circuit(2, 2, "block", frozenset(SPARSE)), tmp_path / "block.json")
    back = export(tmp_path / "block.json", tmp_path / "head.json", "--checkpoint", str(path))
    one = Circuit(2, 2, "head", frozenset(e for e in back.edges
                                          if not any(n.endswith("_h_1") for n in e)))
    assert margins(ckpt, one) != margins(ckpt, back)


def test_export_takes_the_heads_from_the_circuit_or_refuses_to_guess(tmp_path, capsys):
    save_circuit(Circuit(2, 2, "block", frozenset({("emb", "attn_0"), ("attn_0", "logits")})),
                 tmp_path / "recorded.json")
    back = export(tmp_path / "recorded.json", tmp_path / "head.json")
    assert back.edges == {("emb", "attn_0_h_0"), ("emb", "attn_0_h_1"),
                          ("attn_0_h_0", "logits"), ("attn_0_h_1", "logits")}
    assert export(tmp_path / "head.json", tmp_path / "again.json") == back  # already head-level
    upstream = json.loads((tmp_path / "recorded.json").read_text())
    del upstream["n_heads"], upstream["granularity"]
    (tmp_path / "upstream.json").write_text(json.dumps(upstream))
    assert main(["circuit", "export", str(tmp_path / "upstream.json"), "--out",
                 str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "does not record n_heads" in err and "give --checkpoint" in err
    assert not (tmp_path / "x.json").exists()


def _edges_file(path: Path, n_layers: int, edges: list[tuple[str, str]]) -> Path:
    """An upstream-style circuit.json (no n_heads, no granularity): nodes from the edges."""
    nodes = graph_nodes(n_layers, 2, "head" if any("_h_" in n for e in edges for n in e)
                        else "block")
    path.write_text(json.dumps({"task": "quote_close", "n_layers": n_layers, "nodes": nodes,
                                "edges": [{"source": s, "target": t} for s, t in edges],
                                "num_edges": len(edges), "ablation": "zero"}))
    return path


# file's layers, its edges, what the one-line error names (for the 2-layer 1-head checkpoint)
MISFITS = {
    "attn_3": (4, [("emb", "attn_3"), ("attn_3", "logits")], "names node(s) attn_2, mlp_2, "
               "attn_3, mlp_3, which the checkpoint"),
    "attn_3_in_a_2_layer_file": (2, [("emb", "attn_3"), ("attn_3", "logits")],
                                 "is not an edge of the 2-layer block-level graph: it has no "
                                 "node attn_3"),
    "attn_0_h_1": (2, [("emb", "attn_0_h_1"), ("attn_0_h_1", "logits")],
                   "names node(s) attn_0_h_1, attn_1_h_1, which the checkpoint"),
    "mlp_5": (6, [("emb", "mlp_5"), ("mlp_5", "logits")], "names node(s) attn_2, mlp_2, "
              "attn_3, mlp_3, attn_4, mlp_4, attn_5, mlp_5, which the checkpoint"),
}


def _command(name: str, circuit: Path, ckpt: Path, out: Path) -> list[str]:
    if name == "verify":
        return ["verify", "--checkpoint", str(ckpt), "--circuit", str(circuit), "--task",
                "quote_close", "--properties", "fe", "--out", str(out)]
    return ["circuit", "export", str(circuit), "--checkpoint", str(ckpt), "--out", str(out)]


@pytest.mark.parametrize("case", MISFITS)
@pytest.mark.parametrize("command", ["verify", "export"])
def test_nodes_the_checkpoint_lacks_are_named_in_one_line(checkpoints, tmp_path, capsys, case,
                                                          command):
    n_layers, edges, message = MISFITS[case]
    circuit = _edges_file(tmp_path / "circuit.json", n_layers, edges)
    out = tmp_path / "out.json"
    assert main(_command(command, circuit, checkpoints[1][0], out)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_certify_names_a_circuit_node_the_checkpoint_lacks(checkpoints, tmp_path, capsys):
    path, ckpt = checkpoints[1]
    result = {"checkpoint_sha256": ckpt.sha256, "task": "quote_close", "results": [],
              "circuit": Circuit.full(3, task="quote_close").to_json_dict()}
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert main(["keygen", "--out-dir", str(tmp_path / "keys")]) == 0
    key = next((tmp_path / "keys").glob("*.pem"))
    capsys.readouterr()
    assert main(["certify", "--checkpoint", str(path), "--verify-result", str(tmp_path / "r.json"),
                 "--key", str(key), "--out", str(tmp_path / "c.dsse.json"), "--no-lean"]) == 2
    assert ("the quote_close circuit names node(s) attn_2, mlp_2, which the checkpoint (2 "
            "layers, 1 head per layer) does not have") in capsys.readouterr().err
    assert not (tmp_path / "c.dsse.json").exists()
