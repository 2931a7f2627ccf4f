"""Program distillation: the DSL means what it prints, the search finds the smallest program,
and CEGIS recovers each family's program from a trained circuit, with a proof that holds
and counterexamples that replay."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from actors.distill import ray_checker
from farm.cli import main
from farm.discovery.acdc import extract
from farm.distill import (
    Judge,
    check_program,
    compile_program,
    distill,
    parse_program,
    program_source,
)
from farm.distill.dsl import (
    And,
    At,
    Closer,
    Compare,
    Const,
    Count,
    Find,
    If,
    Is,
    Machine,
    Not,
    Odd,
    Or,
    TokenClass,
)
from farm.distill.search import Motifs, smallest_consistent
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit, load_circuit, save_circuit
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, train
from farm.tasks.registry import get_task
from farm.tasks.vocab import CLOSE_CURLY, CLOSE_PAREN, CLOSE_SQUARE, OPEN_PAREN, OPEN_SQUARE
from tests.conftest import embedded_ray, random_model, weights_of

LPAREN, RPAREN = TokenClass("lparen", frozenset({OPEN_PAREN})), \
    TokenClass("rparen", frozenset({CLOSE_PAREN}))
FILLERS = TokenClass("fillers", frozenset({5, 6}))
DEPTH = Count("final", LPAREN, RPAREN)
EVERY_NODE = [  # each node kind at least once, as a whole program
    Const(CLOSE_PAREN), At(3), Find("first", FILLERS), Find("last", FILLERS), Closer(At(2)),
    If(And(Compare(DEPTH, ">=", 1), Compare(Count("lowest", LPAREN, RPAREN), "==", 0)),
       Const(CLOSE_PAREN), Const(OPEN_PAREN)),
    If(Or(Odd(Count("final", FILLERS, None)), Not(Is(At(2), OPEN_PAREN))),
       Find("last", LPAREN), Closer(Find("first", LPAREN))),
    If(Machine(LPAREN, "set", RPAREN, "flip"), Const(OPEN_PAREN),
       If(Compare(Count("highest", RPAREN, None), "<=", 1), At(4), Const(CLOSE_PAREN))),
]


@pytest.mark.parametrize("program", EVERY_NODE, ids=str)
def test_printed_python_computes_what_the_dsl_evaluates(program):
    domain = get_task("bracket_depth:len=7,fillers=2").domain()
    prompts = domain.batch(0, len(domain))
    run = compile_program(program_source(program))
    assert [run(tuple(p)) for p in prompts.tolist()] == program.evaluate(prompts).tolist()


@pytest.mark.parametrize("program", EVERY_NODE, ids=str)
def test_a_program_survives_its_json_form(program):
    assert parse_program(json.loads(json.dumps(program.to_json()))) == program


def test_size_counts_nodes():
    assert At(3).size == 1
    assert Closer(At(3)).size == 2
    assert EVERY_NODE[5].size == 8  # if, and, two compares, two counters, two constants


@pytest.mark.parametrize("bad", [["at"], ["closer", ["compare", ["at", 3], ">=", 1]],
                                 ["loop", 3], "at 3", ["compare", ["count", "final",
                                 {"class": "x", "tokens": [19]}, None], "<", 1]])
def test_a_malformed_program_is_refused_by_name(bad):
    with pytest.raises(FarmError, match="not a DSL program"):
        parse_program(bad)


@pytest.mark.parametrize("spec, expected", [("quote_close", At(3)),
                                            ("bracket_type:len=8", Closer(At(3)))])
def test_the_search_finds_the_lookup_smallest_first(spec, expected):
    task = get_task(spec)
    prompts = task.domain().batch(0, len(task.domain()))
    found, _ = smallest_consistent(Motifs.of(task), prompts, task.targets(prompts), 10)
    assert found == expected


def test_the_search_finds_a_counter_for_depth_and_nothing_smaller_fits():
    task = get_task("bracket_depth:len=8")
    prompts = task.domain().batch(0, len(task.domain()))
    motifs, targets = Motifs.of(task), task.targets(prompts)
    found, _ = smallest_consistent(motifs, prompts, targets, 10)
    assert found is not None and np.array_equal(found.evaluate(prompts), targets)
    assert "count" in json.dumps(found.to_json())
    assert smallest_consistent(motifs, prompts, targets, found.size - 1)[0] is None


# ------------------------------------------------------------------------------ trained circuits


@pytest.fixture(scope="module")
def circuits(trained, tmp_path_factory):
    """Checkpoints and extracted circuits: the default lookups, and bracket_depth."""
    root = tmp_path_factory.mktemp("distill")
    depth = train(GPTConfig(), TrainConfig(tasks=("bracket_depth",), seed=0), progress=False)
    out = {}
    for name, model, tasks in (("lookups", trained.model, ("quote_close", "bracket_type")),
                               ("depth", depth.model, ("bracket_depth",))):
        save_checkpoint(Checkpoint.from_model(model), root / name)
        for task in tasks:
            save_circuit(extract(model, task, device="cpu").circuit, root / task / "circuit.json")
            out[task] = (root / name, root / task / "circuit.json")
    return out


@pytest.mark.parametrize("task, returns", [
    ("quote_close", "return prompt[3]"),
    ("bracket_type", "return CLOSER.get(prompt[3], prompt[3])"),
    ("bracket_depth", "lparen_minus_rparen[-1]")])
def test_farm_distill_recovers_and_proves_each_family(circuits, task, returns, capsys):
    ckpt, circuit = circuits[task]
    assert main(["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit),
                 "--task", task, "--quiet"]) == 0
    assert returns in capsys.readouterr().out
    record = json.loads((circuit.parent / "program.json").read_text())
    evidence, domain = record["evidence"], len(get_task(task).domain())
    assert record["status"] == "proved" and evidence["disagreements"] == 0
    assert evidence["by_screen"] + evidence["by_exact"] == evidence["checked"] == domain
    assert evidence["printed_source_run_on"] == domain
    assert record["search"]["candidates_checked"] >= 2  # constants are tried, and refuted
    # the proof's program is the record's: its source, run on the domain, decides as the
    # circuit does in exact arithmetic
    run = compile_program(record["program"]["source"])
    assert parse_program(record["program"]["dsl"]).size == record["program"]["size"]
    exact = ExactModel(load_checkpoint(ckpt).config, dict(load_checkpoint(ckpt).weights))
    candidates = get_task(task).candidates
    for row in exact.run(get_task(task).domain(), load_circuit(circuit)):
        assert max(candidates, key=lambda t: row.logits[t]) == run(row.prompt)


def test_a_wrong_program_is_refuted_by_counterexamples_that_replay(circuits):
    ckpt_dir, circuit_file = circuits["bracket_type"]
    ckpt, circuit = load_checkpoint(ckpt_dir), load_circuit(circuit_file)
    judge = Judge(ckpt, circuit, get_task("bracket_type"))
    swapped = If(Is(At(3), OPEN_SQUARE), Const(CLOSE_CURLY), Const(CLOSE_SQUARE))
    check = check_program(swapped, judge)
    assert not check.proved and check.disagreements == check.checked == 128
    assert check.counterexamples
    exact = ExactModel(ckpt.config, dict(ckpt.weights)).runs(circuit)
    for cx in check.counterexamples:  # replayed again, independently of the judge
        logits = exact.row(cx.prompt).logits
        assert cx.program == swapped.evaluate(np.array([cx.prompt]))[0]
        assert logits[cx.program] < logits[cx.circuit]
        assert cx.logits == {t: Fraction(logits[t]) for t in (CLOSE_SQUARE, CLOSE_CURLY)}


def test_half_right_is_refuted_on_exactly_the_wrong_half(circuits):
    ckpt_dir, circuit_file = circuits["bracket_type"]
    judge = Judge(load_checkpoint(ckpt_dir), load_circuit(circuit_file),
                  get_task("bracket_type"))
    check = check_program(Const(CLOSE_SQUARE), judge)
    assert (check.disagreements, check.by_screen + check.by_exact) == (64, 64)
    assert all(cx.prompt[3] != OPEN_SQUARE and cx.circuit == CLOSE_CURLY
               for cx in check.counterexamples)


def test_distill_of_the_full_model_needs_an_out_file(circuits, capsys, tmp_path):
    ckpt, _ = circuits["quote_close"]
    assert main(["distill", "--checkpoint", str(ckpt), "--task", "quote_close",
                 "--quiet"]) == 2
    assert "--circuit full needs --out" in capsys.readouterr().err
    out = tmp_path / "full.json"
    assert main(["distill", "--checkpoint", str(ckpt), "--task", "quote_close", "--out",
                 str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["circuit"]["file"] is None


def test_distill_refuses_a_circuit_of_another_task(circuits, capsys, tmp_path):
    ckpt, circuit = circuits["quote_close"]
    assert main(["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit), "--task",
                 "bracket_type", "--out", str(tmp_path / "p.json"), "--quiet"]) == 2
    assert "extracted for task quote_close" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_a_proof_record_is_rederived_and_tampering_is_named(circuits, tmp_path, capsys):
    ckpt, circuit = circuits["bracket_type"]
    base = ["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit),
            "--task", "bracket_type", "--quiet"]
    out = tmp_path / "program.json"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--recheck", str(out)]) == 0
    assert "CHECKS" in capsys.readouterr().out

    record = json.loads(out.read_text())
    record["program"]["dsl"] = ["at", 3]  # the quote lookup: wrong for brackets
    record["search"]["examples"][0]["logits"] = {"13": "1", "14": "0"}
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(record))
    assert main([*base, "--recheck", str(forged)]) == 1
    printed = capsys.readouterr().out
    assert "REJECTED" in printed and "not the program's printed form" in printed
    assert "disagrees with the circuit on 128 input(s)" in printed
    assert "does not replay" in printed


def test_a_signed_program_checks_and_the_checker_names_other_files(circuits, tmp_path, capsys):
    ckpt, circuit = circuits["bracket_depth"]
    assert main(["keygen", "--out-dir", str(tmp_path / "keys")]) == 0
    out = tmp_path / "program.json"
    assert main(["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit), "--task",
                 "bracket_depth", "--out", str(out), "--sign",
                 str(tmp_path / "keys" / "farm_ed25519.pem"), "--quiet"]) == 0
    envelope, pub = tmp_path / "program.dsse.json", tmp_path / "keys" / "farm_ed25519.pub"
    capsys.readouterr()
    assert main(["check", str(envelope), "--pubkey", str(pub)]) == 0
    assert "agrees with the circuit on all 81 inputs of bracket_depth, re-derived" in \
        capsys.readouterr().out

    other_ckpt, other_circuit = circuits["quote_close"]
    assert main(["check", str(envelope), "--pubkey", str(pub), "--checkpoint",
                 str(other_ckpt), "--circuit", str(other_circuit)]) == 1
    printed = capsys.readouterr().out
    assert "is not the signed model.safetensors" in printed
    assert "is not the signed circuit.json" in printed

    forged = json.loads(envelope.read_text())
    forged["payload"] = forged["payload"][:-8] + "AAAAAAA="
    (tmp_path / "forged.dsse.json").write_text(json.dumps(forged))
    assert main(["check", str(tmp_path / "forged.dsse.json"), "--pubkey", str(pub)]) == 2


def test_inputs_the_screen_cannot_decide_are_decided_exactly():
    """An untrained model with wide weights leaves the screen undecided on every input:
    the judge must then agree with exact arithmetic alone."""
    model = random_model(seed=0, scale=1.0)
    ckpt, task = Checkpoint.from_model(model), get_task("bracket_type")
    circuit = Circuit.full(ckpt.config.n_layers)
    judge = Judge(ckpt, circuit, task)
    prompts = task.domain().batch(0, len(task.domain()))
    assert not judge.screen.run(prompts, task.targets(prompts), task.candidates).decisive.any()
    check = check_program(Const(CLOSE_SQUARE), judge)
    assert check.by_screen == 0 and check.by_exact > 0
    exact = ExactModel(ckpt.config, weights_of(model))
    decided_square = sum(row.logits[CLOSE_SQUARE] > row.logits[CLOSE_CURLY]
                         for row in exact.run(task.domain()))
    assert (check.by_exact, check.disagreements) == (decided_square, 128 - decided_square)


def test_candidate_checks_as_units_on_ray_find_what_a_local_check_finds(circuits):
    """The same loop with its checks spread over two real Ray actors, 16 inputs a unit:
    the same candidates, counterexamples, program and evidence as on this process."""
    ckpt_dir, circuit_file = circuits["bracket_depth"]
    ckpt, circuit, task = load_checkpoint(ckpt_dir), load_circuit(circuit_file), \
        get_task("bracket_depth")
    here = distill(ckpt, circuit, task, batch=16)
    with embedded_ray():
        there = distill(ckpt, circuit, task, batch=16,
                        checker=ray_checker(ckpt, circuit, task, actors=2, unit=16))
    assert there.proved and here.proved and there.program == here.program
    assert there.examples == here.examples
    assert [(c.checked, c.by_screen, c.by_exact, c.disagreements) for c in there.checks] == \
        [(c.checked, c.by_screen, c.by_exact, c.disagreements) for c in here.checks]


def test_no_program_within_the_size_limit_is_reported_with_its_counterexamples(
        circuits, tmp_path, capsys):
    ckpt, circuit = circuits["bracket_depth"]
    out = tmp_path / "program.json"
    assert main(["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit), "--task",
                 "bracket_depth", "--max-size", "4", "--out", str(out), "--quiet"]) == 1
    assert "NOT FOUND: no program of size at most 4" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["status"] == "refuted" and record["claim"] is None
    assert record["evidence"]["disagreements"] > 0 and record["evidence"]["counterexamples"]
    assert all(cx["program"] != cx["circuit"] for cx in record["search"]["examples"])
    assert main(["distill", "--checkpoint", str(ckpt), "--circuit", str(circuit), "--task",
                 "bracket_depth", "--recheck", str(out)]) == 1
    assert "the record proves nothing: status refuted" in capsys.readouterr().out
