"""Cube queries and cube-and-conquer (encoders.cube, farm.verify.cube, farm.verify.conquer).

What a user relies on: a cube query speaks exactly of every prompt of its cube (its
margin is the exact evaluator's, prompt by prompt), a cube with every position fixed
answers as today's concrete query, a SAT model names a real counterexample, and
`--route cube` decides every input once, with the verdicts of the screen route.
"""

import json
from fractions import Fraction

import pytest

import encoders.cube
import farm.verify.conquer
from encoders.cube import Hints, TooWide, cube_query, encode_cube
from encoders.properties import Claim, Planner
from encoders.smtlib import Query, and_, numeral
from encoders.solvers import SolverPool
from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.conquer import SplitPolicy, _Conqueror, cube_properties
from farm.verify.cube import Cube
from farm.verify.evaluate import Evaluator
from tests.conftest import random_model, weights_of
from tests.test_verify import QUOTE

BROKEN = QUOTE[0][:-1] + [("emb", "logits")]  # the opener never reaches the output


def quote_circuit(edges) -> Circuit:
    return Circuit(2, 1, "block", frozenset(edges), "quote_close")


@pytest.fixture(scope="module")
def pool():
    with SolverPool("race", timeout=120) as p:
        yield p


def test_a_cube_splits_into_exactly_its_prompts_and_round_trips_as_json():
    cube = Cube.of_domain(get_task("quote_close").domain())
    assert cube.size == 128 and cube.symbolic == (2, 3, 4, 5)
    parts = cube.split(3)
    assert [p.tokens[3] for p in parts] == [(9,), (10,)]
    prompts = {tuple(p) for part in parts for p in part.prompts().tolist()}
    assert prompts == set(get_task("quote_close").domain()) and len(prompts) == cube.size
    assert all(tuple(p) in part for part in parts for p in part.prompts().tolist())
    assert Cube.from_json(json.loads(json.dumps(cube.to_json()))) == cube
    with pytest.raises(FarmError, match="tokens"):
        Cube.from_json({"tokens": [[1], ["2"]]})
    with pytest.raises(FarmError, match="repeats"):
        Cube.of([[1], [5, 5]])
    with pytest.raises(FarmError, match="fixed"):
        parts[0].split(3)


def _margin_query(model: ExactModel, circuit: Circuit, cube: Cube) -> tuple[str, dict]:
    """The cube's run with its margin named m0, unasserted: a text to pin and ask."""
    q = Query()
    logits, token_vars, _ = encode_cube(q, model, circuit, cube.tokens, tag="c")
    q.define("m0", logits[9] - logits[10], model=True)
    return q.text().replace("(check-sat)\n", ""), dict(token_vars)


@pytest.mark.parametrize(("edges", "tokens"), [
    # layer 1 reads tables of two symbolic positions: selectors of pairs, symbolic
    # scores, sparsemax and BandNorm split over them
    (QUOTE[0], [[1], [2], [5, 6], [9], [5], [7, 8]]),
    (None, [[1], [2], [5], [9], [5], [7, 8]]),  # every node, MLPs included
], ids=["quote circuit", "full model"])
def test_the_encoding_is_the_exact_run_on_prompts_of_the_cube(edges, tokens, pool):
    """Pinned to one prompt of the cube, the query's margin can only be the exact one."""
    torch_model = random_model(seed=5)
    model = ExactModel(torch_model.cfg, weights_of(torch_model))
    circuit = quote_circuit(edges) if edges else Circuit.full(2)
    cube = Cube.of(tokens)
    text, token_vars = _margin_query(model, circuit, cube)
    runs = model.runs(circuit)
    for prompt in cube.prompts().tolist()[::3]:  # the cube's first and last prompts
        row = runs.row(prompt)
        pins = "".join(f"(assert (= {var} {prompt[p]}))\n" for p, var in token_vars.items())
        other = f"(assert (not (= m0 {numeral(row.logits[9] - row.logits[10])})))\n"
        assert pool.solve(text + pins + other + "(check-sat)\n").status == "unsat", prompt


