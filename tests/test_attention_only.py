"""Attention-only models (d_mlp = 0, attention biases frozen at zero): the Max-of-K shape."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, export_smt_weights, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit, load_circuit, save_circuit
from farm.model.controlled import controlled_forward
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.screen.forward import Screen

ATTN_ONLY = GPTConfig(vocab_size=8, seq_len=3, d_model=8, n_layers=1, n_heads=1, d_mlp=0,
                      norm_variant="none", attn_bias=False, lm_head_bias=False)


def _checkpoint(config: GPTConfig = ATTN_ONLY, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint.from_model(VerifiableGPT(config))


def test_an_attention_only_model_has_exactly_the_paper_parameters():
    names = set(VerifiableGPT(ATTN_ONLY).state_dict())
    assert names == {"wte.weight", "wpe.weight", "lm_head.weight",
                     *(f"blocks.0.attn.{p}.weight" for p in "qkvo")}


def test_its_forward_is_embedding_plus_one_attention_layer_and_nothing_else():
    model = VerifiableGPT(ATTN_ONLY).double()
    tokens = torch.tensor([[3, 1, 7], [0, 0, 5]])
    logits, cache = model.run_with_cache(tokens)
    resid = cache["hook_embed"] + cache["blocks.0.hook_attn_out"]
    assert torch.equal(cache["blocks.0.hook_resid_post"], resid)
    assert torch.allclose(logits, resid @ model.lm_head.weight.T)
    assert not any("mlp" in name for name in model.hook_names())


def test_a_default_config_json_is_unchanged_and_the_new_field_is_written_when_used(tmp_path):
    defaults = GPTConfig().to_dict()
    assert "attn_bias" not in defaults  # checkpoints written before the field keep their bytes
    assert list(defaults) == ["vocab_size", "seq_len", "d_model", "n_layers", "n_heads",
                              "d_mlp", "norm_variant", "attn_variant", "activation",
                              "lm_head_bias"]
    save_checkpoint(_checkpoint(), tmp_path / "ao")
    written = json.loads((tmp_path / "ao" / "config.json").read_text())["config"]
    assert written["attn_bias"] is False and written["d_mlp"] == 0
    loaded = load_checkpoint(tmp_path / "ao")
    assert loaded == _checkpoint() and loaded.config == ATTN_ONLY


def test_a_wrongly_typed_attn_bias_is_refused(tmp_path):
    save_checkpoint(_checkpoint(), tmp_path / "ao")
    path = tmp_path / "ao" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["attn_bias"] = "no"
    path.write_text(json.dumps(meta))
    with pytest.raises(FarmError, match="attn_bias"):
        load_checkpoint(tmp_path / "ao")
    with pytest.raises(FarmError, match="d_mlp"):
        GPTConfig(d_mlp=-1)


def test_the_exact_evaluator_agrees_with_float64_on_a_sparsemax_attention_only_model():
    ckpt = _checkpoint(seed=3)
    model = ckpt.to_model(torch.float64)
    prompts = [(a, b, c) for a in range(8) for b in (0, 5) for c in (2, 7)]
    rows = ExactModel(ckpt.config, ckpt.weights).run(prompts)
    floats = model(torch.tensor(prompts))[:, -1].detach().numpy()
    exact = np.array([[float(v) for v in row.logits] for row in rows])
    assert np.abs(exact - floats).max() < 1e-9
    assert all(isinstance(v, Fraction) for v in rows[0].logits)


def test_the_graph_of_an_attention_only_model_has_no_mlp_nodes(tmp_path):
    circuit = Circuit.full(2, 2, "head", "induction", attention_only=True)
    assert circuit.nodes == ["emb", "attn_0_h_0", "attn_0_h_1", "attn_1_h_0", "attn_1_h_1",
                             "logits"]
    assert len(circuit.edges) == 5 + 6 + 2  # out of emb, of the layer-0 heads, of layer 1
    assert Circuit.full(1, attention_only=True).edges == {
        ("emb", "attn_0"), ("emb", "logits"), ("attn_0", "logits")}
    save_circuit(circuit.without(("emb", "logits")), tmp_path / "c.json")
    loaded = load_circuit(tmp_path / "c.json")
    assert loaded.attention_only and loaded == circuit.without(("emb", "logits"))
    assert "mlp" not in (tmp_path / "c.json").read_text()
    with pytest.raises(FarmError, match="attention-only head-level graph: it has no node mlp_0"):
        Circuit(2, 2, "head", frozenset({("emb", "mlp_0")}), attention_only=True)


def test_a_circuit_of_the_other_graph_is_refused_naming_what_is_wrong():
    ckpt = _checkpoint()
    with pytest.raises(FarmError, match=r"names node\(s\) mlp_0, which the model "
                                        r"\(attention-only, 1 layers"):
        ExactModel(ckpt.config, ckpt.weights).runs(Circuit.full(1))
    with pytest.raises(FarmError, match="mlp_0"):
        controlled_forward(ckpt.to_model(), Circuit.full(1), torch.tensor([[1, 2, 3]]))
    with pytest.raises(FarmError, match="attention-only graph .* has MLP blocks"):
        controlled_forward(VerifiableGPT(GPTConfig(n_layers=1)),
                           Circuit.full(1, attention_only=True), torch.tensor([[1, 2, 3]]))
    with pytest.raises(FarmError, match="the circuit's graph is not the model's"):
        Screen(ckpt.config, ckpt.weights, Circuit.full(1))
    with pytest.raises(FarmError, match="smt_weights.json"):
        export_smt_weights(ckpt, "unused.json")


def test_a_circuit_runs_exactly_as_the_controlled_forward_on_an_attention_only_model():
    ckpt = _checkpoint(seed=3)
    prompts = [(a, b, c) for a in range(8) for b in (0, 5) for c in (2, 7)]
    for circuit in (Circuit.full(1, attention_only=True),
                    Circuit(1, 1, "block", frozenset({("emb", "attn_0"), ("attn_0", "logits")}),
                            attention_only=True)):
        rows = ExactModel(ckpt.config, ckpt.weights).run(prompts, circuit)
        with torch.no_grad():
            out = controlled_forward(ckpt.to_model(torch.float64), circuit,
                                     torch.tensor(prompts)).logits[:, -1].numpy()
        exact = np.array([[float(v) for v in row.logits] for row in rows])
        assert np.abs(exact - out).max() < 1e-9
    exact = ExactModel(ckpt.config, ckpt.weights)
    assert ([r.logits for r in exact.run(prompts)]
            == [r.logits for r in exact.run(prompts, Circuit.full(1, attention_only=True))])


def test_farm_train_makes_an_attention_only_checkpoint(tmp_path, capsys):
    out = tmp_path / "ao"
    status = main(["train", "--out", str(out), "--tasks", "quote_close", "--layers", "1",
                   "--mlp", "0", "--no-attn-bias", "--no-unembed-bias", "--norm", "none",
                   "--attn", "softmax", "--max-steps", "3"])
    assert status in (0, 1)  # three steps rarely reach the margin; the checkpoint is saved
    ckpt = load_checkpoint(out)
    assert ckpt.config.attention_only and not ckpt.config.attn_bias
    assert not ckpt.config.lm_head_bias and ckpt.config.attn_variant == "softmax"
    assert not any("mlp" in name or name.endswith(".bias") for name in ckpt.weights)
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "x"), "--mlp", "-1"])
    assert "attention-only" in capsys.readouterr().err
