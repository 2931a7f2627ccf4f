"""Concrete properties decided by evaluation (farm.verify.evaluate): screen first, exact after.

What a user relies on: the decisions agree with exact arithmetic on every input, the
verdicts agree with the solver route's, every instance is counted under the route
that decided it, and counterexamples replay exactly.
"""

import json
from fractions import Fraction

import numpy as np
import pytest

from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    NO_WITNESS,
)
from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.evaluate import TIE, Evaluator, exact_decision, robustness
from farm.verify.local import VerifyOptions
from tests.conftest import random_model, weights_of
from tests.test_verify import BRACKET, QUOTE

CONCRETE = ("functional_equivalence", "content_invariance", "edge_necessity")
BROKEN = QUOTE[0][:-1] + [("emb", "logits")]  # the opener never reaches the output


def evaluator(ckpt: Checkpoint, task: str, edges=None) -> Evaluator:
    circuit = (Circuit.full(ckpt.config.n_layers, ckpt.config.n_heads, "block", task)
               if edges is None else Circuit(2, 1, "block", frozenset(edges), task))
    return Evaluator(ckpt, circuit, get_task(task), batch=50, progress=False)


@pytest.fixture(scope="module")
def trained_ckpt(trained) -> Checkpoint:
    return Checkpoint.from_model(trained.model)


@pytest.mark.parametrize("task", ["quote_close", "bracket_depth", "bracket_type:len=7"])
def test_every_decision_is_the_exact_one(task):
    """An untrained model decides many inputs wrongly and some by a hair: the screen's
    decisions and the exact fallback's together are exact arithmetic's, input by input."""
    spec = get_task(task)
    ckpt = Checkpoint.from_model(random_model(seed=3, seq_len=spec.seq_len))
    ev = evaluator(ckpt, task)
    d = ev.decisions()
    model = ExactModel(ckpt.config, weights_of(random_model(seed=3, seq_len=spec.seq_len)))
    rows = model.run(spec.domain())
    assert d.decision.tolist() == [exact_decision(r, spec.candidates) for r in rows]
    assert d.targets.tolist() == [spec.target(r.prompt) for r in rows]
    assert (d.decision != d.targets).any() and (d.decision == d.targets).any()


def test_the_decisions_pass_bounds_the_ball_when_robustness_is_asked():
    """With ε given up front, robustness comes out of the decisions' pass (one forward
    pass over the domain) and proves exactly what a pass of its own proves."""
    ckpt = Checkpoint.from_model(random_model(seed=1))
    circuit = Circuit.full(2, 1, "block", "quote_close")
    task, eps = get_task("quote_close"), Fraction(1, 20)
    alone = Evaluator(ckpt, circuit, task, batch=50, progress=False).robust_by_screen(eps)
    both = Evaluator(ckpt, circuit, task, batch=50, progress=False, epsilon=eps)
    assert both.robust_by_screen(eps).tolist() == alone.tolist()
    assert 0 < alone.sum() < len(alone)


@pytest.mark.parametrize(("task", "circuit"), [("quote_close", QUOTE[0]),
                                               ("bracket_type", BRACKET[0])])
def test_extracted_circuits_agree_with_the_solver_route(trained_ckpt, task, circuit):
    """The verdicts `farm verify --route solver` gives these circuits (tests/test_verify.py:
    quote all VERIFIED; bracket edge necessity FAILED on two unneeded edges), with every
    instance counted once under its route."""
    ev = evaluator(trained_ckpt, task, circuit)
    fe, ci, en = (getattr(ev, prop)() for prop in CONCRETE)
    assert fe.status == ci.status == "VERIFIED"
    assert sum(fe.routes.values()) == 128 and sum(ci.routes.values()) == 126  # 2 anchors
    assert sum(en.routes.values()) == len(circuit)
    unneeded = sorted(c["subject"] for c in en.counterexamples)
    if task == "quote_close":
        assert en.status == "VERIFIED" and not unneeded
    else:
        assert en.status == "FAILED" and en.failing == 2
        assert unneeded == ["edge emb->logits", "edge mlp_0->attn_1"]
        assert {c["reason"] for c in en.counterexamples} == {NO_WITNESS}
    for w in en.witnesses:  # each witness really changes the decision, exactly
        full = exact_decision(ev.row(w["input"]), ev.candidates)
        ablated = exact_decision(ev.row(w["input"], ev.circuit.without(tuple(w["edge"]))),
                                 ev.candidates)
        assert full != ablated


