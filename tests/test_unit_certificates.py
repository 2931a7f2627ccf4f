"""Certificates by units: `farm verify --out` (screen route) → `farm certify` → `farm check`,
and every tamper of the new evidence named by the checker: a unit dropped, duplicated,
two overlapping, a range widened, a decision flipped, an entry that does not fold."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.cli import main
from farm.discovery.acdc import extract
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.tasks.registry import get_task
from farm.trust.signing import generate_keypair, sign_statement, verify_statement
from farm.trust.units import (
    UNITS_PREDICATE_TYPE,
    check_units_certificate,
    issue_units,
    read_units_sidecar,
    sidecar_bytes,
    units_sidecar_path,
)
from farm.units.evidence import TaskEvidence, from_decisions
from farm.units.verdict import UnitVerdict
from farm.verify.evaluate import Evaluator

FAMILY = "quote_close:len=6,fillers=8"  # 1,024 inputs
PROPS = ["functional_equivalence", "content_invariance", "edge_necessity"]


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory, trained) -> Path:
    """Checkpoint, circuit, keys; a certificate of 8 units of 128 inputs, issued from the
    evaluator's results."""
    root = tmp_path_factory.mktemp("units")
    ckpt = Checkpoint.from_model(trained.model.cpu())
    save_checkpoint(ckpt, root / "checkpoint")
    circuit = dataclasses.replace(extract(trained.model, "quote_close").circuit, task=FAMILY,
                                  metadata={})
    save_circuit(circuit, root / "circuit.json")
    generate_keypair(root / "key.pem", root / "key.pub")
    evaluator = Evaluator(ckpt, circuit, get_task(FAMILY), progress=False)
    results = [getattr(evaluator, p)().to_json() for p in PROPS]
    evidence = from_decisions(evaluator, unit_size=128)
    assert len(evidence.verdicts) == 8
    issue_units(root / "checkpoint", [evidence], results, root / "key.pem",
                root / "out" / "certificate.dsse.json")
    return root


def _cert(root: Path) -> Path:
    return root / "out" / "certificate.dsse.json"


def test_verify_certify_check_from_the_command_line(unit_dir, tmp_path, capsys):
    result, cert = tmp_path / "result.json", tmp_path / "c" / "certificate.dsse.json"
    assert main(["verify", "--checkpoint", str(unit_dir / "checkpoint"), "--circuit",
                 str(unit_dir / "circuit.json"), "--task", FAMILY, "--properties", *PROPS,
                 "--out", str(result), "--quiet"]) == 0
    assert json.loads(result.read_text())["units"][0]["size"] == 1024
    assert main(["certify", "--checkpoint", str(unit_dir / "checkpoint"), "--verify-result",
                 str(result), "--key", str(unit_dir / "key.pem"), "--out", str(cert)]) == 0
    assert units_sidecar_path(cert).is_file()
    capsys.readouterr()
    assert main(["check", str(cert), "--pubkey", str(unit_dir / "key.pub"),
                 "--require-verified"]) == 0
    out = capsys.readouterr().out
    assert "1 units covering 1,024 inputs exactly once" in out
    assert "taken on the signature alone" in out
    statement = verify_statement(json.loads(cert.read_text()), unit_dir / "key.pub",
                                 UNITS_PREDICATE_TYPE)
    assert "rows" not in statement["predicate"]  # no row per input


def test_an_honest_certificate_checks(unit_dir):
    report = check_units_certificate(_cert(unit_dir), unit_dir / "key.pub",
                                     require_verified=True)
    assert report.ok, report.problems
    assert report.rederived == {"units": 8, "inputs": 1024, "robustness queries": 0,
                                "witnesses": len(report.predicate["circuits"][0]["edges"])}


def _verdicts_of(root: Path, as_evidence: bool = False):
    verdicts = read_units_sidecar(units_sidecar_path(_cert(root)))
    if not as_evidence:
        return verdicts
    pred = verify_statement(json.loads(_cert(root).read_text()), root / "key.pub",
                                 UNITS_PREDICATE_TYPE)["predicate"]
    t = pred["tasks"][0]
    return TaskEvidence(t["name"], t["size"], t["domain_sha256"],
                        Circuit.from_json_dict(pred["circuits"][0]), tuple(verdicts))


def _resigned(root: Path, tmp_path: Path,
              verdicts: Callable[[list[UnitVerdict]], list[UnitVerdict]] = lambda v: v,
              predicate: Callable[[dict], None] = lambda p: None) -> Path:
    """A dishonest (or buggy) signer: the sidecar's unit records edited, the predicate
    edited, and both signed again with the right key."""
    statement = verify_statement(json.loads(_cert(root).read_text()), root / "key.pub",
                                 UNITS_PREDICATE_TYPE)
    pred, subject = copy.deepcopy(statement["predicate"]), statement["subject"]
    records = verdicts(_verdicts_of(root))
    evidence = dataclasses.replace(_verdicts_of(root, True), verdicts=tuple(records))
    data = sidecar_bytes([evidence])
    out = tmp_path / "certificate.dsse.json"
    units_sidecar_path(out).write_bytes(data)
    pred["units"]["records"] = len(records)
    predicate(pred)
    next(s for s in subject if s["name"] == pred["units"]["file"])["digest"]["sha256"] = \
        hashlib.sha256(data).hexdigest()
    pred["checkpoint"]["path"] = str(root / "checkpoint")
    out.write_text(json.dumps(sign_statement(pred, subject, root / "key.pem",
                                             UNITS_PREDICATE_TYPE)))
    return out