def test_a_product_of_two_wide_factors_is_refused(monkeypatch):
    torch_model = random_model(seed=5)
    model = ExactModel(torch_model.cfg, weights_of(torch_model))
    monkeypatch.setattr(encoders.cube, "TABLE_LIMIT", 2)
    cube = Cube.of([[1], [2], [5, 6], [9], [5, 6], [7, 8]])
    with pytest.raises(TooWide, match="combinations"):
        cube_query(model, quote_circuit(QUOTE[0]), cube.tokens, (9, 10), Claim("decides", 1))


def test_a_fixed_cube_answers_as_the_concrete_query_and_sat_replays(trained, pool):
    """Every position fixed: the cube query's verdict is today's query's, on a true claim
    and a false one. With symbolic positions, a false claim's SAT model is a prompt of the
    cube whose exact margin breaks the claim."""
    ckpt = Checkpoint.from_model(trained.model)
    model = ExactModel(ckpt.config, ckpt.weights)
    circuit, task = quote_circuit(QUOTE[0]), get_task("quote_close")
    planner = Planner(model, circuit, task, "guided")
    concrete = next(iter(planner.functional_equivalence()))
    prompt = concrete.prompts[0]
    fixed = Cube.of([[t] for t in prompt])
    for claim in (concrete.claim, Claim("decides", -concrete.claim.sign)):
        asked = cube_query(model, circuit, fixed.tokens, task.candidates, claim)
        assert asked.hash != concrete.hash
        today = planner._decision_query("fe", "x", claim, [(circuit, prompt,
                                                             planner.results[0])])
        assert pool.solve(asked.text).status == pool.solve(today.text).status == (
            "unsat" if claim == concrete.claim else "sat")
    wide = fixed.fix(3, prompt[3])
    wide = Cube.of([ts if p != 5 else (5, 6, 7, 8) for p, ts in enumerate(wide.tokens)])
    wrong = cube_query(model, circuit, wide.tokens, task.candidates,
                       Claim("decides", -concrete.claim.sign))
    answer = pool.solve(wrong.text, wrong.model_vars)
    assert answer.status == "sat"
    found = wrong.prompt(answer.model)
    assert found in wide
    row = model.runs(circuit).row(found)
    assert not wrong.claim.holds([row.logits[9] - row.logits[10]])


def test_conquest_decides_every_input_once_with_the_screen_routes_verdicts(trained, pool):
    """A broken circuit (the opener never reaches the output): its margin reads the last
    token only, so cubes fixing it are proved or refuted at once; refuted cubes are split
    down to the screen. Every input is counted once, and the verdicts, failing counts and
    counterexamples are the screen route's."""
    ckpt = Checkpoint.from_model(trained.model)
    task = get_task("quote_close")
    ev = Evaluator(ckpt, quote_circuit(BROKEN), task, progress=False)
    screen = {"functional_equivalence": ev.functional_equivalence(),
              "content_invariance": ev.content_invariance()}
    policy = SplitPolicy(quick=60.0, leaf=1)
    results = cube_properties(ev, list(screen), pool, policy, progress=False)
    for result in results:
        expected = screen[result.property]
        assert result.status == expected.status
        assert result.failing == expected.failing
        assert sum(result.routes.values()) == len(task.domain())
        assert result.routes.get("cube", 0) > 0 and result.unsat > 0
        proved = [Cube.from_json(c["cube"]).size for c in result.cubes if c["how"] == "unsat"]
        assert sum(proved) == result.routes["cube"]
        assert len(result.cubes) == result.queries
        assert all(len(c["query_hash"]) == 64 for c in result.cubes)
    fe = results[0]
    assert fe.status == "FAILED" and fe.sat > 0
    assert any("counterexample" in p["subject"] for p in fe.problems)
    assert {tuple(c["prompts"][0]) for c in fe.counterexamples} == {
        tuple(c["prompts"][0]) for c in screen["functional_equivalence"].counterexamples}


