"""Certificates: a real one is accepted; every tampering is rejected with its name.

The certificate is issued for a trained checkpoint and real `farm.verify.local` results
(functional equivalence of the full circuit on quote_close). Predicate-level
tampering is re-signed with the right key, so the Python re-check, not the
signature, has to catch it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.metadata
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import load_file, save_file

from encoders.cache import ResultCache
from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    Planner,
)
from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.trust.binding import claim_problems
from farm.trust.certificate import (
    check_certificate,
    fingerprint,
    lean_check,
    lean_export_for,
    lean_status,
    property_entry,
    read_sidecar,
    sidecar_bytes,
    sidecar_path,
)
from farm.trust.lean_export import TASK_IDS, render_module
from farm.trust.signing import generate_keypair, sign_statement, verify_statement
from farm.verify.local import LocalFarm, QueryRecord, VerifyOptions, fold, judge, plan_property

TASK = "quote_close"


@pytest.fixture(scope="module")
def farm_dir(tmp_path_factory, trained, request) -> Path:
    """Checkpoint, keys, a real verify result (with per-query records) and the certificate.

    Answers persist in pytest's cache by query hash (content-addressed, so a rerun on
    the same checkpoint reuses exactly the answers to exactly these queries).
    """
    root = tmp_path_factory.mktemp("cert")
    ckpt = Checkpoint.from_model(trained.model.cpu())
    save_checkpoint(ckpt, root / "checkpoint")
    generate_keypair(root / "key.pem", root / "key.pub")
    generate_keypair(root / "other.pem", root / "other.pub")
    model = ExactModel(ckpt.config, ckpt.weights)
    circuit = Circuit.full(ckpt.config.n_layers, ckpt.config.n_heads, "block", TASK)
    planner = Planner(model, circuit, get_task(TASK))
    source, findings, _ = plan_property(planner, FUNCTIONAL_EQUIVALENCE,
                                        VerifyOptions(progress=False))
    queries = list(source)
    with LocalFarm("z3", jobs=2) as farm:  # z3 is the faster solver on these queries
        records = farm.solve(queries, ResultCache(request.config.cache.mkdir("farm-results")))
    judged = [(q, records[q.hash], judge(q, records[q.hash], model)) for q in queries]
    result = fold(FUNCTIONAL_EQUIVALENCE, TASK, judged, findings)
    entry = result.to_json()
    (root / "result.json").write_text(json.dumps(
        {"checkpoint_sha256": ckpt.sha256, "circuit": circuit.to_json_dict(), "task": TASK,
         "results": [entry]}))
    assert main(["certify", "--checkpoint", str(root / "checkpoint"), "--verify-result",
                 str(root / "result.json"), "--key", str(root / "key.pem"), "--out",
                 str(root / "out" / "certificate.dsse.json")]) == 0
    return root


def _cert(root: Path) -> Path:
    return root / "out" / "certificate.dsse.json"


def _statement(root: Path) -> dict[str, Any]:
    return verify_statement(json.loads(_cert(root).read_text()), root / "key.pub")


def _resigned(root: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None],
              subjects: Callable[[list[dict[str, Any]]], None] = lambda s: None,
              records: list[QueryRecord] | None = None) -> Path:
    """A copy of the certificate with its predicate edited and signed again with the right key;
    `records` replace the sidecar's (its hash and count stated as a dishonest signer would)."""
    statement = _statement(root)
    predicate, subject = copy.deepcopy(statement["predicate"]), statement["subject"]
    edit(predicate)
    subjects(subject)
    out = tmp_path / "certificate.dsse.json"
    if records is None:
        shutil.copy(sidecar_path(_cert(root)), sidecar_path(out))
    else:
        data = sidecar_bytes(records)
        sidecar_path(out).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        predicate["queries"] = {"sha256": sha, "records": len(records)}
        next(s for s in subject if s["name"] == sidecar_path(out).name)["digest"]["sha256"] = sha
    out.write_text(json.dumps(sign_statement(predicate, subject, root / "key.pem")))
    return out


def _problems(root: Path, cert: Path, checkpoint: Path | None = None) -> str:
    report = check_certificate(cert, root / "key.pub", checkpoint or root / "checkpoint")
    assert not report.ok
    return "\n".join(report.problems)


# --------------------------------------------------------------------------- accepted


