"""A real two-node Ray cluster with token authentication, started the way a user starts one.

`ray start --head` and `ray start --address=…` run as separate process trees, each
with its own home directory (where Ray keeps the token) and its own `--temp-dir`:
two machines in miniature on this one. Jobs go in through `ray job submit`, as
README's cluster section says. Every process a node started is stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from encoders.cache import ResultCache

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

JOB = """\
name: two-node
tasks: [quote_close, bracket_type]
properties: [fe, en, ci]
solver: z3
solver_actors: 2
shard_size: 4
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(home: Path, auth: str | None = "token") -> dict[str, str]:
    """A shell of a machine whose home directory is `home` (where Ray looks for its token)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_") and k not in ("PYTHONPATH", "HOME")}
    env |= {"HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return env | ({"RAY_AUTH_MODE": auth} if auth else {})


class Node:
    """One `ray start --block`: its whole process tree is this node."""

    def __init__(self, base: Path, name: str, args: list[str], home: Path) -> None:
        self.temp = base / f"t_{name}"  # short: Ray's socket paths must stay under 108 bytes
        self.log = base / f"{name}.log"
        ports = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port")
        self.process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
             f"--temp-dir={self.temp}", *[f"{p}={free_port()}" for p in ports], *args],
            env=environment(home), stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_started(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < end, self.log.read_text()
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGKILL to its process group, then to anything else running from its temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        for pid in strays(self.temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def strays(temp: Path) -> list[int]:
    """Processes whose command line names `temp`: what a node left running."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(temp) in (proc / "cmdline").read_bytes().decode(
                    errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.head_home, self.worker_home = base / "head_home", base / "worker_home"
        for home in (self.head_home, self.worker_home):
            home.mkdir()
        # the token is made once, on the user's machine, and carried to every node
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True,
                       env=environment(self.head_home), capture_output=True, timeout=60)
        (self.worker_home / ".ray").mkdir()
        shutil.copy(self.head_home / ".ray" / "auth_token", self.worker_home / ".ray")
        self.port, self.dashboard = free_port(), free_port()
        self.nodes: list[Node] = []
        self.head = self.start("head", self.head_home, "--head", f"--port={self.port}",
                               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard}",
                               "--num-cpus=3", '--resources={"solver": 1}')
        self.worker = self.start("worker", self.worker_home, *self.join_args())

    def join_args(self) -> list[str]:
        return [f"--address=127.0.0.1:{self.port}", "--num-cpus=1", '--resources={"solver": 1}']

    def start(self, name: str, home: Path, *args: str) -> Node:
        node = Node(self.base, name, list(args), home)
        self.nodes.append(node)
        node.wait_started()
        return node

    def client(self, *args: str, home: Path | None = None, auth: str | None = "token",
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`ray job …` against the head's dashboard, from a machine whose home is `home`."""
        env = environment(home or self.head_home, auth)
        env["RAY_ADDRESS"] = f"http://127.0.0.1:{self.dashboard}"  # as README's commands
        return subprocess.run([str(BIN / "ray"), "job", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)

    def submit(self, job: Path, out: Path, *, wait: bool = True) -> str:
        submission = f"farm-{out.name}-{time.monotonic_ns()}"
        proc = self.client("submit", f"--submission-id={submission}", "--working-dir=.",
                           *([] if wait else ["--no-wait"]), "--", "farm", "run", str(job),
                           f"--out={out}", "--quiet")
        assert proc.returncode == 0 or wait, proc.stdout + proc.stderr
        return submission

    def status(self, submission: str) -> str:
        """The job's state as `ray job status` words it ("Job 'X' succeeded", "failed",
        "was stopped", or "Status for job 'X': RUNNING"); its whole output otherwise."""
        said = self.client("status", submission, timeout=60).stdout
        for state, words in (("SUCCEEDED", "succeeded"), ("FAILED", "failed"),
                             ("STOPPED", "was stopped")):
            if f"Job '{submission}' {words}" in said:
                return state
        found = re.search(rf"Status for job '{re.escape(submission)}': (\w+)", said)
        return found[1] if found else said

    def logs(self, submission: str) -> str:
        return self.client("logs", submission, timeout=60).stdout

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="farm2n", dir="/tmp"))
    running = None
    try:
        running = Cluster(base)
        yield running
    finally:
        if running:
            running.stop()
        left = [pid for node in (running.nodes if running else []) for pid in strays(node.temp)]
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def first_job(cluster, tmp_path_factory) -> tuple[Path, str, dict]:
    """The whole pipeline (train, extract, verify, sign) as one Ray job on both nodes."""
    work = tmp_path_factory.mktemp("first")
    job = work / "job.yaml"
    job.write_text(JOB + "checkpoint: train\ntrain: {seed: 0}\ncircuits: extract\n")
    submission = cluster.submit(job, work / "out")
    assert (work / "out" / "result.json").exists(), cluster.logs(submission)
    return work / "out", submission, json.loads((work / "out" / "result.json").read_text())


