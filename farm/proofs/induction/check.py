"""Checking an induction certificate: re-derive it from the checkpoint, line by line.

The certificate names its checkpoint, task, prompt, head and active queries in its
`# farm` lines; the checker recomputes the whole certificate from those (the task
decides which queries and keys may be named, the checkpoint every number) and
compares each entry. Nothing in the file is taken on trust: a loosened weight
bound, a moved key, a raised margin or a changed copy bound all differ from the
re-derivation, and the first such entry is named (`Mismatch`: a certificate read
fine and is wrong, which `farm check` reports as REJECTED rather than as bad input).
"""

from __future__ import annotations

import itertools
from dataclasses import fields
from fractions import Fraction

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.proofs.induction.derive import VERSION, HeadRef, InductionProver
from farm.proofs.induction.nfp import NfpCertificate
from farm.tasks.induction import Induction, StripeEntry
from farm.tasks.registry import get_task


class Mismatch(FarmError):
    """The certificate is well formed, but a number or binding is not what the
    checkpoint gives."""


def header(cert: NfpCertificate, where: str) -> dict[str, tuple[str, ...]]:
    """The farm lines that say what the certificate is about, by name."""
    found: dict[str, tuple[str, ...]] = {}
    for name, *words in cert.farm:
        if name in ("induction-certificate", "checkpoint", "task", "prompt", "head"):
            if name in found:
                raise FarmError(f"{where}: '# farm {name}' twice")
            found[name] = tuple(words)
    missing = {"induction-certificate", "checkpoint", "task", "prompt", "head"} - set(found)
    if missing:
        raise FarmError(f"{where}: not a farm induction certificate (no '# farm "
                        f"{sorted(missing)[0]}' line)")
    if found["induction-certificate"] != (VERSION,):
        raise FarmError(f"{where}: certificate version {found['induction-certificate']}, "
                        f"this checker reads {VERSION}")
    return found


def check_certificate(cert: NfpCertificate, checkpoint: Checkpoint, where: str,
                      prover: InductionProver | None = None) -> InductionProver:
    """Re-derive `cert` from `checkpoint`; FarmError naming the first entry that differs.
    Returns the prover it used, to check the next certificate of the same head with."""
    about = header(cert, where)
    if about["checkpoint"] != (checkpoint.sha256,):
        raise Mismatch(f"{where}: made from checkpoint {about['checkpoint'][0][:16]}…, "
                        f"not this one ({checkpoint.sha256[:16]}…)")
    try:
        task = get_task(about["task"][0])
        head = HeadRef(*map(int, about["head"]))
        index = int(about["prompt"][0])
        queries = [StripeEntry(*map(int, words)) for name, *words in cert.farm
                   if name == "query"]
    except (ValueError, TypeError, IndexError) as err:
        raise FarmError(f"{where}: malformed farm line ({err})") from None
    if not isinstance(task, Induction) or not 0 <= index < len(task.domain()):
        raise Mismatch(f"{where}: prompt {index} is not in task {about['task'][0]}")
    prompt = task.domain()[index]
    if about["prompt"][1:] != tuple(map(str, prompt)):
        raise Mismatch(f"{where}: prompt {index} of {task.name} is {prompt}, not "
                        f"{about['prompt'][1:]}")
    stripe = set(task.stripe(prompt))
    for entry in queries:
        if entry not in stripe:
            raise Mismatch(f"{where}: query {entry.query} key {entry.key} target "
                            f"{entry.target} is not on the induction stripe of prompt {index}")
    if prover is None or (prover.checkpoint, prover.task, prover.head) != (checkpoint, task,
                                                                         head):
        prover = InductionProver(checkpoint, task, head)
    expected = prover.certificate(index, queries or None)
    _compare(cert, expected, where)
    return prover


def _compare(given: NfpCertificate, expected: NfpCertificate, where: str) -> None:
    for f in fields(NfpCertificate):
        mine, theirs = getattr(given, f.name), getattr(expected, f.name)
        if mine == theirs:
            continue
        if isinstance(theirs, dict):
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    raise Mismatch(f"{where}: {_name(f.name)} {_key(key)} is "
                                    f"{_show(mine.get(key))}; the checkpoint gives "
                                    f"{_show(theirs.get(key))}")
        if f.name == "farm":
            for line, (a, b) in enumerate(itertools.zip_longest(mine, theirs, fillvalue=())):
                if a != b:
                    raise Mismatch(f"{where}: farm line {line + 1} is {' '.join(a)!r}; the "
                                    f"checkpoint gives {' '.join(b)!r}")
        raise Mismatch(f"{where}: {_name(f.name)} is {_show(mine)}; the checkpoint gives "
                        f"{_show(theirs)}")


def _name(attr: str) -> str:
    return attr.replace("_", "-")


def _key(key: object) -> str:
    return " ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _show(value: object) -> str:
    if isinstance(value, Fraction):
        return f"{value} (≈ {float(value):.6g})"
    return repr(value)
