"""Signed Max-of-K accuracy claims: `farm certify --accuracy` and `farm check` re-deriving
every bound, and each kind of tampering rejected with its reason."""

import base64
import json
import shutil
from fractions import Fraction

import pytest

from farm.cli import main
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, train
from farm.trust.accuracy import ACCURACY_PREDICATE_TYPE
from farm.trust.signing import file_subject, sign_statement

TASK = "max_of_k:k=3,vocab=8"


def _model(tmp_path, name: str, steps: int) -> str:
    config = GPTConfig(vocab_size=8, seq_len=3, d_model=16, n_layers=1, d_mlp=0,
                       norm_variant="none", attn_variant="softmax", attn_bias=False,
                       lm_head_bias=False)
    result = train(config, TrainConfig(tasks=(TASK,), max_steps=steps, seed=1, margin_goal=4.0,
                                       hinge=6.0), progress=False)
    directory = tmp_path / name
    save_checkpoint(Checkpoint.from_model(result.model), directory)
    return str(directory)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A partly trained model (so that the strategies' bounds differ), another model,
    keys, and a claim by every strategy."""
    tmp = tmp_path_factory.mktemp("claims")
    model, other = _model(tmp, "model", 40), _model(tmp, "other", 20)
    assert main(["keygen", "--out-dir", str(tmp / "keys")]) == 0
    claim = tmp / "claim.dsse.json"
    assert main(["certify", "--checkpoint", model, "--accuracy", "brute_force", "cubic",
                 "subcubic", "--task", TASK, "--key", str(tmp / "keys" / "farm_ed25519.pem"),
                 "--out", str(claim)]) == 0
    return {"dir": tmp, "model": model, "other": other, "claim": claim,
            "key": tmp / "keys" / "farm_ed25519.pem", "pub": str(tmp / "keys" / "farm_ed25519.pub")}


def _statement(path) -> dict:
    return json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))


def _resigned(signed, change) -> str:
    """The claim altered by `change` and signed again with the signer's own key: only
    re-derivation can catch what a valid signature does not."""
    statement = _statement(signed["claim"])
    predicate = statement["predicate"]
    change(predicate)
    envelope = sign_statement(predicate, statement["subject"], signed["key"],
                              ACCURACY_PREDICATE_TYPE)
    path = signed["dir"] / "tampered.dsse.json"
    path.write_text(json.dumps(envelope))
    return str(path)


def _check(signed, claim, capsys, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["check", claim, "--pubkey", signed["pub"], *extra])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def test_a_signed_claim_states_exact_fractions_and_checks(signed, capsys):
    bounds = {b["strategy"]: b for b in _statement(signed["claim"])["predicate"]["bounds"]}
    assert set(bounds) == {"brute_force", "cubic", "subcubic"}
    for b in bounds.values():
        assert b["total"] == 8 ** 3 and Fraction(b["bound"]) == Fraction(b["correct"], 512)
    # the compact proofs never claim more than the exact accuracy
    assert bounds["subcubic"]["correct"] <= bounds["brute_force"]["correct"]
    assert bounds["cubic"]["correct"] <= bounds["brute_force"]["correct"]
    code, out = _check(signed, str(signed["claim"]), capsys)
    assert code == 0, out
    assert out.startswith("OK ") and "brute_force claims" in out and "re-derived" in out


def test_a_raised_bound_is_rejected_though_signed(signed, capsys):
    def raise_brute_force(predicate):
        entry = next(b for b in predicate["bounds"] if b["strategy"] == "brute_force")
        entry["correct"] += 1
        entry["bound"] = str(Fraction(entry["correct"], entry["total"]))

    code, out = _check(signed, _resigned(signed, raise_brute_force), capsys)
    assert code == 1 and "REJECTED" in out
    assert "brute_force: claims" in out and "above the" in out and "it re-derives" in out


def test_a_bound_moved_to_a_weaker_strategy_is_rejected(signed, capsys):
    def relabel(predicate):  # the brute force's count, claimed as the subcubic proof's
        best = next(b for b in predicate["bounds"] if b["strategy"] == "brute_force")
        predicate["bounds"] = [{k: v for k, v in best.items() if k not in ("ties", "wrong")}
                               | {"strategy": "subcubic"}]

    bounds = {b["strategy"]: b["correct"] for b in _statement(signed["claim"])["predicate"]
              ["bounds"]}
    assert bounds["subcubic"] < bounds["brute_force"]  # else the relabel would be true
    code, out = _check(signed, _resigned(signed, relabel), capsys)
    assert code == 1 and "subcubic: claims" in out and "above the" in out

    code, out = _check(signed, _resigned(
        signed, lambda p: p["bounds"][0].update(strategy="quartic")), capsys)
    assert code == 1 and "unknown strategy 'quartic'" in out


def test_a_bound_that_is_not_its_own_fraction_is_rejected(signed, capsys):
    code, out = _check(signed, _resigned(
        signed, lambda p: p["bounds"][0].update(bound="1/1")), capsys)
    assert code == 1 and "is not correct/total" in out
    code, out = _check(signed, _resigned(signed, lambda p: p.update(bounds=[])), capsys)
    assert code == 1 and "the claim states no bound" in out


def test_another_model_is_not_the_signed_one(signed, capsys):
    code, out = _check(signed, str(signed["claim"]), capsys, "--checkpoint", signed["other"])
    assert code == 1 and "is not the signed model.safetensors" in out

    # re-signed over the other model's weights, the claim still naming the first's hash
    statement = _statement(signed["claim"])
    subjects = [file_subject(f"{signed['other']}/model.safetensors")]
    swapped = sign_statement(dict(statement["predicate"], checkpoint_path=signed["other"]),
                             subjects, signed["key"], ACCURACY_PREDICATE_TYPE)
    path = signed["dir"] / "swapped.dsse.json"
    path.write_text(json.dumps(swapped))
    code, out = _check(signed, str(path), capsys)
    assert code == 1 and "the claim names checkpoint" in out


def test_the_same_weights_under_another_config_are_not_the_signed_model(signed, capsys):
    """The weights file is signed, config.json is not: the claim binds the config too
    (softmax and sparsemax attention on the same weights are different models)."""
    copy = signed["dir"] / "relabelled"
    shutil.copytree(signed["model"], copy)
    config = json.loads((copy / "config.json").read_text())
    config["config"]["attn_variant"] = "sparsemax"
    (copy / "config.json").write_text(json.dumps(config))
    code, out = _check(signed, str(signed["claim"]), capsys, "--checkpoint", str(copy))
    assert code == 1 and "is not the signed model's" in out


def test_a_broken_signature_exits_2_with_its_reason(signed, capsys):
    envelope = json.loads(signed["claim"].read_text())
    predicate = _statement(signed["claim"])
    predicate["predicate"]["bounds"][0]["correct"] -= 1
    envelope["payload"] = base64.b64encode(json.dumps(predicate).encode()).decode()
    path = signed["dir"] / "forged.dsse.json"
    path.write_text(json.dumps(envelope))
    code, out = _check(signed, str(path), capsys)
    assert code == 2 and "bad signature" in out


def test_certify_refuses_a_task_that_is_not_max_of_k(signed, capsys):
    assert main(["certify", "--checkpoint", signed["model"], "--accuracy", "cubic", "--task",
                 "quote_close", "--key", str(signed["key"]), "--out",
                 str(signed["dir"] / "x.json")]) == 2
    assert not (signed["dir"] / "x.json").exists()