def test_a_broken_circuit_fails_with_every_failure_counted_and_replayed(trained_ckpt):
    """Without attn_1 -> logits the opener never reaches the output: some inputs decide
    wrongly. The count is exact arithmetic's, each listed one replays to a margin ≤ 0."""
    ev = evaluator(trained_ckpt, "quote_close", BROKEN)
    fe = ev.functional_equivalence()
    task = get_task("quote_close")
    rows = ev.model.run(task.domain(), ev.circuit)
    wrong = [r for r in rows if r.best_margin(task.target(r.prompt), task.candidates) <= 0]
    assert fe.status == "FAILED" and fe.failing == len(wrong) > 0
    assert len(fe.counterexamples) == min(len(wrong), 100)
    for cex in fe.counterexamples:
        row = ev.model.run([tuple(cex["prompts"][0])], ev.circuit)[0]
        margin = row.best_margin(task.target(row.prompt), task.candidates)
        assert cex["exact_margins"] == [str(margin)] and margin <= 0


def test_exact_ties_go_to_exact_arithmetic_and_are_never_correct():
    """lm_head rows of the two candidates made equal: every margin is exactly 0. A tie is
    no decision (SPEC §1): functional equivalence and content invariance fail everywhere,
    and the ties were settled by the exact evaluator, not guessed."""
    model = random_model(seed=0)
    weights = weights_of(model)
    c0, c1 = get_task("quote_close").candidates
    weights["lm_head.weight"][c1] = weights["lm_head.weight"][c0]
    weights["lm_head.bias"][c1] = weights["lm_head.bias"][c0]
    ckpt = Checkpoint(model.cfg, weights)
    ev = evaluator(ckpt, "quote_close")
    d = ev.decisions()
    assert (d.decision == TIE).all()
    fe, ci = ev.functional_equivalence(), ev.content_invariance()
    assert fe.failing == 128 and ci.failing == 126
    assert fe.routes == {"exact": 128} and ci.routes == {"exact": 126}
    assert ci.counterexamples[0]["decisions"] == ["tie", "tie"]


