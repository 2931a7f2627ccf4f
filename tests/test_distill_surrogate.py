"""The surrogate route: a standard model's circuit distilled to a program by sound bounds,
the program's properties proved exactly, and the claim stated as what it is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from farm.cli import main
from farm.distill import check_program
from farm.distill.dsl import At, Const
from farm.distill.surrogate import (
    StandardJudge,
    distill_surrogate,
    edge_flips,
    surrogate_properties,
)
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.model.circuit import Circuit
from farm.screen.standard import StandardScreen
from farm.tasks.registry import get_task
from farm.tasks.vocab import DOUBLE_QUOTE, SINGLE_QUOTE


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    out = tmp_path_factory.mktemp("standard") / "checkpoint"
    assert main(["train", "--attn", "softmax", "--norm", "layer_norm", "--activation", "gelu",
                 "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_farm_distill_surrogate_recovers_the_program_and_states_the_claim(standard, capsys):
    out = standard.parent / "quote_program.json"
    rc = main(["distill", "--checkpoint", str(standard), "--task", "quote_close", "--out",
               str(out), "--surrogate", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "return prompt[3]" in text
    assert "surrogate functional equivalence: holds" in text
    record = json.loads(out.read_text())
    assert record["status"] == "surrogate agrees"
    assert "not a verification of the circuit" in record["claim"]
    assert record["evidence"]["checked"] == record["evidence"]["domain"] == 128
    assert {p["name"]: p["holds"] for p in record["surrogate"]["properties"]} == {
        "functional equivalence": True, "content invariance": True}


def test_a_wrong_program_is_refuted_with_an_input_where_the_bounds_prove_the_circuit(standard):
    ckpt = load_checkpoint(standard)
    task = get_task("quote_close")
    judge = StandardJudge(ckpt, Circuit.full(2), task)
    check = check_program(Const(SINGLE_QUOTE), judge)
    assert not check.proved and check.disagreements == 64  # every double-quote prompt
    for cx in check.counterexamples:
        assert cx.circuit == DOUBLE_QUOTE == task.target(cx.prompt)  # the proved decision
    assert check_program(At(3), judge).proved


def test_surrogate_properties_fail_where_the_program_does():
    task = get_task("quote_close")
    (fe, ci) = surrogate_properties(Const(SINGLE_QUOTE), task)
    assert not fe.holds and "64 inputs answered wrongly" in fe.detail
    assert ci.holds  # a constant is content-invariant
    for batch in (65536, 1):  # a class split within a batch, and only across batches
        (fe, ci) = surrogate_properties(At(4), task, batch)  # a filler: reads content
        assert not fe.holds and not ci.holds and "answered two ways" in ci.detail
    (fe, ci) = surrogate_properties(At(3), task, batch=7)
    assert fe.holds and ci.holds and "2 feature classes" in ci.detail


def test_the_routes_refuse_each_others_models(standard, tmp_path, capsys):
    assert main(["distill", "--checkpoint", str(standard), "--task", "quote_close", "--out",
                 str(tmp_path / "p.json"), "--quiet"]) != 0
    assert "distil it with --surrogate" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
    exact = tmp_path / "exact"
    assert main(["train", "--device", "cpu", "--out", str(exact)]) == 0
    with pytest.raises(FarmError, match="exact-verifiable"):
        distill_surrogate(load_checkpoint(exact), Circuit.full(2), get_task("quote_close"))


def test_each_edge_flip_replays_and_a_logit_path_is_needed(standard):
    ckpt = load_checkpoint(standard)
    task, circuit = get_task("quote_close"), Circuit.full(2)
    flips = edge_flips(ckpt, circuit, task, batch=32)  # several batches
    assert set(flips) == {" -> ".join(e) for e in circuit.ordered_edges()}
    assert any(flips.values())
    for edge in circuit.ordered_edges():
        prompt = flips[" -> ".join(edge)]
        if prompt is None:
            continue
        x, target = np.array([prompt]), np.array([task.target(prompt)])
        weights = dict(ckpt.weights)
        assert StandardScreen(ckpt.config, weights, circuit).run(
            x, target, task.candidates).correct[0]
        assert StandardScreen(ckpt.config, weights, circuit.without(edge)).run(
            x, target, task.candidates).wrong[0]


def test_a_softmax_induction_circuit_goes_by_the_surrogate_route(tmp_path, capsys):
    """The softmax variant of issue 20's attention-only models: its head circuit (farm
    extract) is distilled through sound softmax bounds, and the record says what it is."""
    task = "induction:vocab=4,period=3"
    assert main(["train", "--tasks", task, "--attn", "softmax", "--norm", "none", "--mlp", "0",
                 "--width", "16", "--heads", "2", "--margin", "2", "--no-attn-bias",
                 "--no-unembed-bias", "--out", str(tmp_path / "ckpt")]) == 0
    assert main(["extract", "--checkpoint", str(tmp_path / "ckpt"), "--task", task,
                 "--granularity", "head", "--out", str(tmp_path / "circuit"), "--quiet",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["distill", "--checkpoint", str(tmp_path / "ckpt"), "--circuit",
                 str(tmp_path / "circuit" / "circuit.json"), "--task", task, "--surrogate",
                 "--out", str(tmp_path / "program.json"), "--quiet"]) == 0
    assert "surrogate functional equivalence: holds" in capsys.readouterr().out
    record = json.loads((tmp_path / "program.json").read_text())
    assert record["status"] == "surrogate agrees"
    assert record["evidence"]["checked"] == record["evidence"]["domain"] == 64
    assert "not a verification of the circuit" in record["claim"]
