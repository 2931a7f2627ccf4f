"""ACDC on the trained model: small circuits that still decide every row, exactly."""

import csv
import json

import pytest

from farm.cli import main
from farm.discovery.acdc import (
    NOT_NECESSARY,
    THRESHOLDS,
    circuit_agreement,
    confirm_exact,
    extract,
    prune,
)
from farm.errors import FarmError
from farm.model.checkpoint import (
    Checkpoint,
    export_smt_weights,
    import_smt_weights,
    load_checkpoint,
    save_checkpoint,
)
from farm.model.circuit import Circuit, load_circuit, save_circuit
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.model.train import TrainConfig, train
from farm.tasks.registry import DEFAULT_TASKS, get_task


@pytest.fixture(scope="module")
def extracted(trained, tmp_path_factory):
    """`farm extract` run once per task on a saved checkpoint: (checkpoint dir, out dirs)."""
    root = tmp_path_factory.mktemp("extract")
    save_checkpoint(Checkpoint.from_model(trained.model), root / "ckpt")
    outs = {}
    for task in DEFAULT_TASKS:
        outs[task] = root / task
        assert main(["extract", "--checkpoint", str(root / "ckpt"), "--task", task,
                     "--out", str(outs[task]), "--quiet", "--device", "cpu"]) == 0
    return root / "ckpt", outs


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_circuit_is_smaller_and_decides_every_row_exactly(extracted, task):
    circuit = load_circuit(extracted[1][task] / "circuit.json")
    assert circuit.task == task
    assert 0 < len(circuit.edges) < len(Circuit.full(2).edges)
    meta = circuit.metadata
    assert meta["exact_agreement"] == meta["float_agreement"] == meta["min_agreement"] == 1.0
    assert (meta["ablation"], meta["metric"]) == ("zero", "candidate_kl")
    assert meta["threshold"] in THRESHOLDS
    feeding = circuit.feeding_logits()  # no edge dangles (its source may be a constant)
    assert all(t == "logits" or t in feeding for _, t in circuit.edges)


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_sweep_picks_the_smallest_agreeing_circuit(extracted, task):
    out = extracted[1][task]
    circuit = load_circuit(out / "circuit.json")
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["threshold"]) for r in rows] == list(THRESHOLDS)
    agreeing = [int(r["num_edges"]) for r in rows if float(r["agreement"]) == 1.0]
    assert len(circuit.edges) + len(circuit.metadata["necessity_pruned"]) == min(agreeing)
    # the edge log explains the winning run: kept edges were tried and kept, none removed
    log = json.loads((out / "edge_log.json").read_text())
    necessity = [(s["source"], s["target"]) for s in log if s["note"] == NOT_NECESSARY]
    assert set(necessity) <= {tuple(e) for e in circuit.metadata["necessity_pruned"]}
    removed = {(s["source"], s["target"]) for s in log if s["removed"]}
    assert not removed & circuit.edges
    kept = {(s["source"], s["target"]) for s in log if not s["removed"]}
    assert circuit.edges <= kept
    for step in log:
        assert step["delta"] == pytest.approx(step["kl_after"] - step["kl_before"])
        if step["removed"]:
            assert step["agreement"] == 1.0
            assert step["note"] == NOT_NECESSARY or step["delta"] < circuit.metadata["threshold"]


def _assert_every_edge_necessary(model: VerifiableGPT, circuit: Circuit) -> None:
    """SPEC §4 edge necessity: removing any one edge flips some row's exact decision."""
    exact = ExactModel(model.cfg, Checkpoint.from_model(model).weights)
    spec = get_task(circuit.task)
    prompts = spec.domain()

    def decisions(c: Circuit) -> list[bool]:
        return [r.best_margin(spec.target(p), spec.candidates) > 0
                for r, p in zip(exact.run(prompts, c), prompts, strict=True)]

    assert all(decisions(circuit))
    for edge in circuit.ordered_edges():
        assert not all(decisions(circuit.without(edge))), f"{edge} is not necessary"


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_every_edge_is_decision_necessary_in_exact_arithmetic(trained, extracted, task):
    _assert_every_edge_necessary(trained.model, load_circuit(extracted[1][task] / "circuit.json"))