def results(result: dict) -> dict[str, tuple[str, int, int]]:
    return {r["property"]: (r["status"], r["queries"], r["unsat"]) for r in result["results"]}


def test_a_submitted_job_runs_on_solver_actors_of_both_nodes(cluster, first_job) -> None:
    out, submission, result = first_job
    assert cluster.status(submission) == "SUCCEEDED", cluster.logs(submission)
    assert {s for s, _, _ in results(result).values()} == {"VERIFIED"}
    by_node = result["stats"]["solved_by_node"]
    assert len(by_node) == 2 and min(by_node.values()) > 0, by_node
    assert "solved per node:" in cluster.logs(submission)
    assert (out / "certificate.dsse.json").exists()


def test_a_worker_without_the_token_is_refused(cluster) -> None:
    stranger = cluster.base / "stranger_home"
    stranger.mkdir()
    proc = subprocess.run(  # a plain `ray start --address` on a machine without the token
        [str(BIN / "ray"), "start", f"--temp-dir={cluster.base / 't_stranger'}",
         "--disable-usage-stats", *cluster.join_args()],
        env=environment(stranger, auth=None), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "authentication" in (proc.stdout + proc.stderr).lower()
    assert not strays(cluster.base / "t_stranger")  # nothing of it is running


def test_a_client_without_the_token_is_refused(cluster, tmp_path) -> None:
    proc = cluster.client("list", home=tmp_path, auth=None, timeout=60)
    assert proc.returncode != 0
    assert "authentication" in (proc.stdout + proc.stderr).lower()


def test_farm_run_names_a_missing_token_in_one_line(cluster, tmp_path) -> None:
    (tmp_path / "job.yaml").write_text(JOB)
    env = environment(tmp_path, auth=None) | {"RAY_ADDRESS": f"127.0.0.1:{cluster.port}"}
    proc = subprocess.run([str(BIN / "farm"), "run", "job.yaml", "--out", "out"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    [line] = [s for s in proc.stderr.splitlines() if s.startswith("farm run:")]
    assert "RAY_AUTH_MODE=token" in line and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_job_resubmitted_after_losing_the_worker_loses_and_repeats_nothing(
        cluster, first_job, tmp_path) -> None:
    first_out, _, first = first_job
    job = tmp_path / "job.yaml"
    job.write_text(JOB + f"checkpoint: {first_out / 'checkpoint'}\ncircuits:\n" + "".join(
        f"  {task}: {first_out / 'circuits' / task / 'circuit.json'}\n"
        for task in ("quote_close", "bracket_type")))
    out = tmp_path / "out"
    submission = cluster.submit(job, out, wait=False)
    deadline = time.monotonic() + 120
    while not list((out / "cache").glob("*.parquet")):  # answers are landing: mid-job
        assert time.monotonic() < deadline, cluster.logs(submission)
        time.sleep(0.2)
    assert not (out / "result.json").exists()  # the job has not finished
    cluster.worker.stop()
    while cluster.status(submission) in ("RUNNING", "PENDING"):
        assert time.monotonic() < deadline, cluster.logs(submission)
        time.sleep(1)

    resubmitted = cluster.submit(job, out)

    assert cluster.status(resubmitted) == "SUCCEEDED", cluster.logs(resubmitted)
    result = json.loads((out / "result.json").read_text())
    assert results(result) == results(first)  # every instance answered, none counted twice
    stats = result["stats"]
    assert stats["solved"] + stats["reused"] == stats["queries"]
    answered = {r.query_hash for r in ResultCache(out / "cache")}
    assert answered == {r.query_hash for r in ResultCache(first_out / "cache")}
