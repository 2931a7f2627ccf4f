"""The four properties on attention-only sparsemax models (d_mlp = 0, no attention biases):
the screen bounds their exact margins, `farm verify` decides them by evaluation and by
Z3/cvc5 with the same verdicts, and a trained induction circuit is verified whole."""

import json
from fractions import Fraction

import numpy as np
import pytest

from farm.cli import main
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit, load_circuit, save_circuit
from farm.model.exact import ExactModel, exact
from farm.screen.forward import Screen
from farm.tasks.registry import get_task
from farm.verify.affine_readout import ball_floor
from farm.verify.evaluate import Evaluator, robustness
from farm.verify.local import VerifyOptions
from tests.conftest import INDUCTION_SMALL, random_model

ATTN_ONLY = {"d_mlp": 0, "n_heads": 2, "attn_bias": False, "lm_head_bias": False}
# a previous-token head feeding an induction head, and the direct path
HEADS = frozenset({("emb", "attn_0_h_0"), ("attn_0_h_0", "attn_1_h_1"), ("emb", "attn_1_h_1"),
                   ("attn_1_h_1", "logits"), ("emb", "logits")})
PROPERTIES = ("functional_equivalence", "edge_necessity", "content_invariance", "robustness")


def _checkpoint(task: str, norm: str, seed: int = 0) -> Checkpoint:
    model = random_model(seed=seed, seq_len=get_task(task).seq_len, norm_variant=norm,
                         **ATTN_ONLY)
    return Checkpoint.from_model(model)


def _circuit(task: str, edges: frozenset | None) -> Circuit:
    if edges is None:
        return Circuit.full(2, 2, "head", task, attention_only=True)
    return Circuit(2, 2, "head", edges, task, attention_only=True)


@pytest.mark.parametrize("norm", ["signed_l1_band_norm", "none"])
@pytest.mark.parametrize("edges", [None, HEADS], ids=["full", "heads"])
@pytest.mark.parametrize("task", ["quote_close", "induction:vocab=4,period=3"])
def test_the_screen_bounds_every_exact_margin_and_proves_only_robust_inputs(task, edges, norm):
    """Every exact margin (against the best rival) lies in the screen's interval. Without
    a final norm the least margin over the ε-ball is known exactly, m_c − ε‖W_t − W_c‖₁
    for each rival c, and every input the screen calls robust has it positive."""
    spec, ckpt = get_task(task), _checkpoint(task, norm)
    circuit = _circuit(task, edges)
    prompts = spec.domain().batch(0, len(spec.domain()))
    targets = spec.targets(prompts)
    eps = Fraction(1, 20)
    found = Screen(ckpt.config, ckpt.weights, circuit).run(prompts, targets, spec.candidates,
                                                           eps)
    rows = ExactModel(ckpt.config, ckpt.weights).run(spec.domain(), circuit)
    margins = np.array([float(r.best_margin(t, spec.candidates))
                        for r, t in zip(rows, targets.tolist(), strict=True)])
    assert (found.lo <= margins).all() and (margins <= found.hi).all()
    assert found.correct.any() and found.wrong.any()  # an untrained model: both kinds
    assert found.robust is not None and (found.robust <= found.correct).all()
    if norm == "none":
        head = [[exact(w) for w in row] for row in ckpt.weights["lm_head.weight"]]
        for row, t, proved in zip(rows, targets.tolist(), found.robust, strict=True):
            floor = min(sum((a - b) * r for a, b, r in zip(head[t], head[c], row.final_residual,
                                                           strict=True))
                        - eps * sum(abs(a - b) for a, b in zip(head[t], head[c], strict=True))
                        for c in spec.candidates if c != t)
            assert floor > 0 or not proved
        assert found.robust.any()


def test_robustness_a_solver_cannot_take_is_undecided_and_says_why(tmp_path):
    """Four candidates and a final BandNorm: the SMT encodings decide two-candidate tasks
    and the readout is not affine, so the inputs the ball bound leaves are UNKNOWN."""
    task = INDUCTION_SMALL
    save_checkpoint(_checkpoint(task, "signed_l1_band_norm", seed=4), tmp_path / "ckpt")
    save_circuit(_circuit(task, None), tmp_path / "circuit.json")
    main(["verify", "--checkpoint", str(tmp_path / "ckpt"), "--circuit",
          str(tmp_path / "circuit.json"), "--task", task, "--properties", "rob", "--quiet",
          "--epsilon", "1", "--out", str(tmp_path / "r.json")])
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert result["status"] == "UNKNOWN" and result["unknown"] == result["routes"]["undecided"]
    assert "two-candidate tasks, not 4" in result["problems"][0]["reason"]


def _verify(ckpt_dir, circuit_file, task: str, out, *extra: str) -> dict[str, dict]:
    main(["verify", "--checkpoint", str(ckpt_dir), "--circuit", str(circuit_file), "--task",
          task, "--properties", "all", "--quiet", "--jobs", "2", "--out", str(out), *extra])
    return {r["property"]: r for r in json.loads(out.read_text())["results"]}