def test_an_edge_only_pruning_makes_necessary_is_not_kept():
    """Seed 4, quote_close: removing emb -> mlp_0 and then pruning the parentless mlp_0
    flips decisions, removing the edge alone (as edge necessity does) flips none. The
    necessity pass judges as edge necessity does, and a node without inputs may stay
    as a constant source."""
    model = train(GPTConfig(), TrainConfig(seed=4), progress=False).model
    circuit = extract(model, "quote_close", device="cpu").circuit
    _assert_every_edge_necessary(model, circuit)
    assert circuit.constant_sources() == ["mlp_0"]  # this seed's weights: 3 edges, as the
    # paper's quote circuit


def test_head_circuits_of_an_attention_only_model_over_many_candidates(induction_circuit):
    """An attention-only induction model (four candidates, margins against the best
    rival): `farm extract --granularity head` draws its circuit on the graph without
    mlp nodes, and every retained edge is decision-necessary in exact arithmetic."""
    ckpt, path = induction_circuit
    circuit = load_circuit(path)
    assert circuit.attention_only and circuit.granularity == "head"
    assert circuit.nodes == Circuit.full(2, 2, "head", attention_only=True).nodes
    assert circuit.metadata["exact_agreement"] == 1.0
    assert any(t.startswith("attn_1") for _, t in circuit.edges)
    _assert_every_edge_necessary(load_checkpoint(ckpt).to_model(), circuit)


def test_keep_kl_edges_skips_the_necessity_pass(extracted, tmp_path):
    """bracket_type: ACDC alone keeps mlp_0 -> attn_1, which no decision needs."""
    out = tmp_path / "kept"
    assert main(["extract", "--checkpoint", str(extracted[0]), "--task", "bracket_type",
                 "--out", str(out), "--quiet", "--device", "cpu", "--keep-kl-edges"]) == 0
    kept = load_circuit(out / "circuit.json")
    pruned = load_circuit(extracted[1]["bracket_type"] / "circuit.json")
    assert kept.metadata["necessity_pruned"] is None
    assert pruned.edges < kept.edges
    assert kept.edges - pruned.edges == {tuple(e) for e in pruned.metadata["necessity_pruned"]}
    assert ("mlp_0", "attn_1") in kept.edges - pruned.edges


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_upstream_files_reproduce_the_agreement(extracted, tmp_path, task):
    """smt_weights.json + an upstream-layout circuit.json give back agreement 1.0."""
    ckpt_dir, outs = extracted
    export_smt_weights(load_checkpoint(ckpt_dir), tmp_path / "smt_weights.json")
    ours = json.loads((outs[task] / "circuit.json").read_text())
    upstream = {k: ours[k] for k in ("task", "n_layers", "nodes", "edges", "num_edges",
                                     "ablation", "metric", "min_agreement", "threshold")}
    (tmp_path / "circuit.json").write_text(json.dumps(upstream))

    model = import_smt_weights(tmp_path / "smt_weights.json").to_model()
    circuit = load_circuit(tmp_path / "circuit.json")
    assert circuit.edges == load_circuit(outs[task] / "circuit.json").edges
    assert circuit_agreement(model, circuit, task, device="cpu") == 1.0
    assert confirm_exact(model, circuit, get_task(task), "zero")[0] == 1.0


def test_circuit_failing_in_exact_arithmetic_is_refused(trained):
    too_small = Circuit(2, 1, "block", frozenset({("emb", "logits")}))
    with pytest.raises(FarmError, match="refusing it"):
        confirm_exact(trained.model, too_small, get_task("quote_close"), "zero")


def test_prune_drops_edges_off_every_emb_to_logits_path():
    edges = {("emb", "attn_0"), ("attn_0", "logits"),  # the path
             ("attn_1", "mlp_1"), ("mlp_1", "logits"),  # attn_1 is unreachable from emb
             ("emb", "mlp_0")}  # mlp_0 never reaches logits
    pruned = prune(Circuit(2, 1, "block", frozenset(edges)))
    assert pruned.edges == {("emb", "attn_0"), ("attn_0", "logits")}


def test_mean_ablation_is_reported_unconfirmed(trained):
    result = extract(trained.model, "quote_close", ablation="mean", device="cpu")
    assert result.float_agreement == 1.0
    assert result.exact_agreement is None and result.circuit.metadata["ablation"] == "mean"
    assert len(result.circuit.edges) < result.full_edges