def _unit(i: int, **change):
    def edit(vs: list[UnitVerdict]) -> list[UnitVerdict]:
        vs = list(vs)
        vs[i] = dataclasses.replace(vs[i], unit=dataclasses.replace(vs[i].unit, **change))
        return vs
    return edit


def _flip_decision(vs: list[UnitVerdict]) -> list[UnitVerdict]:
    """One tally of unit 3 claims the other candidate: a screen decision flipped."""
    vs = list(vs)
    c = vs[3].classes[0]
    t = c.tallies[0]
    other = next(x for x in get_task(FAMILY).candidates if x != t.decision)
    flipped = dataclasses.replace(c, tallies=(dataclasses.replace(t, decision=other),
                                              *c.tallies[1:]))
    vs[3] = dataclasses.replace(vs[3], classes=(flipped, *vs[3].classes[1:]))
    return vs


def _screen_to_exact(vs: list[UnitVerdict]) -> list[UnitVerdict]:
    vs = list(vs)
    vs[5] = dataclasses.replace(vs[5], screen=vs[5].screen - 1, exact=vs[5].exact + 1)
    return vs


def _status(p: dict) -> None:
    next(e for e in p["properties"] if e["property"] == "content_invariance")["failing"] = 3


def _claim_for_another_task(p: dict) -> None:
    p["properties"].append({"property": "robustness", "task": "quote_close",
                            "status": "VERIFIED"})


def _fake_entry_first(p: dict) -> None:
    real = next(e for e in p["properties"] if e["property"] == "content_invariance")
    p["properties"].insert(0, {**real, "failing": 0, "status": "VERIFIED"})


TAMPERS = {
    "unit dropped": (lambda vs: vs[:2] + vs[3:], {}, "inputs [256, 384) are in no unit"),
    "unit duplicated": (lambda vs: vs + [vs[4]], {}, "unit [512, 640) is listed twice"),
    "units overlap": (_unit(2, start=250), {}, "unit [250, 384) overlaps the one before"),
    "range widened": (_unit(7, stop=1030), {}, "past the domain's 1024 inputs"),
    "decision flipped": (_flip_decision, {}, "unit [384, 512) re-derives differently (classes)"),
    "route flipped": (_screen_to_exact, {}, "re-derives differently (screen, exact)"),
    "entry edited": (lambda vs: vs, {"predicate": _status},
                     "content_invariance/" + FAMILY + ": the certificate's entry is not what"),
    "claim for an unlisted task": (lambda vs: vs, {"predicate": _claim_for_another_task},
                                   "robustness/quote_close: a property of a task the "
                                   "certificate does not list"),
    "entry listed twice": (lambda vs: vs, {"predicate": _fake_entry_first},
                           "content_invariance/" + FAMILY + ": listed twice"),
}


@pytest.mark.parametrize("case", list(TAMPERS))
def test_resigned_unit_tampering_is_named(unit_dir, tmp_path, case):
    edit, extra, message = TAMPERS[case]
    cert = _resigned(unit_dir, tmp_path, edit, **extra)
    report = check_units_certificate(cert, unit_dir / "key.pub")
    assert not report.ok
    assert any(message in p for p in report.problems), report.problems


def test_an_edited_sidecar_without_resigning_fails_its_subject(unit_dir, tmp_path):
    out = tmp_path / "certificate.dsse.json"
    shutil.copy(_cert(unit_dir), out)
    vs = _verdicts_of(unit_dir)
    evidence = dataclasses.replace(_verdicts_of(unit_dir, True), verdicts=tuple(vs[:-1]))
    units_sidecar_path(out).write_bytes(sidecar_bytes([evidence]))
    report = check_units_certificate(out, unit_dir / "key.pub", unit_dir / "checkpoint")
    assert any("is not the signed" in p for p in report.problems)


def test_a_circuit_with_extraction_metadata_checks(unit_dir, tmp_path):
    """An extracted circuit's metadata holds floats such as 1.0, which the signed (RFC 8785)
    predicate writes as 1: the circuit must still be the one its units name."""
    evidence = _verdicts_of(unit_dir, as_evidence=True)
    circuit = dataclasses.replace(evidence.circuit, metadata={
        "min_agreement": 1.0, "candidate_kl": 0.042, "exact_agreement": 1.0})
    evaluator = Evaluator(load_checkpoint(unit_dir / "checkpoint"), circuit, get_task(FAMILY),
                          progress=False)
    results = [getattr(evaluator, p)().to_json() for p in PROPS]
    cert = tmp_path / "certificate.dsse.json"
    issue_units(unit_dir / "checkpoint", [from_decisions(evaluator, unit_size=128)], results,
                unit_dir / "key.pem", cert)
    report = check_units_certificate(cert, unit_dir / "key.pub", unit_dir / "checkpoint")
    assert report.ok, report.problems
