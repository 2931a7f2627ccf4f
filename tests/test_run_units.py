"""`farm run` on a family task: inputs decided by units on the actors, a certificate by
units that `farm check` accepts, and a rerun that reads every unit back from disk."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from farm.cli import main
from farm.discovery.acdc import extract
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import save_circuit

FAMILY = "quote_close:len=6,fillers=8"  # 1,024 inputs: 8 units of 128
JOB = f"""\
name: family
checkpoint: checkpoint
tasks: ["{FAMILY}"]
circuits: {{"{FAMILY}": circuit.json}}
properties: [fe, ci, en]
solver_actors: 2
unit_size: 128
out: out
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("family")
    save_checkpoint(Checkpoint.from_model(trained.model.cpu()), root / "checkpoint")
    circuit = extract(trained.model, "quote_close").circuit
    save_circuit(dataclasses.replace(circuit, task=FAMILY, metadata={}), root / "circuit.json")
    (root / "job.yaml").write_text(JOB)
    logs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "farm.cli", "run", "job.yaml", "--quiet",
                               "--num-cpus", "2"], capture_output=True, text=True,
                              timeout=600, cwd=root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        logs.append(proc.stdout + proc.stderr)
    return root, logs


def test_a_family_job_is_decided_by_units_and_certified(runs, capsys):
    root, (first, _) = runs
    assert "1,024 inputs in 8 units decided on 2 unit actor(s)" in first
    assert "0 units read back" in first
    result = json.loads((root / "out" / "result.json").read_text())
    assert {r["property"]: r["status"] for r in result["results"]} == {
        "functional_equivalence": "VERIFIED", "content_invariance": "VERIFIED",
        "edge_necessity": "VERIFIED"}
    assert len(result["units"][0]["verdicts"]) == 8
    assert len(list((root / "out" / "units").glob("*/witnesses/part-*.json"))) == 8
    capsys.readouterr()
    assert main(["check", str(root / "out" / "certificate.dsse.json"), "--pubkey",
                 str(root / "out" / "keys" / "farm_ed25519.pub"), "--require-verified"]) == 0
    assert "8 units covering 1,024 inputs exactly once" in capsys.readouterr().out


def test_a_rerun_reads_every_unit_back(runs):
    _, (_, second) = runs
    assert "8 units read back from disk" in second


def test_the_radius_of_a_family_task_is_refused_before_ray(tmp_path, capsys):
    (tmp_path / "job.yaml").write_text(JOB.replace("[fe, ci, en]", "[fe, rob]")
                                       + "radius: true\n")
    assert main(["run", str(tmp_path / "job.yaml"), "--quiet", "--num-cpus", "1"]) == 2
    assert "radius of a family task" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bad_epsilon_is_refused_before_ray(tmp_path, capsys):
    (tmp_path / "job.yaml").write_text(JOB.replace("[fe, ci, en]", "[fe, rob]"))
    assert main(["run", str(tmp_path / "job.yaml"), "--quiet", "--epsilon", "0"]) == 2
    assert "--epsilon must be positive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
