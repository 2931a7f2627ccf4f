"""The Max-of-K brute force on the farm: units across real Ray actors, a journal that
survives a kill, and a resumed job that counts every unit once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.proofs.maxk.brute import Tally, brute_force, pair_prompts, pairs
from farm.proofs.maxk.journal import Journal, plan_units
from farm.tasks.registry import get_task

TASK = get_task("max_of_k:k=4,vocab=32")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """An untrained sparsemax model: every prompt goes through the evaluated stage, so a
    unit takes long enough to kill the job between units."""
    torch.manual_seed(3)
    config = GPTConfig(vocab_size=32, seq_len=4, d_model=16, n_layers=1, d_mlp=0,
                       norm_variant="none", attn_variant="sparsemax", attn_bias=False,
                       lm_head_bias=False)
    directory = tmp_path_factory.mktemp("maxk_farm") / "ckpt"
    save_checkpoint(Checkpoint.from_model(VerifiableGPT(config)), directory)
    return str(directory)


def _farm(checkpoint: str, journal, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # embedded, 2 CPUs
    return subprocess.Popen(
        [sys.executable, "-m", "farm.cli", "maxk", "brute", "--checkpoint", checkpoint,
         "--task", TASK.name, "--ray", "2", "--units", "32", "--journal", str(journal),
         "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_killed_job_resumes_and_counts_every_unit_once(checkpoint, tmp_path):
    from farm.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    truth = brute_force(ckpt.config, ckpt.weights, TASK)
    journal = tmp_path / "brute.jsonl"

    job = _farm(checkpoint, journal, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_lines(journal)) < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-job
    job.wait()
    done = len(_lines(journal)) - 1
    assert 2 <= done < 32, f"the job was not killed midway ({done} of 32 units)"

    rerun = _farm(checkpoint, journal)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert f"32 units, {done} from the journal" in out
    assert (f"accuracy = {truth.correct:,} / {TASK.domain().size:,}" in out
            and f"ties {truth.ties:,}, wrong {truth.wrong:,}" in out)
    units = [tuple(json.loads(line)[k] for k in ("first", "stop"))
             for line in _lines(journal)[1:]]
    assert sorted(units) == plan_units(TASK, 32)  # each unit decided and recorded once


def test_units_cover_every_pair_once_with_about_equal_prompts():
    task = get_task("max_of_k:k=4,vocab=64")
    units = plan_units(task, 64)
    assert units[0][0] == 0 and units[-1][1] == len(pairs(64)) == 2080
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(units, units[1:], strict=False))
    sizes = [sum(pair_prompts(3, q, m) for q, m in pairs(64)[a:b]) for a, b in units]
    assert sum(sizes) == 64 ** 4 and max(sizes) < 2 * 64 ** 4 / len(units)
    assert sizes == [64 ** 3] * 64  # here the cuts fall exactly
    assert 1000 < len(plan_units(task, 10_000)) <= 2080  # a unit holds at least one pair
    with pytest.raises(FarmError, match="at least one unit"):
        plan_units(task, 0)


def test_the_journal_drops_a_cut_line_keeps_first_tallies_and_refuses_another_proof(tmp_path):
    path, units = tmp_path / "j.jsonl", [(0, 3), (3, 6), (6, 8)]
    book = Journal.open(path, "ab" * 32, "max_of_k:k=3,vocab=8", units)
    book.record((0, 3), Tally(5, 1, 2, 100))
    with path.open("a") as f:  # the same unit again, then a line a kill cut short
        f.write(json.dumps({"first": 0, "stop": 3, "tally": {"correct": 9, "ties": 0,
                                                             "wrong": 0, "flops": 1}}) + "\n")
        f.write('{"first": 3, "stop": 6, "tal')
    again = Journal.open(path, "ab" * 32, "max_of_k:k=3,vocab=8", units)
    assert again.done == {(0, 3): Tally(5, 1, 2, 100)}
    assert path.read_text().endswith("\n")  # the cut line is gone before appending
    again.record((3, 6), Tally(1, 0, 0, 7))
    assert Journal.open(path, "ab" * 32, "max_of_k:k=3,vocab=8", units).total() == \
        Tally(6, 1, 2, 107)
    with pytest.raises(FarmError, match="is not the journal of this brute force"):
        Journal.open(path, "cd" * 32, "max_of_k:k=3,vocab=8", units)