def test_a_real_certificate_is_accepted(farm_dir: Path, capsys) -> None:
    cert = str(_cert(farm_dir))
    assert main(["check", cert, "--pubkey", str(farm_dir / "key.pub"), "--checkpoint",
                 str(farm_dir / "checkpoint")]) == 0
    assert main(["check", cert, "--pubkey", str(farm_dir / "key.pub")]) == 0  # recorded path
    out = capsys.readouterr().out
    assert "OK" in out and "256 rows" in out
    assert "functional_equivalence/quote_close VERIFIED" in out
    for tool, dist in (("z3", "z3-solver"), ("cvc5", "cvc5"), ("ray", "ray")):  # made with
        assert f"{tool} {importlib.metadata.version(dist)}" in out
    assert main(["check", cert, "--pubkey", str(farm_dir / "key.pub"), "--require-lean"]) == 1
    assert "the Lean check is required but its outcome is 'not run" in capsys.readouterr().out


def test_certificate_states_what_the_schema_promises(farm_dir: Path) -> None:
    statement = _statement(farm_dir)
    pred = statement["predicate"]
    ckpt = load_checkpoint(farm_dir / "checkpoint")
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    sidecar = sidecar_path(_cert(farm_dir))
    assert subjects == {"model.safetensors": ckpt.sha256,
                        sidecar.name: hashlib.sha256(sidecar.read_bytes()).hexdigest()}
    assert pred["checkpoint"] == {"file": "model.safetensors", "sha256": ckpt.sha256,
                                  "path": "../checkpoint"}
    assert pred["model"]["parameters"] == ckpt.num_parameters()
    assert [t["name"] for t in pred["model"]["tensors"]] == list(ckpt.weights)
    assert pred["model"]["operators"]["half_low"] == "22/5"
    assert len(pred["rows"]) == 256 and [r["index"] for r in pred["rows"]] == list(range(256))
    assert all(re.fullmatch(r"\d+/\d+", r["margin"]) for r in pred["rows"])
    assert [t["candidates"] for t in pred["tasks"]] == [[9, 10], [13, 14]]
    (prop,) = pred["properties"]
    assert (prop["status"], prop["counts"]["instances"], prop["counts"]["unsat"]) == \
        ("VERIFIED", 128, 128)
    assert pred["queries"]["records"] == 128
    assert set(pred["software"]) >= {"python", "z3", "cvc5", "ray", "torch", "farm_git_revision"}
    assert pred["created_at"].endswith("Z")
    assert pred["lean"]["outcome"] == "not run: no Lean toolchain" or pred["lean"]["status"] == "ok"
    assert pred["lean"]["certificate_fingerprint"] == fingerprint(pred)


def test_generated_lean_module_holds_every_row_and_both_fingerprints(farm_dir: Path) -> None:
    pred = _statement(farm_dir)["predicate"]
    export = lean_export_for(pred, load_checkpoint(farm_dir / "checkpoint"))
    text = render_module(export)
    for row in pred["rows"]:
        n, d = row["margin"].split("/")
        assert (f"⟨{row['index']}, {TASK_IDS[row['task']]}, [{', '.join(map(str, row['prompt']))}"
                f"], {row['target']}, {row['alternate']}, ⟨{n}, {d}⟩⟩") in text
    assert f'def checkpointSha256 : String := "{pred["checkpoint"]["sha256"]}"' in text
    assert f'def certificateFingerprint : String := "{fingerprint(pred)}"' in text
    assert "⟨0, 0, .verified, 128, 0, 0⟩" in text  # functional equivalence, quote_close
    assert f"FarmCert.Generated.{export.name}" == pred["lean"]["module"]