def test_farm_verify_route_cube(tmp_path, trained, capsys):
    ckpt = Checkpoint.from_model(trained.model)
    save_checkpoint(ckpt, tmp_path / "ckpt")
    save_circuit(quote_circuit(QUOTE[0]), tmp_path / "circuit.json")
    code = main(["verify", "--checkpoint", str(tmp_path / "ckpt"), "--circuit",
                 str(tmp_path / "circuit.json"), "--task", "quote_close", "--route", "cube",
                 "--properties", "fe", "ci", "--cube-quick", "2", "--quiet", "--out",
                 str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["route"] == "cube"
    for result in report["results"]:
        assert result["status"] == "VERIFIED"
        assert sum(result["routes"].values()) == 128
    assert "decided by" in out


def test_the_cube_route_refuses_a_task_without_a_decisive_position(pool):
    spec = get_task("bracket_depth")
    ckpt = Checkpoint.from_model(random_model(seed=3, seq_len=spec.seq_len))
    ev = Evaluator(ckpt, Circuit.full(2, 1, "block", "bracket_depth"), spec, progress=False)
    with pytest.raises(FarmError, match="lookup task"):
        cube_properties(ev, ["functional_equivalence"], pool, progress=False)


def test_a_sat_model_outside_the_cube_is_an_error():
    torch_model = random_model(seed=5)
    model = ExactModel(torch_model.cfg, weights_of(torch_model))
    cube = Cube.of([[1], [2], [5], [9], [5], [7, 8]])
    asked = cube_query(model, quote_circuit(QUOTE[0]), cube.tokens, (9, 10), Claim("decides", 1))
    (var,) = asked.model_vars
    with pytest.raises(FarmError, match="encoding is wrong"):
        asked.prompt({var: Fraction(6)})


def test_hinted_settlement_is_exact_where_its_guards_hold_and_they_hold_on_hinted_prompts(
        pool):
    """Settling what the hints agree on may only cost guards: on a hinted prompt every
    guard holds and the margin is the exact one (the cube's other prompts take branches
    the hints did not, so some settled part really is a guess)."""
    torch_model = random_model(seed=5)
    model = ExactModel(torch_model.cfg, weights_of(torch_model))
    circuit = quote_circuit(QUOTE[0])
    cube = Cube.of([[1], [2], [5, 6], [9], [5], [7, 8]])
    runs = model.runs(circuit)
    hints = Hints.of(runs, cube.sample(1))
    q = Query()
    logits, token_vars, guards = encode_cube(q, model, circuit, cube.tokens, tag="c",
                                             hints=hints)
    assert guards, "the hints settle nothing: the test would not test settlement"
    q.define("m0", logits[9] - logits[10], model=True)
    text = q.text().replace("(check-sat)\n", "")
    hold = and_(*guards).text
    assert Hints.of(runs, cube.prompts().tolist()).seen != hints.seen  # some guess is a guess
    for prompt in hints.prompts:
        row = runs.row(prompt)
        pins = "".join(f"(assert (= {var} {prompt[p]}))\n" for p, var in token_vars)
        other = f"(assert (not (= m0 {numeral(row.logits[9] - row.logits[10])})))\n"
        assert pool.solve(f"{text}{pins}(assert (not {hold}))\n(check-sat)\n"
                          ).status == "unsat", prompt
        assert pool.solve(f"{text}{pins}(assert {hold})\n{other}(check-sat)\n"
                          ).status == "unsat", prompt


def test_a_prompt_the_hints_missed_is_learnt_and_its_cube_asked_again(trained, pool,
                                                                       monkeypatch):
    """One hint settles branches the cube's other prompts do not take: the query is SAT on
    a prompt that decides as claimed, which is learnt, and the cube is proved after."""
    ckpt = Checkpoint.from_model(trained.model)
    ev = Evaluator(ckpt, quote_circuit(QUOTE[0]), get_task("quote_close"), progress=False)
    cube = Cube.of([[1], [2], [5], [9], [5, 6, 7, 8], [5, 6, 7, 8]])
    runs = ev.runs(ev.circuit)
    first = Hints.of(runs, cube.sample(1))
    assert Hints.of(runs, cube.prompts().tolist()).seen != first.seen
    monkeypatch.setattr(encoders.cube, "TABLE_LIMIT", 64)
    monkeypatch.setattr(farm.verify.conquer, "HINTS", 1)
    conqueror = _Conqueror(ev, pool, SplitPolicy(quick=60.0, leaf=1))
    tally = conqueror.conquer([cube], lambda c: 9, "fe", progress=False)
    (outcome,) = tally.outcomes
    assert outcome.how == "unsat" and len(outcome.hints) > 1
    assert tally.statuses["missed"] >= 1 and tally.statuses["unsat"] == 1
    assert tally.statuses["sat"] == 0
    assert not tally.counterexamples
