"""Checkpoints and smt_weights.json: bit-exact round trips, and every bad input refused by name."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import torch

from farm.errors import FarmError
from farm.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    export_smt_weights,
    import_smt_weights,
    load_checkpoint,
    save_checkpoint,
)
from farm.model.gpt import GPTConfig, VerifiableGPT

CONFIGS = {
    "one_head": GPTConfig(),
    "two_heads": GPTConfig(n_heads=2),
    "norm_free_no_bias": GPTConfig(norm_variant="none", lm_head_bias=False),
}


def make_checkpoint(config: GPTConfig, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint.from_model(VerifiableGPT(config))


def with_edge_values(ckpt: Checkpoint) -> Checkpoint:
    """Put -0.0, the smallest subnormal and the largest float32 into the weights."""
    weights = {name: np.array(a) for name, a in ckpt.weights.items()}
    tiny, huge = np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max
    weights["wte.weight"][0, :3] = [-0.0, tiny, huge]
    return Checkpoint(ckpt.config, weights)


def bits(ckpt: Checkpoint) -> dict[str, bytes]:
    return {name: a.view(np.uint32).tobytes() for name, a in ckpt.weights.items()}


@pytest.fixture(scope="module")
def good() -> Checkpoint:
    return make_checkpoint(GPTConfig())


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", CONFIGS)
def test_save_load_round_trip_is_bit_exact(tmp_path: Path, name: str) -> None:
    ckpt = with_edge_values(make_checkpoint(CONFIGS[name]))
    sha = save_checkpoint(ckpt, tmp_path / "ckpt")
    assert files_in(tmp_path / "ckpt") == [CONFIG_FILE, WEIGHTS_FILE]
    assert sha == ckpt.sha256 == hashlib.sha256((tmp_path / "ckpt" / WEIGHTS_FILE).read_bytes()
                                                ).hexdigest()
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded == ckpt and loaded.config == ckpt.config
    assert bits(loaded) == bits(ckpt)
    assert save_checkpoint(loaded, tmp_path / "again") == sha
    assert (tmp_path / "again" / WEIGHTS_FILE).read_bytes() == (
        tmp_path / "ckpt" / WEIGHTS_FILE).read_bytes()


@pytest.mark.parametrize("name", CONFIGS)
def test_model_round_trip(name: str) -> None:
    torch.manual_seed(1)
    model = VerifiableGPT(CONFIGS[name])
    ckpt = Checkpoint.from_model(model)
    assert ckpt.num_parameters() == model.num_parameters()
    rng = torch.get_rng_state()
    rebuilt = ckpt.to_model()
    assert torch.equal(torch.get_rng_state(), rng)  # the throwaway init left the RNG alone
    tokens = torch.tensor([[1, 2, 5, 9, 6, 7]])
    assert torch.equal(rebuilt(tokens), model(tokens))
    assert ckpt.to_model(torch.float64).wte.weight.dtype == torch.float64


def test_float64_model_is_refused_not_rounded() -> None:
    with pytest.raises(FarmError, match="wte.weight.*float64"):
        Checkpoint.from_model(VerifiableGPT(GPTConfig()).double())


def test_checkpoint_is_frozen(good: Checkpoint) -> None:
    with pytest.raises(ValueError):
        good.weights["wte.weight"][0, 0] = 1.0
    with pytest.raises(TypeError):
        good.weights["wte.weight"] = np.zeros((32, 16), np.float32)  # type: ignore[index]


@pytest.mark.parametrize("name", CONFIGS)
def test_smt_round_trip_is_bit_exact(tmp_path: Path, name: str) -> None:
    ckpt = with_edge_values(make_checkpoint(CONFIGS[name]))
    export_smt_weights(ckpt, tmp_path / "a.json")
    imported = import_smt_weights(tmp_path / "a.json")
    assert imported == ckpt and bits(imported) == bits(ckpt)
    export_smt_weights(imported, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert save_checkpoint(imported, tmp_path / "ckpt") == ckpt.sha256
    assert load_checkpoint(tmp_path / "ckpt").sha256 == ckpt.sha256


def test_smt_layout_matches_spec(tmp_path: Path) -> None:
    export_smt_weights(make_checkpoint(CONFIGS["norm_free_no_bias"]), tmp_path / "w.json")
    data = json.loads((tmp_path / "w.json").read_text())
    assert (data["half_low"], data["half_high"], data["d_ff"], data["head_dim"]) == (4.4, 8.4, 64,
                                                                                  16)
    assert "lm_head_bias" not in data
    assert data["mlp_1_norm_gamma"] == [1.0] * 16 and data["final_norm_beta"] == [0.0] * 16
    assert np.shape(data["mlp_0_W_up"]) == (64, 16) and np.shape(data["lm_head"]) == (32, 16)


def test_norm_free_import_accepts_absent_norm_keys(tmp_path: Path) -> None:
    ckpt = make_checkpoint(CONFIGS["norm_free_no_bias"])
    data = smt_dict(ckpt, tmp_path)
    for key in [k for k in data if "norm_" in k and k != "norm_variant"]:
        del data[key]
    (tmp_path / "w.json").write_text(json.dumps(data))
    assert import_smt_weights(tmp_path / "w.json") == ckpt


def test_program_heads_are_carried_through(tmp_path: Path, good: Checkpoint) -> None:
    data = smt_dict(good, tmp_path)
    data["program_heads"] = {"1.0": {"kind": "lookup", "table": [9, 10]}}
    (tmp_path / "w.json").write_text(json.dumps(data))
    imported = import_smt_weights(tmp_path / "w.json")
    assert imported.extras["program_heads"] == data["program_heads"]
    export_smt_weights(imported, tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text())["program_heads"] == data["program_heads"]
    save_checkpoint(imported, tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt") == imported
    with pytest.raises(FarmError, match="program heads"):
        imported.to_model()


# --------------------------------------------------------------------------- failed saves


def test_failed_save_leaves_no_files(tmp_path: Path, good: Checkpoint) -> None:
    target = tmp_path / "ckpt"
    (target / CONFIG_FILE).mkdir(parents=True)  # the config replace fails after the weights'
    with pytest.raises(FarmError, match="cannot save checkpoint"):
        save_checkpoint(good, target)
    assert files_in(target) == [CONFIG_FILE] and not any((target / CONFIG_FILE).iterdir())


def test_failed_overwrite_restores_old_weights(tmp_path: Path, good: Checkpoint) -> None:
    target = tmp_path / "ckpt"
    save_checkpoint(good, target)
    old = (target / WEIGHTS_FILE).read_bytes()
    (target / CONFIG_FILE).unlink()
    (target / CONFIG_FILE).mkdir()
    with pytest.raises(FarmError):
        save_checkpoint(make_checkpoint(GPTConfig(), seed=7), target)
    assert files_in(target) == [CONFIG_FILE, WEIGHTS_FILE]
    assert (target / WEIGHTS_FILE).read_bytes() == old


def test_save_onto_a_file_fails_cleanly(tmp_path: Path, good: Checkpoint) -> None:
    (tmp_path / "ckpt").write_text("not a directory")
    with pytest.raises(FarmError, match="ckpt"):
        save_checkpoint(good, tmp_path / "ckpt")
    assert files_in(tmp_path) == ["ckpt"]


def test_failed_smt_export_leaves_no_files(tmp_path: Path, good: Checkpoint) -> None:
    (tmp_path / "w.json").mkdir()
    with pytest.raises(FarmError, match="w.json"):
        export_smt_weights(good, tmp_path / "w.json")
    assert files_in(tmp_path) == ["w.json"]


# --------------------------------------------------------------------------- bad checkpoints


def write_raw(directory: Path, tensors: dict[str, np.ndarray], metadata: Any = None,
              config: dict[str, Any] | None = None) -> None:
    """A checkpoint written without validation, its config.json recording the true SHA-256."""
    directory.mkdir()
    blob = safetensors.numpy.save(tensors, metadata=metadata)
    (directory / WEIGHTS_FILE).write_bytes(blob)
    meta = {"format_version": 1, "weights_sha256": hashlib.sha256(blob).hexdigest(),
            "config": config or GPTConfig().to_dict(), "extras": {}}
    (directory / CONFIG_FILE).write_text(json.dumps(meta))


def edit_config(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        edit(meta)
        (directory / CONFIG_FILE).write_text(json.dumps(meta))
    return apply


def edit_tensors(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        tensors = safetensors.numpy.load((directory / WEIGHTS_FILE).read_bytes())
        edit(tensors)
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
        write_raw(directory, tensors)
    return apply


def set_nan(tensors: dict[str, np.ndarray]) -> None:
    tensors["blocks.1.mlp.up.weight"][3, :2] = [np.nan, np.inf]


def garbage_with_matching_sha(directory: Path) -> None:
    blob = b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}  "
    (directory / WEIGHTS_FILE).write_bytes(blob)
    edit_config(lambda m: m.update(weights_sha256=hashlib.sha256(blob).hexdigest()))(directory)


def foreign_serialization(directory: Path) -> None:
    tensors = safetensors.numpy.load((directory / WEIGHTS_FILE).read_bytes())
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    write_raw(directory, tensors, metadata={"format": "pt"})


BAD_CHECKPOINTS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "missing config": (lambda d: (d / CONFIG_FILE).unlink(), ["missing file", CONFIG_FILE]),
    "missing weights": (lambda d: (d / WEIGHTS_FILE).unlink(), ["missing file", WEIGHTS_FILE]),
    "malformed json": (lambda d: (d / CONFIG_FILE).write_text('{"format_version": 1,'),
                       [CONFIG_FILE, "malformed JSON"]),
    "json not an object": (lambda d: (d / CONFIG_FILE).write_text("[]"), [CONFIG_FILE, "object"]),
    "duplicate key": (lambda d: (d / CONFIG_FILE).write_text('{"extras": {}, "extras": {}}'),
                      [CONFIG_FILE, "duplicate key 'extras'"]),
    "unknown top field": (edit_config(lambda m: m.update(comment="hi")), [CONFIG_FILE, "comment"]),
    "missing top field": (edit_config(lambda m: m.pop("weights_sha256")),
                          [CONFIG_FILE, "weights_sha256"]),
    "bad version": (edit_config(lambda m: m.update(format_version=2)), ["format_version 2"]),
    "unknown config field": (edit_config(lambda m: m["config"].update(dropout=0.1)),
                             [CONFIG_FILE, "dropout"]),
    "missing config field": (edit_config(lambda m: m["config"].pop("lm_head_bias")),
                             [CONFIG_FILE, "lm_head_bias"]),
    "mistyped config field": (edit_config(lambda m: m["config"].update(lm_head_bias=1)),
                              [CONFIG_FILE, "lm_head_bias"]),
    "bad variant": (edit_config(lambda m: m["config"].update(norm_variant="rms_norm")),
                    [CONFIG_FILE, "norm_variant", "rms_norm"]),
    "unknown extras": (edit_config(lambda m: m["extras"].update(note=1)),
                       [CONFIG_FILE, "extras", "note"]),
    "sha mismatch": (edit_config(lambda m: m.update(weights_sha256="0" * 64)),
                     [WEIGHTS_FILE, CONFIG_FILE, "0" * 64]),
    "malformed sha": (edit_config(lambda m: m.update(weights_sha256="abc")),
                      ["weights_sha256", "'abc'"]),
    "missing tensor": (edit_tensors(lambda t: t.pop("blocks.1.attn.v.bias")),
                       [WEIGHTS_FILE, "missing", "blocks.1.attn.v.bias"]),
    "unexpected tensor": (edit_tensors(lambda t: t.update(extra=np.zeros(2, np.float32))),
                          [WEIGHTS_FILE, "unexpected", "extra"]),
    "wrong shape": (edit_tensors(lambda t: t.update({"wte.weight": t["wte.weight"][:31]})),
                    [WEIGHTS_FILE, "wte.weight", "(31, 16)", "expected (32, 16)"]),
    "float64": (edit_tensors(lambda t: t.update({"lm_head.bias": t["lm_head.bias"].astype(
        np.float64)})), [WEIGHTS_FILE, "lm_head.bias", "float64"]),
    "nan and inf": (edit_tensors(set_nan), [WEIGHTS_FILE, "blocks.1.mlp.up.weight",
                                             "2 non-finite"]),
    "unreadable safetensors": (garbage_with_matching_sha, [WEIGHTS_FILE, "safetensors"]),
    "foreign serialization": (foreign_serialization, [WEIGHTS_FILE, "canonical"]),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoint_is_refused_by_name(tmp_path: Path, good: Checkpoint, case: str) -> None:
    corrupt, needles = BAD_CHECKPOINTS[case]
    save_checkpoint(good, tmp_path / "ckpt")
    if case == "sha mismatch":
        needles = [*needles, good.sha256]
    corrupt(tmp_path / "ckpt")
    with pytest.raises(FarmError) as err:
        load_checkpoint(tmp_path / "ckpt")
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FarmError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")


# --------------------------------------------------------------------------- bad smt_weights.json


def smt_dict(ckpt: Checkpoint, tmp_path: Path) -> dict[str, Any]:
    export_smt_weights(ckpt, tmp_path / "source.json")
    return json.loads((tmp_path / "source.json").read_text())


def setter(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.update({key: value})


def set_cell(key: str, row: int, col: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data[key][row].__setitem__(col, value)


BAD_SMT: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "missing scalar": (lambda d: d.pop("d_ff"), ["missing key", "d_ff"]),
    "missing tensor": (lambda d: d.pop("attn_1_W_v"), ["missing key", "attn_1_W_v"]),
    "unexpected key": (setter("attn_2_W_q", [[0.0]]), ["unexpected key", "attn_2_W_q"]),
    "short rows": (lambda d: d["wte"].pop(), ["'wte'", "(31, 16)", "expected shape (32, 16)"]),
    "ragged": (lambda d: d["wpe"][2].pop(), ["'wpe'", "ragged"]),
    "transposed": (lambda d: d.update(mlp_0_W_up=np.transpose(d["mlp_0_W_up"]).tolist()),
                   ["mlp_0_W_up", "(16, 64)", "expected shape (64, 16)"]),
    "vector as matrix": (setter("attn_0_b_q", 0.5), ["attn_0_b_q", "()", "expected shape (16,)"]),
    "nan": (set_cell("lm_head", 2, 3, float("nan")), ["'lm_head'", "1 non-finite"]),
    "inexact float32": (set_cell("lm_head", 2, 3, 0.1), ["lm_head[2][3]", "0.1",
                                                          "float32"]),
    "string number": (set_cell("attn_1_W_o", 0, 1, "0.5"), ["attn_1_W_o[0][1]", "'0.5'"]),
    "bool": (set_cell("attn_1_W_o", 4, 0, True), ["attn_1_W_o[4][0]", "True"]),
    "half_low": (setter("half_low", 4.5), ["half_low", "22/5"]),
    "half_high inexact": (setter("half_high", 8.4000001), ["half_high", "42/5"]),
    "half_low string": (setter("half_low", "4.4"), ["half_low"]),
    "head_dim": (setter("head_dim", 8), ["head_dim", "16"]),
    "n_heads": (setter("n_heads", 3), ["n_heads", "3"]),
    "mistyped scalar": (setter("n_layers", 2.0), ["n_layers", "integer"]),
    "norm variant": (setter("norm_variant", "verifiable_pwl_v1"),
                     ["norm_variant", "verifiable_pwl_v1"]),
    "attn variant": (setter("attn_variant", "linear"), ["attn_variant", "linear"]),
    "activation variant": (setter("activation_variant", "relu"), ["activation_variant", "relu"]),
    "empty wpe": (setter("wpe", []), ["wpe"]),
    "program_heads": (setter("program_heads", [1]), ["program_heads"]),
}


@pytest.mark.parametrize("case", BAD_SMT)
def test_bad_smt_weights_are_refused_by_name(tmp_path: Path, good: Checkpoint, case: str) -> None:
    edit, needles = BAD_SMT[case]
    data = smt_dict(good, tmp_path)
    edit(data)
    (tmp_path / "w.json").write_text(json.dumps(data))
    with pytest.raises(FarmError) as err:
        import_smt_weights(tmp_path / "w.json")
    for needle in ["w.json", *needles]:
        assert needle in str(err.value), (needle, str(err.value))


def test_norm_free_rejects_non_identity_norm(tmp_path: Path) -> None:
    data = smt_dict(make_checkpoint(CONFIGS["norm_free_no_bias"]), tmp_path)
    data["mlp_1_norm_gamma"][5] = 2.0
    (tmp_path / "w.json").write_text(json.dumps(data))
    with pytest.raises(FarmError, match="mlp_1_norm_gamma.*'none'"):
        import_smt_weights(tmp_path / "w.json")


@pytest.mark.parametrize(("text", "needle"), [
    ('{"d_model": 16,', "malformed JSON"),
    ("[1, 2]", "object"),
    ('{"d_model": 16, "d_model": 8}', "duplicate key 'd_model'"),
])
def test_malformed_smt_json(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "w.json").write_text(text)
    with pytest.raises(FarmError, match=needle):
        import_smt_weights(tmp_path / "w.json")


def test_missing_smt_file(tmp_path: Path) -> None:
    with pytest.raises(FarmError, match="missing file.*absent.json"):
        import_smt_weights(tmp_path / "absent.json")