@pytest.mark.parametrize("norm", ["signed_l1_band_norm", "none"])
def test_the_screen_route_and_the_solver_route_agree_on_an_attention_only_circuit(
        tmp_path, norm):
    """An untrained two-head model on quote_close, at head granularity: every property's
    verdict and failure count is the same whether concrete inputs are evaluated or each
    is one exact Z3/cvc5 query, and the SAT answers replay exactly."""
    task, ckpt = "quote_close", tmp_path / "ckpt"
    save_checkpoint(_checkpoint(task, norm, seed=2), ckpt)
    save_circuit(_circuit(task, HEADS), tmp_path / "circuit.json")
    by = {route: _verify(ckpt, tmp_path / "circuit.json", task,
                         tmp_path / f"{route}.json", "--route", route, "--epsilon", "1/20")
          for route in ("screen", "solver")}
    for prop in PROPERTIES:
        screen, solver = by["screen"][prop], by["solver"][prop]
        assert screen["status"] == solver["status"] != "ERROR", prop
        assert screen["failing"] == solver["failing"], prop
        assert screen["unknown"] == solver["unknown"] == solver["errors"] == 0, prop
        assert solver["queries"] > 0 and "screen" not in solver["routes"], prop
    assert by["screen"]["edge_necessity"]["status"] == "VERIFIED"
    for prop in ("functional_equivalence", "content_invariance", "robustness"):
        assert by["screen"][prop]["status"] == "FAILED" and by["solver"][prop]["sat"] > 0
    if norm == "none":  # the exact affine decision of each input, against Z3/cvc5's
        spec, checkpoint = get_task(task), load_checkpoint(ckpt)
        model = ExactModel(checkpoint.config, checkpoint.weights)
        rows = model.run(spec.domain(), _circuit(task, HEADS))
        refuted = {i for i, row in enumerate(rows) if ball_floor(
            model, row.final_residual, spec.target(row.prompt), spec.candidates,
            Fraction(1, 20)).margin <= 0}
        listed = by["solver"]["robustness"]["counterexamples"]
        assert len(listed) == by["solver"]["robustness"]["failing"]  # all of them listed
        assert refuted == {int(c["subject"].split()[1]) for c in listed}


def test_a_trained_induction_circuit_is_verified_on_its_whole_domain(induction_circuit,
                                                                     tmp_path):
    """`farm train` + `farm extract --granularity head` + `farm verify --properties all` on
    an attention-only sparsemax induction model of four candidates: every property holds
    (robustness by the screen's ball bound). At an ε the bound cannot prove everywhere,
    the inputs left are decided exactly, and the counterexamples replay. And `farm
    distill` proves a program equal to the circuit on the whole domain."""
    task, (ckpt, circuit) = INDUCTION_SMALL, induction_circuit
    results = _verify(ckpt, circuit, task, tmp_path / "r.json")
    assert {p: r["status"] for p, r in results.items()} == dict.fromkeys(PROPERTIES,
                                                                         "VERIFIED")
    size = len(get_task(task).domain())
    assert results["functional_equivalence"]["routes"]["screen"] == size
    assert results["robustness"]["routes"] == {"screen": size}
    # a wider ball: what the bound leaves is decided exactly (the readout is affine),
    # and each η found breaks the decision in an exact replay of its own
    wide = _verify(ckpt, circuit, task, tmp_path / "wide.json", "--epsilon",
                   "1/2")["robustness"]
    # the exact readout is no unit's record: no units are written for it to contradict
    assert "units" not in json.loads((tmp_path / "wide.json").read_text())
    assert wide["status"] == "FAILED" and wide["unknown"] == 0 and wide["queries"] == 0
    assert set(wide["routes"]) == {"screen", "exact"} and sum(wide["routes"].values()) == size
    checkpoint = load_checkpoint(ckpt)
    model, spec = ExactModel(checkpoint.config, checkpoint.weights), get_task(task)
    assert 0 < wide["failing"] == len(wide["counterexamples"]) <= wide["routes"]["exact"]
    for cex in wide["counterexamples"]:
        eta = [Fraction(e) for e in cex["eta"]]
        assert max(map(abs, eta)) <= Fraction(1, 2)
        (row,) = model.run([tuple(cex["prompts"][0])], load_circuit(circuit))
        logits = model.lm_head([r + e for r, e in zip(row.final_residual, eta, strict=True)])
        target = spec.target(row.prompt)
        assert logits[target] <= max(logits[c] for c in spec.candidates if c != target)
    # distillation's CEGIS on the same circuit: the program it proves reads the answer
    assert main(["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit),
                 "--task", task, "--out", str(tmp_path / "program.json"), "--quiet"]) == 0
    record = json.loads((tmp_path / "program.json").read_text())
    assert record["status"] == "proved" and record["evidence"]["checked"] == size


def test_an_exact_readout_counterexample_on_a_wrongly_decided_input_says_so():
    """Robustness is judged against P(x): where the circuit already decides against it at
    η = 0, the exact readout's η is listed, and said not to be a change of decision."""
    task = "induction:vocab=4,period=3"
    ev = Evaluator(_checkpoint(task, "none", seed=1), _circuit(task, None), get_task(task),
                   progress=False, epsilon=Fraction(1, 100))
    result = robustness(ev, None, lambda: None, None, VerifyOptions(epsilon=Fraction(1, 100)))
    wrong = {tuple(c["prompts"][0]) for c in ev.functional_equivalence().counterexamples}
    assert result.status == "FAILED" and wrong and len(ev.domain) <= 100  # all listed
    assert any("note" in c for c in result.counterexamples)
    for cex in result.counterexamples:
        assert ("note" in cex) == (tuple(cex["prompts"][0]) in wrong), cex["subject"]
