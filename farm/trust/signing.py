"""Signing: Ed25519 keys, RFC 8785 canonical JSON, in-toto Statements in DSSE envelopes.

A certificate is only worth what its signature binds, so the signed bytes are the
RFC 8785 canonical form of an in-toto Statement whose subjects are the checkpoint
file (and any sidecars) by SHA-256. The envelope is DSSE: the signature covers the
pre-authentication encoding PAE(payloadType, payload), so neither the type nor
the body can be swapped under a valid signature. Verification refuses anything
it cannot fully account for and says which check failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from farm.errors import FarmError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://verification-farm.dev/certificate/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PRIVATE_KEY_NAME = "farm_ed25519.pem"
PUBLIC_KEY_NAME = "farm_ed25519.pub"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- keys


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a temp file beside `path` (same file system, so os.replace is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str],
                     *, overwrite: bool = False) -> str:
    """Create an Ed25519 key pair as PEM files (private key 0600) and return its keyid.

    Refuses to replace existing files unless `overwrite`: losing a signing key
    silently would orphan every certificate it signed.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise FarmError(f"{path} already exists; refusing to overwrite a key "
                                f"(use --force to replace it)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    staged: list[Path] = []
    try:  # stage both files before replacing either, so a failure never leaves a mismatched pair
        staged.append(_stage(private_path, private_pem, 0o600))
        staged.append(_stage(public_path, public_pem, 0o644))
        os.replace(staged[0], private_path)
        os.replace(staged[1], public_path)
    except OSError as err:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        raise FarmError(f"cannot write key file: {err}") from err
    return keyid(key.public_key())


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise FarmError(f"cannot read {what} {path}: {err.strerror or err}") from err


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(_read_pem(path, "private key"), password=None)
    except (ValueError, TypeError) as err:
        raise FarmError(f"{path} is not an unencrypted PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise FarmError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(_read_pem(path, "public key"))
    except (ValueError, TypeError) as err:
        raise FarmError(f"{path} is not a PEM public key: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise FarmError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def keyid(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: names the key without trusting the name."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- encodings


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes: one byte string per JSON value, so signatures are reproducible."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as err:
        raise FarmError(f"value cannot be canonicalised as JSON (RFC 8785): {err}") from err


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


def file_subject(path: str | os.PathLike[str], name: str | None = None) -> dict[str, Any]:
    """An in-toto subject for a file: its name (default: the file name) and SHA-256."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise FarmError(f"cannot read subject file {path}: {err.strerror or err}") from err
    return {"name": name or path.name, "digest": {"sha256": digest.hexdigest()}}


def _check_subjects(subjects: Any) -> list[dict[str, Any]]:
    if not isinstance(subjects, list) or not subjects:
        raise FarmError("statement subject must be a non-empty list")
    names = set()
    for i, subject in enumerate(subjects):
        if not isinstance(subject, dict) or not isinstance(subject.get("name"), str) \
                or not subject["name"] or not isinstance(subject.get("digest"), dict):
            raise FarmError(f"subject {i} must be an object with a non-empty 'name' and a 'digest'")
        sha = subject["digest"].get("sha256")
        if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
            raise FarmError(f"subject {subject['name']!r} needs digest.sha256 as 64 lowercase "
                            f"hex digits, got {sha!r}")
        if subject["name"] in names:
            raise FarmError(f"subject name {subject['name']!r} appears twice")
        names.add(subject["name"])
    return subjects


def make_statement(predicate: Mapping[str, Any], subjects: Sequence[Mapping[str, Any]],
                   predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    """The in-toto Statement v1 binding `predicate` (the certificate, or another signed
    claim of its own `predicate_type`) to the subject files."""
    if not isinstance(predicate, Mapping):
        raise FarmError(f"predicate must be a JSON object, got {type(predicate).__name__}")
    return {
        "_type": STATEMENT_TYPE,
        "subject": _check_subjects([dict(s) for s in subjects]),
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


# --------------------------------------------------------------------------- sign / verify


def sign_statement(predicate: Mapping[str, Any], subjects: Sequence[Mapping[str, Any]],
                   private_key_path: str | os.PathLike[str],
                   predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    """Sign the Statement for `predicate` and `subjects`; returns the DSSE envelope (a dict)."""
    key = load_private_key(private_key_path)
    body = canonical_json(make_statement(predicate, subjects, predicate_type))
    signature = key.sign(pae(PAYLOAD_TYPE, body))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [{"keyid": keyid(key.public_key()),
                        "sig": base64.b64encode(signature).decode("ascii")}],
    }


def _b64decode(text: Any, what: str) -> bytes:
    """Standard or URL-safe base64, as DSSE requires verifiers to accept; nothing else."""
    if not isinstance(text, str):
        raise FarmError(f"malformed envelope: {what} must be a base64 string")
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as err:
        raise FarmError(f"malformed envelope: {what} is not valid base64 ({err})") from err


def reject_duplicate_keys(what: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A json `object_pairs_hook` refusing a key given twice in one object: json keeps the
    last, so a second `payload` or `predicate` could hide behind the one that was read."""
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise FarmError(f"malformed {what}: duplicate key(s) {', '.join(map(repr, twice))} "
                            f"in one JSON object")
        return dict(pairs)
    return hook


def verify_statement(envelope: Any, public_key_path: str | os.PathLike[str],
                     predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    """Verify a DSSE envelope against a public key and return the whole in-toto Statement
    (whose predicateType must be `predicate_type`).

    Checks, in order: envelope shape, payloadType, an Ed25519 signature by this key
    over PAE(payloadType, payload), canonical (RFC 8785) payload bytes, Statement shape.
    """
    public_key = load_public_key(public_key_path)
    if not isinstance(envelope, dict):
        raise FarmError("malformed envelope: expected a JSON object")
    for field in ("payloadType", "payload", "signatures"):
        if field not in envelope:
            raise FarmError(f"malformed envelope: missing {field!r}")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise FarmError(f"wrong payloadType {envelope['payloadType']!r}; expected {PAYLOAD_TYPE!r}")
    body = _b64decode(envelope["payload"], "payload")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise FarmError("malformed envelope: 'signatures' must be a non-empty list")
    message = pae(PAYLOAD_TYPE, body)
    expected_id = keyid(public_key)
    claimed_ids = []
    for i, entry in enumerate(signatures):
        if not isinstance(entry, dict) or "sig" not in entry:
            raise FarmError(f"malformed envelope: signature {i} has no 'sig'")
        claimed_ids.append(entry.get("keyid", ""))
        try:
            # keyid is an unauthenticated hint (DSSE): every signature is tried against our key.
            public_key.verify(_b64decode(entry["sig"], f"signature {i}"), message)
            break
        except InvalidSignature:
            continue
    else:
        if expected_id in claimed_ids:
            raise FarmError(f"bad signature: the signature claiming key {expected_id} does not "
                            f"verify (payload or signature altered)")
        raise FarmError(f"signed by another key: keyid(s) {', '.join(map(str, claimed_ids))}; "
                        f"expected {expected_id}")
    try:
        statement = json.loads(body.decode("utf-8"),
                               object_pairs_hook=reject_duplicate_keys("payload"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FarmError(f"malformed payload: not UTF-8 JSON ({err})") from err
    try:
        canonical = rfc8785.dumps(statement)
    except rfc8785.CanonicalizationError as err:
        raise FarmError(f"malformed payload: not representable in RFC 8785 JSON ({err})") from err
    if canonical != body:
        raise FarmError("payload not canonical: the signed bytes are not the RFC 8785 form "
                        "of their own JSON")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise FarmError(f"payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != predicate_type:
        raise FarmError(f"wrong predicateType {statement.get('predicateType')!r}; "
                        f"expected {predicate_type!r}")
    if not isinstance(statement.get("predicate"), dict):
        raise FarmError("statement predicate must be a JSON object")
    _check_subjects(statement.get("subject"))
    return statement


def verify_envelope(envelope: Any, public_key_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify a DSSE envelope (see `verify_statement`) and return the certificate predicate."""
    return verify_statement(envelope, public_key_path)["predicate"]
