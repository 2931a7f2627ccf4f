"""`farm run`, the main job, end to end on an embedded Ray, and its rerun.

A separate process, as a user runs it: the job starts its own Ray instance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import ray

from farm.cli import main
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.trust.certificate import check_certificate
from tests.conftest import random_model

JOB = """\
name: small
checkpoint: train
train: {seed: 0}
tasks: [quote_close]
circuits: extract
properties: [fe, en, rob]
radius: true
radius_max: "0.04"
radius_precision: "0.02"
solver: z3
solver_actors: 1
out: out
"""


@dataclass
class Run:
    log: str  # stdout and stderr
    result: dict  # its result.json


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Run, Run]:
    """The job run twice into the same `out`."""
    job = tmp_path_factory.mktemp("job") / "job.yaml"
    job.write_text(JOB)
    out = job.parent / "out"
    done = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "farm.cli", "run", str(job), "--quiet",
                               "--num-cpus", "2"], capture_output=True, text=True,
                              timeout=600, cwd=job.parent)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        done.append(Run(proc.stdout + proc.stderr,
                        json.loads((out / "result.json").read_text())))
    return out, *done


def test_the_job_verifies_and_signs_a_certificate_the_checker_accepts(runs) -> None:
    out, first, _ = runs
    assert {(r["property"], r["task"], r["status"]) for r in first.result["results"]} == {
        ("functional_equivalence", "quote_close", "VERIFIED"),
        ("edge_necessity", "quote_close", "VERIFIED"),
        ("robustness", "quote_close", "VERIFIED")}
    assert first.result["stats"]["solved"] > 128  # every input, one query per retained edge
    report = check_certificate(out / "certificate.dsse.json", out / "keys" / "farm_ed25519.pub")
    assert report.ok, report.problems
    assert "VERIFIED" in first.log and "farm check" in first.log


def test_the_job_certifies_each_input_a_radius_at_least_its_epsilon(runs) -> None:
    _, first, _ = runs
    [rob] = [r for r in first.result["results"] if r["property"] == "robustness"]
    radii = [Fraction(r["certified"]) for r in rob["radius"]["per_input"]]
    assert len(radii) == 128 and Fraction(rob["radius"]["minimum"]) == min(radii)
    assert min(radii) >= Fraction(1, 100)  # robustness is VERIFIED at ε = 1/100
    assert "certified radius: min" in first.log


def test_a_rerun_reuses_the_checkpoint_circuit_and_every_answer(runs) -> None:
    _, first, second = runs
    assert "trained earlier for this job" in second.log
    assert "extracted earlier from this checkpoint" in second.log
    assert second.result["checkpoint_sha256"] == first.result["checkpoint_sha256"]
    assert second.result["circuits"] == first.result["circuits"]
    stats = second.result["stats"]
    assert stats["solved"] == 0 and stats["reused"] == stats["queries"] > 256  # radius too
    [rob] = [r for r in second.result["results"] if r["property"] == "robustness"]
    assert rob["radius"] == next(r for r in first.result["results"]
                                 if r["property"] == "robustness")["radius"]


@pytest.mark.parametrize(("spec", "message"), [
    ("tasks: 5", "{job}: tasks must be a list of text, got 5"),
    ("checkpoint: 5", "{job}: checkpoint must be text, got 5"),
    ("name: [a, b]", "{job}: name must be text, got ['a', 'b']"),
    ("train: {seed: abc}", "{job}: train.seed must be a whole number, got 'abc'"),
    ("train: {lr: fast}", "{job}: train.lr must be a finite number, got 'fast'"),
    ("train: {model: {lm_head_bias: 'no'}}",
     "{job}: train.model.lm_head_bias must be true or false"),
    ("checkpoint: missing", "checkpoint directory {dir}/missing does not exist"),
    ("tasks: [quote_close]\ncircuits: {quote_close: missing.json}",
     "circuit file {dir}/missing.json does not exist"),
    ("checkpoint: ck\ntasks: [quote_close]\ncircuits: {quote_close: missing.json}",
     "circuit file {dir}/missing.json does not exist"),
    ("signing_key: missing.pem", "cannot read private key {dir}/missing.pem"),
])
def test_a_bad_job_spec_is_one_line_and_exit_2_before_ray_with_nothing_left(
        spec, message, tmp_path, capsys) -> None:
    """Every field's type (training and model options too) and every file the spec names
    are checked before Ray starts; the output directory is not made."""
    save_checkpoint(Checkpoint.from_model(random_model()), tmp_path / "ck")
    job = tmp_path / "job.yaml"
    job.write_text(f"{spec}\nout: out\n")
    assert main(["run", str(job), "--quiet", "--num-cpus", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"farm run: error: {message.format(job=job, dir=tmp_path)}"), err
    assert err.count("\n") == 1, err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()
