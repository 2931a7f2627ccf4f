"""Signing layer: DSSE envelopes over canonical in-toto Statements, Ed25519 keys, `farm keygen`."""

from __future__ import annotations

import base64
import copy
import json
import stat
from pathlib import Path

import pytest

from farm.cli import main
from farm.errors import FarmError
from farm.trust.signing import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    canonical_json,
    file_subject,
    generate_keypair,
    keyid,
    load_private_key,
    pae,
    sign_statement,
    verify_envelope,
    verify_statement,
)

PREDICATE = {"model": "paper", "margins": ["1/3", "-2/5"], "verified": True, "count": 256}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    paths = {}
    for who in ("farm", "other"):
        paths[who] = d / f"{who}.pem"
        paths[f"{who}_pub"] = d / f"{who}.pub"
        generate_keypair(paths[who], paths[f"{who}_pub"])
    checkpoint = d / "model.safetensors"
    checkpoint.write_bytes(b"\x00weights\x01")
    paths["checkpoint"] = checkpoint
    return paths


def _envelope(keys: dict[str, Path], signer: str = "farm") -> dict:
    return sign_statement(PREDICATE, [file_subject(keys["checkpoint"])], keys[signer])


def _reencode(envelope: dict, statement: dict, canonical: bool = True) -> dict:
    body = canonical_json(statement) if canonical else json.dumps(statement, indent=1).encode()
    out = copy.deepcopy(envelope)
    out["payload"] = base64.b64encode(body).decode()
    return out


def test_pae_matches_the_dsse_test_vector() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_round_trip_returns_the_predicate_and_binds_the_checkpoint(keys: dict[str, Path]) -> None:
    envelope = _envelope(keys)
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert envelope["signatures"][0]["keyid"] == keyid(load_private_key(keys["farm"]).public_key())
    assert verify_envelope(envelope, keys["farm_pub"]) == PREDICATE
    statement = verify_statement(json.loads(json.dumps(envelope)), keys["farm_pub"])
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [file_subject(keys["checkpoint"])]
    assert base64.b64decode(envelope["payload"]) == canonical_json(statement)


def test_edited_payload_under_valid_signature_is_rejected(keys: dict[str, Path]) -> None:
    envelope = _envelope(keys)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["verified"] = False
    with pytest.raises(FarmError, match="bad signature"):
        verify_envelope(_reencode(envelope, statement), keys["farm_pub"])


def test_signature_by_another_key_is_rejected_naming_it(keys: dict[str, Path]) -> None:
    envelope = _envelope(keys, signer="other")
    other_id = envelope["signatures"][0]["keyid"]
    with pytest.raises(FarmError, match=f"signed by another key: keyid.*{other_id}"):
        verify_envelope(envelope, keys["farm_pub"])


def test_non_canonical_payload_is_rejected_even_when_signed(keys: dict[str, Path]) -> None:
    statement = verify_statement(_envelope(keys), keys["farm_pub"])
    body = json.dumps(statement, indent=1).encode()  # same JSON value, other bytes
    sig = load_private_key(keys["farm"]).sign(pae(PAYLOAD_TYPE, body))
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode(),
                "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}]}
    with pytest.raises(FarmError, match="payload not canonical"):
        verify_envelope(envelope, keys["farm_pub"])


@pytest.mark.parametrize("damage, message", [
    (lambda e: e.pop("signatures"), "malformed envelope: missing 'signatures'"),
    (lambda e: e.__setitem__("signatures", []), "malformed envelope: 'signatures'"),
    (lambda e: e.__setitem__("payload", e["payload"][:-7]), "malformed envelope: payload"),
    (lambda e: e["signatures"][0].__setitem__("sig", "%%%"), "malformed envelope: signature 0"),
    (lambda e: e["signatures"][0].pop("sig"), "malformed envelope: signature 0 has no 'sig'"),
    (lambda e: e.__setitem__("payloadType", "application/json"), "wrong payloadType"),
])
def test_malformed_or_truncated_envelope_is_rejected(keys: dict[str, Path], damage,
                                                     message: str) -> None:
    envelope = _envelope(keys)
    damage(envelope)
    with pytest.raises(FarmError, match=message):
        verify_envelope(envelope, keys["farm_pub"])


def test_truncated_envelope_file_is_not_json(keys: dict[str, Path]) -> None:
    text = json.dumps(_envelope(keys))
    with pytest.raises(json.JSONDecodeError):
        json.loads(text[: len(text) // 2])
    with pytest.raises(FarmError, match="malformed envelope: expected a JSON object"):
        verify_envelope(text[: len(text) // 2], keys["farm_pub"])


def test_unsignable_predicate_and_bad_subjects_are_refused(keys: dict[str, Path]) -> None:
    subject = file_subject(keys["checkpoint"])
    with pytest.raises(FarmError, match="canonicalised"):
        sign_statement({"x": float("nan")}, [subject], keys["farm"])
    with pytest.raises(FarmError, match="64 lowercase hex"):
        sign_statement(PREDICATE, [{"name": "m", "digest": {"sha256": "abc"}}], keys["farm"])
    with pytest.raises(FarmError, match="non-empty list"):
        sign_statement(PREDICATE, [], keys["farm"])


def test_keygen_cli_writes_private_0600_and_refuses_to_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k"
    assert main(["keygen", "--out-dir", str(out)]) == 0
    private, public = out / "farm_ed25519.pem", out / "farm_ed25519.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    key_id = keyid(load_private_key(private).public_key())
    assert key_id in capsys.readouterr().out
    before = private.read_bytes()
    assert main(["keygen", "--out-dir", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert private.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["farm_ed25519.pem", "farm_ed25519.pub"]
    assert main(["keygen", "--out-dir", str(out), "--force"]) == 0
    assert private.read_bytes() != before
