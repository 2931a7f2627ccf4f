"""Robustness by units: the ball bound proves what it can, the solvers answer the rest
where the unit is decided (on a unit actor for `farm run`), every answer is recorded with
its query's hash, and `farm check` re-derives the bound, re-plans every query, replays
every counterexample and names every tamper.

The model is the trained paper-size one on `quote_close:len=5,fillers=4` (32 inputs, a
length it was not trained at): at ε = 1/20 the bound proves about half, and of the rest
the solvers prove some and refute the others (those it decides wrongly), so every route
is exercised in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import pytest
import ray

from actors.units import Robustness, run_units, start_unit_actors
from farm.cli import main
from farm.commands.run import certify, run_job
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.tasks.registry import get_task
from farm.trust.signing import generate_keypair
from farm.trust.units import _entry, check_units_certificate, issue_units
from farm.units.evidence import from_decisions
from farm.units.fold import fold_units
from farm.units.robustness import Answer, SolverAsk
from farm.units.unit import circuit_hash, split
from farm.units.verdict import UnitVerdict, decide_unit
from farm.verify.evaluate import Evaluator, evaluate_task
from farm.verify.jobs import job_spec_from_dict
from farm.verify.local import LocalFarm, VerifyOptions
from tests.conftest import embedded_ray
from tests.test_unit_actors import persisted
from tests.test_unit_certificates import _resigned
from tests.test_verify import QUOTE

FAMILY = "quote_close:len=5,fillers=4"  # 32 inputs
EPS = Fraction(1, 20)


@pytest.fixture(scope="module")
def ckpt(trained) -> Checkpoint:
    return Checkpoint.from_model(trained.model.cpu())


@pytest.fixture(scope="module")
def circuit() -> Circuit:
    return Circuit(2, 1, "block", frozenset(QUOTE[0]), FAMILY)


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory, ckpt, circuit) -> Path:
    """`farm verify --properties rob --out` and `farm certify`, from the command line."""
    root = tmp_path_factory.mktemp("robust_units")
    save_checkpoint(ckpt, root / "checkpoint")
    save_circuit(circuit, root / "circuit.json")
    generate_keypair(root / "key.pem", root / "key.pub")
    assert main(["verify", "--checkpoint", str(root / "checkpoint"), "--circuit",
                 str(root / "circuit.json"), "--task", FAMILY, "--properties", "fe", "rob",
                 "--epsilon", "0.05", "--quiet", "--out", str(root / "result.json")]) == 1
    assert main(["certify", "--checkpoint", str(root / "checkpoint"), "--verify-result",
                 str(root / "result.json"), "--key", str(root / "key.pem"), "--out",
                 str(root / "out" / "certificate.dsse.json")]) == 0
    return root


def _robustness(root: Path) -> dict:
    result = json.loads((root / "result.json").read_text())
    return next(r for r in result["results"] if r["property"] == "robustness")


def test_verify_records_every_route_per_unit(unit_dir):
    rob = _robustness(unit_dir)
    (unit,) = json.loads((unit_dir / "result.json").read_text())["units"][0]["verdicts"]
    part = unit["robustness"]
    outcomes = [a[1] for a in part["asked"]]
    assert part["epsilon"] == "1/20" and rob["epsilon"] == "1/20"
    assert 0 < part["bound"] < 32 and part["bound"] + len(outcomes) == 32
    assert {"proved", "counterexample"} <= set(outcomes)  # both, from the solvers
    assert rob["status"] == "FAILED" and rob["failing"] == outcomes.count("counterexample")
    assert rob["routes"] == {"screen": part["bound"], "solver": len(outcomes)}
    for _, outcome, answers, eta, _ in part["asked"]:
        assert all(len(h) == 64 for h, _, _ in answers)  # each query by its sha256
        assert (outcome == "counterexample") == bool(eta)


def test_check_rederives_the_bound_and_every_query(unit_dir, capsys):
    capsys.readouterr()
    cert = unit_dir / "out" / "certificate.dsse.json"
    assert main(["check", str(cert), "--pubkey", str(unit_dir / "key.pub")]) == 0
    out = capsys.readouterr().out
    asked = [a for a in json.loads((unit_dir / "result.json").read_text())["units"][0][
        "verdicts"][0]["robustness"]["asked"]]
    queries = sum(len(a[2]) for a in asked)
    assert f"{queries} robustness queries planned again (hash)" in out
    assert "robustness/" + FAMILY + " FAILED" in out
    assert main(["check", str(cert), "--pubkey", str(unit_dir / "key.pub"),
                 "--require-verified"]) == 1


def test_units_fold_to_what_the_evaluator_reports(ckpt, circuit):
    """Cut into 4 units, the folded robustness is the whole-domain result, entry for entry."""
    evaluator = Evaluator(ckpt, circuit, get_task(FAMILY), progress=False, epsilon=EPS)
    with LocalFarm("race", 60, jobs=1) as farm:
        (direct,) = evaluate_task(ckpt, circuit, get_task(FAMILY), ["robustness"],
                                  lambda: farm, options=VerifyOptions(epsilon=EPS,
                                                                      progress=False),
                                  evaluator=evaluator)
    evidence = from_decisions(evaluator, unit_size=8)
    (folded,) = fold_units(evaluator, evidence.verdicts, ["robustness"])
    assert len(evidence.verdicts) == 4
    assert _entry(folded.to_json()) == _entry(direct.to_json())
    assert (folded.queries, folded.unsat, folded.escalated) == (
        direct.queries, direct.unsat, direct.escalated)


def _asked_edit(edit):
    """`edit` the one unit's asked inputs (a list, in place; it returns how many more the
    bound is to claim, or None)."""
    def verdicts(vs: list[UnitVerdict]) -> list[UnitVerdict]:
        (v,) = vs
        asked = list(v.robustness.asked)
        more = edit(asked) or 0
        return [dataclasses.replace(v, robustness=dataclasses.replace(
            v.robustness, asked=tuple(asked), bound=v.robustness.bound + more))]
    return verdicts


def _first(asked, outcome):
    return next(k for k, a in enumerate(asked) if a.outcome == outcome)


def _refuted_stated_robust(asked):
    """A counterexample turned into a proof: its η dropped, its last answer unsat."""
    k = _first(asked, "counterexample")
    a = asked[k]
    answers = (*a.answers[:-1], dataclasses.replace(a.answers[-1], verdict="unsat"))
    asked[k] = dataclasses.replace(a, outcome="proved", answers=answers, eta=())


def _proof_stated_refuted(asked):
    """A proof turned into a counterexample with an η of the right length."""
    k = _first(asked, "proved")
    a = asked[k]
    eta = tuple("1/40" for _ in asked[_first(asked, "counterexample")].eta)
    asked[k] = dataclasses.replace(a, outcome="counterexample", eta=eta, answers=(
        dataclasses.replace(a.answers[0], verdict="sat"),))


def _hash_edited(asked):
    a = asked[0]
    asked[0] = dataclasses.replace(a, answers=(Answer("0" * 64, "unsat", "z3"),
                                               *a.answers[1:]))


def _counterexample_dropped(asked):
    del asked[_first(asked, "counterexample")]


def _bound_flipped(asked):
    """An input the solvers answered, claimed by the bound instead."""
    del asked[_first(asked, "proved")]
    return 1


TAMPERS = {
    "robustness decision flipped (refuted, stated robust)": (
        _refuted_stated_robust, "is stated robust, but it is refuted at η = 0"),
    "robustness decision flipped (robust, stated refuted)": (
        _proof_stated_refuted, "its counterexample does not replay"),
    "query hash edited": (_hash_edited, "its first query's hash is not that of the query "
                                        "planned again"),
    "counterexample dropped": (_counterexample_dropped,
                               "the ball bound re-derives differently"),
    "bound decision flipped": (_bound_flipped, "the ball bound re-derives differently"),
}


@pytest.mark.parametrize("case", list(TAMPERS))
def test_resigned_robustness_tampering_is_named(unit_dir, tmp_path, case):
    edit, message = TAMPERS[case]
    cert = _resigned(unit_dir, tmp_path, _asked_edit(edit))
    report = check_units_certificate(cert, unit_dir / "key.pub")
    assert not report.ok
    assert any(message in p for p in report.problems), report.problems


def test_an_entry_that_does_not_fold_is_named(unit_dir, tmp_path):
    def fewer(p: dict) -> None:
        next(e for e in p["properties"] if e["property"] == "robustness")["failing"] -= 1

    cert = _resigned(unit_dir, tmp_path, predicate=fewer)
    report = check_units_certificate(cert, unit_dir / "key.pub")
    assert any("robustness/" + FAMILY + ": the certificate's entry is not what its units "
               "fold to" in p for p in report.problems), report.problems


def test_a_claim_the_units_do_not_back_is_refused(unit_dir, ckpt, circuit, tmp_path):
    """Robustness claimed over units decided without it: nothing is signed."""
    evaluator = Evaluator(ckpt, circuit, get_task(FAMILY), progress=False)
    evidence = from_decisions(evaluator)
    with pytest.raises(FarmError, match="was decided without robustness"):
        issue_units(unit_dir / "checkpoint", [evidence], [_robustness(unit_dir)],
                    unit_dir / "key.pem", tmp_path / "c.dsse.json")
    assert not (tmp_path / "c.dsse.json").exists()


# ------------------------------------------------------------------ on a real local Ray


def test_unit_actors_decide_robustness_as_one_process_does(ckpt, circuit, tmp_path):
    """Units of 8 on 2 actors, their solvers racing on each actor, one actor killed with a
    unit in flight: the same verdicts, query hashes and outcomes as deciding the units in
    this process, each persisted once."""
    evaluator = Evaluator(ckpt, circuit, get_task(FAMILY), progress=False, epsilon=EPS)
    solvers = SolverAsk("race", 60)
    try:
        units = split(FAMILY, circuit_hash(circuit), 32, 8)
        here = [decide_unit(evaluator, u, solvers(evaluator)) for u in units]
    finally:
        solvers.close()
    with embedded_ray(resources={"solver": 2}):
        actors = start_unit_actors(ckpt, {FAMILY: circuit}, 2, Robustness(EPS, "race", 60))
        killed = []

        def kill_once(shard, report):
            if not killed:
                killed.append(actors.workers[0])
                ray.kill(actors.workers[0], no_restart=False)

        try:
            run = run_units(actors, {FAMILY: circuit}, tmp_path, 8, on_done=kill_once)
        finally:
            actors.kill()
    assert killed
    keys = persisted(tmp_path)
    assert sorted(keys) == sorted(set(keys)) == sorted(u.key for u in units)

    def comparable(v: UnitVerdict) -> UnitVerdict:
        rob = dataclasses.replace(v.robustness, asked=tuple(
            dataclasses.replace(a, eta=(), answers=tuple(
                dataclasses.replace(x, winner=None) for x in a.answers))
            for a in v.robustness.asked))  # which solver won a race (and its η) may differ
        return dataclasses.replace(v, seconds=0.0, robustness=rob)

    assert [comparable(v) for v in run.verdicts[FAMILY]] == [comparable(v) for v in here]
    assert sum(len(a.answers) for v in here for a in v.robustness.asked) > 0


def test_farm_run_certifies_robustness_of_a_family_task(ckpt, circuit, tmp_path):
    save_checkpoint(ckpt, tmp_path / "checkpoint")
    save_circuit(circuit, tmp_path / "circuit.json")
    spec = job_spec_from_dict({
        "name": "robust", "checkpoint": "checkpoint", "tasks": [FAMILY],
        "circuits": {FAMILY: "circuit.json"}, "properties": ["fe", "rob"],
        "epsilon": "1/20", "solver_actors": 2, "unit_size": 8, "out": "out"}, tmp_path)
    with embedded_ray(resources={"solver": 2}):
        result = run_job(spec, progress=False, log=lambda line: None)
    (out := Path(spec.out)).joinpath("result.json").write_text(
        json.dumps(result.to_json(), default=str))
    rob = next(r for r in result.results if r.property == "robustness")
    assert rob.status == "FAILED" and rob.epsilon == "1/20" and rob.queries > 0
    assert set(rob.routes) == {"screen", "solver"} and sum(rob.routes.values()) == 32
    assert len(list((out / "units").glob("*/eps-1-20/part-*.json"))) == 4
    certificate, public_key = certify(spec, out)
    report = check_units_certificate(certificate, public_key)
    assert report.ok, report.problems
    assert report.rederived["robustness queries"] == rob.queries