def test_cli_screen_route_counts_routes_and_writes_them(trained_ckpt, tmp_path, capsys):
    ckpt_dir = tmp_path / "checkpoint"
    save_checkpoint(trained_ckpt, ckpt_dir)
    save_circuit(Circuit(2, 1, "block", frozenset(QUOTE[0]), "quote_close"),
                 tmp_path / "quote.json")
    out = tmp_path / "result.json"
    code = main(["verify", "--checkpoint", str(ckpt_dir), "--circuit",
                 str(tmp_path / "quote.json"), "--task", "quote_close", "--properties",
                 "fe,ci,en", "--route", "screen", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "decided by screen" in printed and "0 queries" in printed
    report = json.loads(out.read_text())
    assert report["route"] == "screen"
    by_prop = {r["property"]: r for r in report["results"]}
    assert by_prop[FUNCTIONAL_EQUIVALENCE]["routes"] == {"screen": 128}
    assert by_prop[CONTENT_INVARIANCE]["status"] == "VERIFIED"
    assert {w["route"] for w in by_prop[EDGE_NECESSITY]["witnesses"]} <= {"screen", "exact"}
    assert len(by_prop[EDGE_NECESSITY]["witnesses"]) == 4
    assert np.isfinite(by_prop[FUNCTIONAL_EQUIVALENCE]["seconds"])


def test_certify_takes_screen_route_results_by_units_and_refuses_those_without(
        trained_ckpt, tmp_path, capsys):
    ckpt_dir = tmp_path / "checkpoint"
    save_checkpoint(trained_ckpt, ckpt_dir)
    out = tmp_path / "result.json"
    assert main(["verify", "--checkpoint", str(ckpt_dir), "--circuit", "full", "--task",
                 "quote_close", "--properties", "fe", "--route", "screen", "--quiet",
                 "--out", str(out)]) == 0
    assert main(["keygen", "--out-dir", str(tmp_path / "keys")]) == 0
    key = next((tmp_path / "keys").glob("*.pem"))
    cert = tmp_path / "c.dsse.json"
    assert main(["certify", "--checkpoint", str(ckpt_dir), "--verify-result", str(out),
                 "--key", str(key), "--out", str(cert), "--no-lean"]) == 0
    capsys.readouterr()
    assert main(["check", str(cert), "--pubkey", str(key.with_suffix(".pub"))]) == 0
    assert "1 units covering 128 inputs exactly once" in capsys.readouterr().out
    bare = json.loads(out.read_text())
    del bare["units"]  # as screen-route results were written before units: no unit evidence
    out.write_text(json.dumps(bare))
    again = tmp_path / "d.dsse.json"
    assert main(["certify", "--checkpoint", str(ckpt_dir), "--verify-result", str(out),
                 "--key", str(key), "--out", str(again), "--no-lean"]) == 2
    assert "(the screen route records units), or with --route solver" in \
        capsys.readouterr().err
    assert not again.exists()


@pytest.mark.parametrize(("edges", "status"), [(QUOTE[0], "VERIFIED"), (BROKEN, "FAILED")])
def test_robustness_by_the_ball_bound_then_the_solvers(trained_ckpt, tmp_path, edges, status):
    """The screen proves what its bound over the ε-ball can; the solvers answer the rest,
    each counterexample an η replayed exactly; every input counted once."""
    ckpt_dir = tmp_path / "checkpoint"
    save_checkpoint(trained_ckpt, ckpt_dir)
    save_circuit(Circuit(2, 1, "block", frozenset(edges), "quote_close"), tmp_path / "c.json")
    out = tmp_path / "result.json"
    code = main(["verify", "--checkpoint", str(ckpt_dir), "--circuit", str(tmp_path / "c.json"),
                 "--task", "quote_close", "--properties", "rob", "--solver", "cvc5", "--quiet",
                 "--out", str(out)])
    (rob,) = json.loads(out.read_text())["results"]
    assert (code == 0) == (status == "VERIFIED") and rob["status"] == status
    routes = rob["routes"]
    assert sum(routes.values()) == 128 and routes.get("solver", 0) == rob["queries"] - rob[
        "escalated"]
    assert rob["failing"] == len(rob["counterexamples"]) <= routes.get("solver", 0)
    for cex in rob["counterexamples"]:
        assert Fraction(cex["exact_margin"]) <= 0
        assert max(abs(Fraction(e)) for e in cex["eta"]) <= Fraction(1, 100)


def test_robustness_inputs_over_the_solver_budget_are_unknown_and_counted(trained_ckpt,
                                                                          tmp_path):
    ckpt_dir = tmp_path / "checkpoint"
    save_checkpoint(trained_ckpt, ckpt_dir)
    save_circuit(Circuit(2, 1, "block", frozenset(BROKEN), "quote_close"), tmp_path / "c.json")
    out = tmp_path / "result.json"
    main(["verify", "--checkpoint", str(ckpt_dir), "--circuit", str(tmp_path / "c.json"),
          "--task", "quote_close", "--properties", "rob", "--solver", "cvc5", "--quiet",
          "--solver-inputs", "1", "--out", str(out)])
    (rob,) = json.loads(out.read_text())["results"]
    left = 128 - rob["routes"]["screen"]
    assert rob["routes"]["solver"] == 1 and rob["routes"]["undecided"] == left - 1 > 0
    assert rob["unknown"] >= left - 1 and "--solver-inputs" in rob["problems"][-1]["reason"]


def test_robustness_at_another_epsilon_than_the_evaluators_is_refused():
    """An evaluator's decisions carry its own ε's robust mask (a certificate's units read
    it): robustness asked at another ε from it would fold two balls into one result."""
    ckpt = Checkpoint.from_model(random_model(seed=3))
    ev = Evaluator(ckpt, Circuit.full(2), get_task("quote_close"), progress=False,
                   epsilon=Fraction(1, 100))
    with pytest.raises(FarmError, match="built for"):
        robustness(ev, None, lambda: None, None, VerifyOptions(epsilon=Fraction(1, 50)))