def test_show_prints_and_renders_with_edge_labels(extracted, tmp_path, capsys):
    out = extracted[1]["bracket_type"]
    png = tmp_path / "c.png"
    assert main(["circuit", "show", str(out / "circuit.json"), "--png", str(png),
                 "--edge-log", str(out / "edge_log.json")]) == 0
    text = capsys.readouterr().out
    for source, target in load_circuit(out / "circuit.json").ordered_edges():
        assert f"{source} -> {target}  (ΔKL " in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_names_a_node_without_inputs_as_a_constant_source(tmp_path, capsys):
    """Zero ablation gives such a node a zero input: what it adds is a constant."""
    circuit = Circuit(2, 1, "block", frozenset({("emb", "attn_0"), ("attn_0", "logits"),
                                                 ("mlp_0", "logits")}), "quote_close")
    assert circuit.constant_sources() == ["mlp_0"]
    assert prune(circuit).constant_sources() == []
    save_circuit(circuit, tmp_path / "circuit.json")
    assert main(["circuit", "show", str(tmp_path / "circuit.json")]) == 0
    assert "constant sources (no retained input: each adds its output on a zero input): " \
           "mlp_0" in capsys.readouterr().out


def _refused(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_unknown_task_is_named(extracted, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it: one line, status 2
        main(["extract", "--checkpoint", str(extracted[0]), "--task", "no_such_task",
              "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "unknown task 'no_such_task'; known families: quote_close, bracket_type, " \
        "bracket_depth" in capsys.readouterr().err


def test_broken_or_mismatched_circuit_files_are_refused(extracted, tmp_path, capsys):
    good = extracted[1]["quote_close"] / "circuit.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "is not valid JSON" in _refused(["circuit", "show", str(broken)], capsys)
    three = tmp_path / "three.json"
    three.write_text(json.dumps(json.loads(good.read_text()) | {"n_layers": 3}))
    assert "field 'nodes' is" in _refused(["circuit", "show", str(three)], capsys)
    data = json.loads(good.read_text())
    for change, message in [
        ({"edges": None}, "field 'edges' must be a list"),
        ({"edges": [{"source": ["emb"], "target": "logits"}]}, "edges[0] needs a 'source'"),
        ({"n_heads": "2"}, "field 'n_heads' must be a positive integer"),
        ({"granularity": "neuron"}, "granularity is 'neuron'"),
        ({"checkpoint_sha256": 7}, "field 'checkpoint_sha256' must be a hex string"),
        # named before the count it also breaks
        ({"edges": [*data["edges"], {"source": "logits", "target": "emb"}]},
         "edge logits -> emb is not an edge"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(data | change))
        assert message in _refused(["circuit", "show", str(bad)], capsys), change
    (tmp_path / "latin1.json").write_bytes(b'{"task": "caf\xe9"}')
    assert "is not valid JSON" in _refused(["circuit", "show", str(tmp_path / "latin1.json")],
                                           capsys)
    assert "is a directory" in _refused(["circuit", "show", str(tmp_path)], capsys)
    (tmp_path / "twice.json").write_text(good.read_text()[:-2] + ', "n_layers": 3}')
    assert "duplicate key(s) n_layers" in _refused(["circuit", "show",
                                                     str(tmp_path / "twice.json")], capsys)
    assert "name a .png file" in _refused(["circuit", "show", str(good), "--png",
                                           str(tmp_path / "drawing")], capsys)
    words = tmp_path / "words.json"
    words.write_text(json.dumps([{"source": "emb", "target": "attn_0", "delta": "big"}]))
    assert "delta 'big', not a number" in _refused(
        ["circuit", "show", str(good), "--edge-log", str(words)], capsys)
    log = tmp_path / "log.json"
    log.write_text(json.dumps([{"source": "attn_2", "target": "logits", "delta": 0.1}]))
    err = _refused(["circuit", "show", str(good), "--edge-log", str(log)], capsys)
    assert "attn_2 -> logits is not in the graph" in err


def test_a_large_domain_is_searched_on_a_sample_and_confirmed_on_every_input(trained):
    """Above `sample` inputs ACDC scores a seeded sample; the winner must then be shown
    correct on the whole domain by the sound screen, whose margin floor is a proof."""
    found = extract(trained.model, "quote_close", device="cpu", sample=64)
    assert found.scored_on == 64 and found.exact_agreement == 1.0
    ckpt = Checkpoint.from_model(trained.model)
    task = get_task("quote_close")
    rows = ExactModel(ckpt.config, ckpt.weights).run(task.domain(), found.circuit)
    least = min(r.margin(task.target(r.prompt), task.alternate(r.prompt)) for r in rows)
    assert 0 < found.exact_min_margin <= least