def test_lean_check_without_a_toolchain_is_not_run(farm_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    pred = _statement(farm_dir)["predicate"]
    outcome = lean_check(lean_export_for(pred, load_checkpoint(farm_dir / "checkpoint")))
    assert outcome.status == "not run"


# --------------------------------------------------------------------------- tampering


def _row(i: int, **change: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: p["rows"][i].update(change)


def _flip_sign(p: dict[str, Any]) -> None:
    p["rows"][5]["margin"] = "-" + p["rows"][5]["margin"]
    p["rows"][5]["margin_float"] = -p["rows"][5]["margin_float"]


def _swap(p: dict[str, Any]) -> None:
    row = p["rows"][2]  # opener 9: target 9, alternate 10
    row["target"], row["alternate"] = row["alternate"], row["target"]


def _rename_tensor(p: dict[str, Any]) -> None:
    p["model"]["tensors"][0]["name"] = "wte.weights"


def _count(p: dict[str, Any]) -> None:
    p["properties"][0]["counts"]["unsat"] -= 1


PREDICATE_TAMPERING = {
    "flipped margin sign": (_flip_sign, r"row 5: margin -\d+/\d+ is not positive"),
    "dropped row": (lambda p: p["rows"].pop(17), r"row index 17 is missing \(dropped row\)"),
    "duplicated row": (lambda p: p["rows"].insert(18, p["rows"][17]),
                       r"row index 17 appears 2 times \(duplicated row\)"),
    "swapped target/alternate": (_swap, r"row 2: target is 10, expected 9"),
    "wrong candidate token": (lambda p: p["tasks"][0].update(candidates=[9, 11]),
                              r"tasks: quote_close candidates is \[9, 11\], the task defines "
                              r"\[9, 10\]"),
    "wrong alternate token": (_row(0, alternate=11), r"row 0: alternate is 11, expected 10"),
    "changed margin": (_row(7, margin="1/1", margin_float=1.0),
                       r"row 7: margin 1/1 differs from the exact replay"),
    "renamed tensor": (_rename_tensor, r"tensor 'wte.weights' is not in the checkpoint"),
    "changed property count": (_count, r"unsat count 127, but 128 query records say unsat"),
    "status not backed by counts": (lambda p: p["properties"][0].update(status="UNKNOWN"),
                                    r"status 'UNKNOWN', but the counts make it VERIFIED"),
    "changed parameter count": (lambda p: p["model"].update(parameters=1),
                                r"model: parameters is 1, the checkpoint has"),
    "changed minimum margin as a float": (lambda p: p["replay"].update(min_margin_float=42.0),
                                          r"replay: min_margin_float 42 is not the exact"),
    "mean-ablation circuit": (lambda p: p["circuits"][0].update(ablation="mean"),
                              r"circuit 0 was extracted under mean ablation"),
}


@pytest.mark.parametrize("case", PREDICATE_TAMPERING)
def test_resigned_predicate_tampering_is_named(farm_dir: Path, tmp_path: Path, case: str) -> None:
    edit, message = PREDICATE_TAMPERING[case]
    assert re.search(message, _problems(farm_dir, _resigned(farm_dir, tmp_path, edit)))


def test_every_edit_breaks_the_lean_fingerprint(farm_dir: Path, tmp_path: Path) -> None:
    cert = _resigned(farm_dir, tmp_path, _row(7, margin_float=0.5))
    assert "lean: the Lean module was generated for certificate" in _problems(farm_dir, cert)


def _other_checkpoint(root: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """A self-consistent checkpoint directory (its config records its own hash) with `edit`."""
    dst = tmp_path / "tampered"
    dst.mkdir()
    tensors = load_file(root / "checkpoint" / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    config = json.loads((root / "checkpoint" / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256((dst / "model.safetensors").read_bytes()).hexdigest()
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("edit", [
    lambda t: t["blocks.1.mlp.up.weight"].__setitem__((3, 4), t["blocks.1.mlp.up.weight"][3, 4]
                                                       + 0.125),
    lambda t: t.__setitem__("wte.renamed", t.pop("wte.weight")),
], ids=["modified weight", "renamed tensor"])
def test_a_tampered_checkpoint_is_named_by_its_fingerprint(farm_dir: Path, tmp_path: Path,
                                                          edit, capsys) -> None:
    bad = _other_checkpoint(farm_dir, tmp_path, edit)
    assert main(["check", str(_cert(farm_dir)), "--pubkey", str(farm_dir / "key.pub"),
                 "--checkpoint", str(bad)]) == 1
    assert re.search(rf"checkpoint: {re.escape(str(bad))}/model.safetensors has SHA-256 "
                     r"[0-9a-f]{64}, the certificate is for", capsys.readouterr().out)


def test_a_stale_checkpoint_hash_is_named(farm_dir: Path, tmp_path: Path) -> None:
    """Certificate and subject consistently name an older checkpoint than the one given."""
    stale = "0" * 64
    cert = _resigned(farm_dir, tmp_path, lambda p: p["checkpoint"].update(sha256=stale),
                     lambda s: s[0]["digest"].update(sha256=stale))
    assert re.search(r"model.safetensors has SHA-256 [0-9a-f]{64}, the certificate is for 0{64}",
                     _problems(farm_dir, cert))


def test_a_subject_that_disagrees_with_the_certificate_is_named(farm_dir: Path,
                                                                tmp_path: Path) -> None:
    cert = _resigned(farm_dir, tmp_path, lambda p: None,
                     lambda s: s[0]["digest"].update(sha256="1" * 64))
    assert "its DSSE subject model.safetensors 1111" in _problems(farm_dir, cert)


def test_edited_query_records_are_caught_by_the_sidecar_hash(farm_dir: Path,
                                                              tmp_path: Path) -> None:
    cert = _resigned(farm_dir, tmp_path, lambda p: None)
    sidecar = sidecar_path(cert)
    data = bytearray(sidecar.read_bytes())
    data[len(data) // 2] ^= 1
    sidecar.write_bytes(bytes(data))
    assert re.search(r"query records: .* has SHA-256 [0-9a-f]{64}, the certificate states",
                     _problems(farm_dir, cert))


# --------------------------------------------------------------------------- signatures, bad input


def test_an_edit_without_resigning_fails_the_signature(farm_dir: Path, tmp_path: Path,
                                                       capsys) -> None:
    envelope = json.loads(_cert(farm_dir).read_text())
    body = base64.b64decode(envelope["payload"]).replace(b'"status":"VERIFIED"',
                                                         b'"status":"FAILED"', 1)
    envelope["payload"] = base64.b64encode(body).decode()
    cert = tmp_path / "certificate.dsse.json"
    cert.write_text(json.dumps(envelope))
    assert main(["check", str(cert), "--pubkey", str(farm_dir / "key.pub"), "--checkpoint",
                 str(farm_dir / "checkpoint")]) == 2
    assert "bad signature" in capsys.readouterr().err


def test_a_signature_by_another_key_is_rejected(farm_dir: Path, tmp_path: Path, capsys) -> None:
    statement = _statement(farm_dir)
    cert = tmp_path / "certificate.dsse.json"
    cert.write_text(json.dumps(sign_statement(statement["predicate"], statement["subject"],
                                              farm_dir / "other.pem")))
    assert main(["check", str(cert), "--pubkey", str(farm_dir / "key.pub")]) == 2
    assert "signed by another key" in capsys.readouterr().err
    assert main(["check", str(_cert(farm_dir)), "--pubkey", str(farm_dir / "other.pub")]) == 2
    assert "signed by another key" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (lambda text: text[: len(text) // 2], "is not JSON (truncated?)"),
    (lambda text: "certificate, honest", "is not JSON"),
    (lambda text: "[]", "malformed envelope"),
])
def test_unreadable_certificates_fail_clearly(farm_dir: Path, tmp_path: Path, content, message,
                                              capsys) -> None:
    cert = tmp_path / "certificate.dsse.json"
    cert.write_text(content(_cert(farm_dir).read_text()))
    assert main(["check", str(cert), "--pubkey", str(farm_dir / "key.pub")]) == 2
    assert message in capsys.readouterr().err


def test_missing_files_and_wrong_keys_fail_clearly(farm_dir: Path, tmp_path: Path,
                                                   capsys) -> None:
    cert, pub = str(_cert(farm_dir)), str(farm_dir / "key.pub")
    cases = [
        (["check", cert, "--pubkey", pub, "--checkpoint", str(tmp_path / "gone")],
         "checkpoint directory .*gone does not exist"),
        (["check", str(tmp_path / "absent.json"), "--pubkey", pub], "does not exist"),
        (["check", cert, "--pubkey", str(farm_dir / "key.pem")], "is not a PEM public key"),
        (["check", cert, "--pubkey", str(tmp_path / "nokey.pub")], "cannot read public key"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert re.search(message, capsys.readouterr().err), argv


def test_a_malformed_but_signed_predicate_is_rejected(farm_dir: Path, tmp_path: Path) -> None:
    cert = _resigned(farm_dir, tmp_path, lambda p: p.update(rows="all of them"))
    assert "rows: must be a list of objects" in _problems(farm_dir, cert)
    cert = _resigned(farm_dir, tmp_path, lambda p: p.update(checkpoint="somewhere"))
    with pytest.raises(FarmError, match="malformed certificate"):
        check_certificate(cert, farm_dir / "key.pub", farm_dir / "checkpoint")


def _drop_an_edge(circuit: dict[str, Any]) -> None:
    circuit["edges"].pop()
    circuit["num_edges"] -= 1


def _certify_edited(farm_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]
                    ) -> int:
    """farm certify on a copy of the fixture's verify result, edited, into tmp_path."""
    data = json.loads((farm_dir / "result.json").read_text())
    edit(data)
    (tmp_path / "r.json").write_text(json.dumps(data))
    return main(["certify", "--checkpoint", str(farm_dir / "checkpoint"), "--verify-result",
                 str(tmp_path / "r.json"), "--key", str(farm_dir / "key.pem"), "--out",
                 str(tmp_path / "c.dsse.json")])


def test_answers_about_another_circuit_certify_nothing(farm_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    """The records' hashes are the queries of the certified circuit, planned again: an
    edited circuit (in the result before certify, or re-signed after) is refused."""
    assert _certify_edited(farm_dir, tmp_path, lambda d: _drop_an_edge(d["circuit"])) == 2
    assert ("128 unsat record(s) are not the query their subject names for this circuit"
            in capsys.readouterr().err)
    assert not list(tmp_path.glob("c.*"))
    cert = _resigned(farm_dir, tmp_path, lambda p: _drop_an_edge(p["circuits"][0]))
    assert "are not the query their subject names" in _problems(farm_dir, cert)


def test_a_verified_property_needs_a_record_for_every_instance_of_its_plan(
        farm_dir: Path, tmp_path: Path, capsys) -> None:
    """Counts are not coverage: input 3's answer given twice, input 5's left out, with
    every count unchanged, certifies nothing."""
    def answer_input_3_twice(data: dict[str, Any]) -> None:
        records = data["results"][0]["query_records"]
        records[5] = records[3]

    assert _certify_edited(farm_dir, tmp_path, answer_input_3_twice) == 2
    assert ("VERIFIED, but 1 instance(s) of its plan have no unsat record (first: 'input 5 "
            in capsys.readouterr().err)
    assert not list(tmp_path.glob("c.*"))


def test_require_verified_refuses_a_faithful_certificate_of_an_unknown(
        farm_dir: Path, tmp_path: Path, capsys) -> None:
    """A certificate may faithfully state that a query timed out; only the gate refuses it."""
    def input_0_timed_out(data: dict[str, Any]) -> None:
        entry = data["results"][0]
        entry["query_records"][0].update(verdict="unknown", winner=None,
                                         reason="timeout after 0.001 s")
        entry.update(status="UNKNOWN", unsat=entry["unsat"] - 1, unknown=1)

    assert _certify_edited(farm_dir, tmp_path, input_0_timed_out) == 0
    cert, key = str(tmp_path / "c.dsse.json"), str(farm_dir / "key.pub")
    capsys.readouterr()
    assert main(["check", cert, "--pubkey", key]) == 0
    assert "functional_equivalence/quote_close UNKNOWN" in capsys.readouterr().out
    assert main(["check", cert, "--pubkey", key, "--require-verified"]) == 1
    assert ("functional_equivalence/quote_close: VERIFIED is required but it is UNKNOWN"
            in capsys.readouterr().out)
    assert main(["check", str(_cert(farm_dir)), "--pubkey", key, "--require-verified"]) == 0


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["results"].append(3), "each of 'results' must be an object"),
    (lambda d: d["results"][0]["query_records"][0].update(verdict=1),
     "a query record's property, task, subject, query_hash, verdict, reason must be text"),
])
def test_certify_refuses_malformed_results_by_name(farm_dir: Path, tmp_path: Path, capsys,
                                                   edit, message) -> None:
    assert _certify_edited(farm_dir, tmp_path, edit) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_missing_verify_result_is_named_as_one(farm_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["certify", "--checkpoint", str(farm_dir / "checkpoint"), "--verify-result",
                 str(tmp_path / "none.json"), "--key", str(farm_dir / "key.pem"), "--out",
                 str(tmp_path / "c.dsse.json")]) == 2
    assert f"verify result {tmp_path / 'none.json'} does not exist" in capsys.readouterr().err


def test_certify_refuses_results_without_query_records(farm_dir: Path, tmp_path: Path,
                                                       capsys) -> None:
    assert _certify_edited(farm_dir, tmp_path,
                           lambda d: d["results"][0].pop("query_records")) == 2
    assert "no per-query records" in capsys.readouterr().err
    assert not (tmp_path / "c.dsse.json").exists()


# --------------------------------------------------------------------------- counting rules


def _robustness(**change: Any) -> dict[str, Any]:
    """A robustness result as `farm.verify.local.fold` reports it: 2 inputs escalated to full."""
    return {"property": "robustness", "task": TASK, "status": "VERIFIED", "queries": 130,
            "escalated": 2, "unsat": 128, "sat": 2, "unknown": 0, "errors": 0, "cached": 0,
            "counterexamples": [], "problems": [], "wins": {}, "solver_seconds": {},
            "seconds": 0.0, "epsilon": "1/100"} | change


def _records(verdicts: dict[str, int], epsilon: str = "1/100") -> list[QueryRecord]:
    return [QueryRecord("robustness", TASK, f"input {i} [1, 2] eps {epsilon} guided", "ab" * 32,
                        v, "cvc5", None, 1.0, "") for v, n in verdicts.items() for i in range(n)]


def test_robustness_is_certified_with_the_epsilon_its_queries_were_planned_for() -> None:
    records = _records({"unsat": 128, "sat": 2})
    assert property_entry(_robustness(), records, 128, 15)["epsilon"] == "1/100"
    with pytest.raises(FarmError, match="needs the ε it was proved at"):
        property_entry(_robustness(epsilon=None), records, 128, 15)
    with pytest.raises(FarmError, match=r"130 query record\(s\) are not at ε = 1/100"):
        property_entry(_robustness(), _records({"unsat": 128, "sat": 2}, "1/1000000"), 128, 15)


def test_escalated_queries_re_ask_inputs_and_add_no_instances() -> None:
    entry = property_entry(_robustness(), _records({"unsat": 128, "sat": 2}), 128, 15)
    assert entry["counts"]["instances"] == 128
    assert lean_status(entry) == ("verified", {"verified": 128, "falsified": 0, "unknown": 0})
    failed = property_entry(_robustness(status="FAILED", unsat=127, sat=3,
                                        counterexamples=[{"subject": "input 5"}]),
                            _records({"unsat": 127, "sat": 3}), 128, 15)
    assert lean_status(failed) == ("falsified", {"verified": 127, "falsified": 1, "unknown": 0})
    with pytest.raises(FarmError, match="VERIFIED needs every one of 128 instances"):
        property_entry(_robustness(queries=129, sat=1), _records({"unsat": 128, "sat": 1}),
                       128, 15)
    with pytest.raises(FarmError, match="status 'VERIFIED', but the counts make it ERROR"):
        property_entry(_robustness(errors=1, unsat=127, sat=2, unknown=0),
                       _records({"unsat": 127, "sat": 2, "error": 1}), 128, 15)


# --------------------------------------------------------------------------- coverage


def _entry(prop: str, instances: int, status: str = "VERIFIED", **change: Any
           ) -> dict[str, Any]:
    """A property entry in certificate form, as the binding reads it."""
    return {"property": prop, "task": TASK, "status": status, "epsilon": "1/100",
            "counts": {"instances": instances, "errors": 0}, "counterexamples": []} | change


def _unsat(queries) -> list[QueryRecord]:
    return [QueryRecord(q.property, q.task, q.subject, q.hash, "unsat", "z3", 0.1, None, "")
            for q in queries]


def test_each_instance_of_a_plan_needs_its_own_record(farm_dir: Path) -> None:
    """Planned queries taken as answered (no solver): an instance proved twice in the
    place of another (a robustness input first asked and asked again, a second witness
    of one edge, a pair instead of an anchor's member) leaves that other one unproved."""
    ckpt = load_checkpoint(farm_dir / "checkpoint")
    circuit = Circuit.full(2, 1, "block", TASK)
    p = Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task(TASK))
    eps = Fraction(1, 100)
    rob = _unsat(p.robustness_query(i, eps) for i in range(len(p.prompts)))
    witnessed, findings = p.edge_necessity()  # the full circuit: most edges have no witness
    en = _unsat(witnessed)
    stated = [_entry("robustness", len(rob)), _entry("content_invariance", 128),
              _entry("edge_necessity", len(circuit.edges), "FAILED", counterexamples=[
                  {"subject": f.subject, "reason": f.detail} for f in findings])]
    ci = _unsat(p.content_invariance())
    assert claim_problems(ckpt, {TASK: circuit}, stated, rob + en + ci) == []
    counts = Counter(r.query_hash for r in rob)  # prompts a circuit cannot tell apart
    i = next(i for i, r in enumerate(rob) if counts[r.query_hash] == 1)  # share a text
    rob[i] = _unsat([p.robustness_query(i + 1, eps, encoding="full")])[0]
    ci[-1] = _unsat([p.pair_query(2, 0)])[0]  # true, but not a query of the plan
    problems = "\n".join(claim_problems(ckpt, {TASK: circuit}, stated, rob + en + ci))
    assert "robustness/quote_close: VERIFIED, but 1 instance(s) of its plan have no unsat " \
           f"record (first: 'input {i}')" in problems
    assert "content_invariance/quote_close: 1 unsat record(s) are not the query their " \
           "subject names" in problems  # 2~0: no plan asks that pair
    problems = "\n".join(claim_problems(ckpt, {TASK: circuit}, stated, ci[:-1]))
    assert "content_invariance/quote_close: VERIFIED, but 1 instance(s)" in problems
    stated[2] = _entry("edge_necessity", len(circuit.edges))  # VERIFIED: one edge proved
    assert f"edge_necessity/quote_close: VERIFIED, but {len(findings)} instance(s)" in "\n".join(
        claim_problems(ckpt, {TASK: circuit}, stated, en))
    rob[i] = replace(rob[3], subject=rob[3].subject.replace("eps 1/100", "eps 2/200"))
    assert "1 unsat record(s) are not the query their subject names" in "\n".join(
        claim_problems(ckpt, {TASK: circuit}, stated, rob))


# --------------------------------------------------------------------------- a dishonest signer


def _planner(root: Path, circuit: Circuit | None = None) -> tuple[Checkpoint, Planner]:
    ckpt = load_checkpoint(root / "checkpoint")
    circuit = circuit or Circuit.full(ckpt.config.n_layers, ckpt.config.n_heads, "block", TASK)
    return ckpt, Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task(TASK))


def _records_of(root: Path) -> list[QueryRecord]:
    return read_sidecar(sidecar_path(_cert(root)))


def test_a_false_verified_is_refuted_by_exact_evaluation(farm_dir: Path, tmp_path: Path) -> None:
    """Defect 1: a circuit with no edge into the logits, its planned queries all recorded
    unsat and re-signed: exact evaluation refutes its claims."""
    swapped = Circuit(2, 1, "block", frozenset({("emb", "attn_0")}), TASK)
    _, planner = _planner(farm_dir, swapped)
    records = _unsat(planner.functional_equivalence())

    def swap(p: dict[str, Any]) -> None:
        p["circuits"][0] = swapped.to_json_dict()

    cert = _resigned(farm_dir, tmp_path, swap, records=records)
    assert re.search(r"functional_equivalence/quote_close: \d+ unsat record\(s\) answer claims "
                     r"that exact evaluation refutes", _problems(farm_dir, cert))


def _failed_fe(counterexample: Any) -> tuple[Callable[[dict[str, Any]], None],
                                             list[QueryRecord]]:
    """Input 3 made a counterexample: its record sat, the counts and status to match."""
    def edit(p: dict[str, Any]) -> None:
        entry = p["properties"][0]
        entry.update(status="FAILED", counterexamples=[counterexample])
        entry["counts"].update(unsat=127, sat=1, counterexamples=1)
    return edit, []


@pytest.mark.parametrize("made_up", ["margin", "garbage"])
def test_a_made_up_counterexample_does_not_replay(farm_dir: Path, tmp_path: Path,
                                                  made_up: str) -> None:
    """Defect 2: a FAILED property whose counterexample no input has."""
    records = _records_of(farm_dir)
    records[3] = replace(records[3], verdict="sat")
    cx = "garbage" if made_up == "garbage" else {
        "subject": records[3].subject, "prompts": [[1, 2, 5, 5, 6, 10]],
        "exact_margins": ["-1/2"]}
    edit, _ = _failed_fe(cx)
    problems = _problems(farm_dir, _resigned(farm_dir, tmp_path, edit, records=records))
    assert ("counterexample 0 is 'garbage', not an object naming its subject" in problems
            if made_up == "garbage" else
            re.search(r"counterexample 0 \('input 3 .*'\) does not replay exactly: the claim "
                      r"holds exactly", problems))


def test_an_edge_necessity_finding_needs_no_witness_to_exist(farm_dir: Path,
                                                              tmp_path: Path) -> None:
    """Defect 2: an edge a witness makes necessary, reported as a finding (no query)."""
    ckpt, planner = _planner(farm_dir)
    queries, findings = planner.edge_necessity()
    fake, kept = queries[0], queries[1:]
    stated = [{"subject": f.subject, "reason": f.detail} for f in findings]
    stated.append({"subject": f"edge {fake.edge[0]}->{fake.edge[1]}",
                   "reason": findings[0].detail if findings else "no witness"})
    n = len(queries) + len(findings)
    entry = _entry(EDGE_NECESSITY, n, "FAILED", counterexamples=stated)
    problems = "\n".join(claim_problems(ckpt, {TASK: planner.circuit}, [entry], _unsat(kept)))
    assert re.search(rf"counterexample {len(stated) - 1} \('edge {fake.edge[0]}->"
                     rf"{fake.edge[1]}'\) does not replay exactly: input \d+ changes the "
                     "decision when the edge is removed", problems)
    assert f"counterexample {len(stated) - 1} " in problems and "counterexample 0 " not in \
        problems.replace(f"counterexample {len(stated) - 1} ", "")  # true findings pass


def test_content_invariance_instances_are_its_plan_not_its_records(farm_dir: Path) -> None:
    """Defect 3: a record given twice raises the instance count only on paper."""
    ckpt, planner = _planner(farm_dir)
    ci = _unsat(planner.content_invariance())
    honest = [_entry(CONTENT_INVARIANCE, len(ci))]
    assert claim_problems(ckpt, {TASK: planner.circuit}, honest, ci) == []
    problems = "\n".join(claim_problems(ckpt, {TASK: planner.circuit},
                                        [_entry(CONTENT_INVARIANCE, len(ci) + 1)],
                                        [*ci, ci[7]]))
    assert f"{len(ci) + 1} instances, but its plan for this circuit has {len(ci)}" in problems
    assert "1 instance(s) have more than one query record" in problems


def _radius(p: dict[str, Any]) -> None:
    p["properties"][0]["radius"] = {"precision": "1/1000", "upper": "1", "minimum": "1",
                                    "per_input": []}


UNCHECKED_FIELDS = {  # defect 3
    "radius": (_radius, r"states certified radii, which no query record backs"),
    "float32_gap": (lambda p: p["replay"].update(float32_gap=0.0),
                    r"replay: float32_gap 0, the float32 runtime here differs"),
    "n_heads": (lambda p: p["circuits"][0].update(n_heads=2),
                r"circuit 0: n_heads is 2, the model has 1"),
    "threshold": (lambda p: p["circuits"][0].update(threshold=0.05),
                  r"circuit 0: ACDC at threshold 0.05 gives edges .*, not the circuit's"),
    "candidate_kl": (lambda p: p["circuits"][0].update(threshold=-1.0, candidate_kl=0.5),
                     r"circuit 0: candidate_kl is 0.5, scoring the circuit gives 0.0"),
    "checkpoint.file": (lambda p: p["checkpoint"].update(file="other.bin"),
                        r"checkpoint: file is 'other.bin'"),
    "counts a list": (lambda p: p["properties"][0].update(counts=[1, 2]),  # defect 4
                      r"counts must be an object of non-negative integers"),
}


@pytest.mark.parametrize("case", UNCHECKED_FIELDS)
def test_every_signed_field_is_re_derived(farm_dir: Path, tmp_path: Path, case: str) -> None:
    edit, message = UNCHECKED_FIELDS[case]
    assert re.search(message, _problems(farm_dir, _resigned(farm_dir, tmp_path, edit)))


def test_an_envelope_with_a_duplicate_key_is_refused(farm_dir: Path, tmp_path: Path,
                                                     capsys) -> None:
    """Defect 4: json keeps the last `payload`; the checker must not read either."""
    text = _cert(farm_dir).read_text()
    cert = tmp_path / "certificate.dsse.json"
    cert.write_text(text.replace('"payload":', '"payload": "e30=", "payload":', 1))
    assert main(["check", str(cert), "--pubkey", str(farm_dir / "key.pub")]) == 2
    assert "duplicate key(s) 'payload'" in capsys.readouterr().err


def test_a_renamed_certificate_is_found_with_its_sidecar(farm_dir: Path, tmp_path: Path,
                                                         capsys) -> None:
    """Defect 4: the sidecar is bound by hash, so a renamed pair checks; a certificate
    renamed alone is named with the sidecar it lacks."""
    cert = tmp_path / "renamed.dsse.json"
    shutil.copy(_cert(farm_dir), cert)
    args = ["check", str(cert), "--pubkey", str(farm_dir / "key.pub"), "--checkpoint",
            str(farm_dir / "checkpoint")]
    assert main(args) == 2
    assert re.search(r"query records: neither .*renamed.queries.parquet nor "
                     r".*certificate.queries.parquet .* exists", capsys.readouterr().err)
    shutil.copy(sidecar_path(_cert(farm_dir)), sidecar_path(cert))
    assert main(args) == 0
