"""Unit actors on a real local Ray and a `Cluster` of several raylets: an actor killed, the
driver killed and the job resubmitted, a node removed mid-job. Every run is compared
with the Ray-free verdicts of the same units; each unit counts once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from actors.units import run_units, start_unit_actors
from farm.discovery.acdc import extract
from farm.model.checkpoint import Checkpoint
from farm.tasks.registry import get_task
from farm.units.unit import circuit_hash, split
from farm.units.verdict import decide_unit
from farm.verify.evaluate import Evaluator
from tests.conftest import embedded_ray

TASK = "quote_close:len=6,fillers=8"  # 1,024 inputs: 16 units of 64
UNIT = 64


@pytest.fixture(scope="module")
def job(trained):
    ckpt = Checkpoint.from_model(trained.model)
    circuit = extract(trained.model, "quote_close").circuit
    return ckpt, {TASK: circuit}


@pytest.fixture(scope="module")
def reference(job):
    ckpt, circuits = job
    evaluator = Evaluator(ckpt, circuits[TASK], get_task(TASK), progress=False)
    units = split(TASK, circuit_hash(circuits[TASK]), len(evaluator.domain), UNIT)
    return {u.key: decide_unit(evaluator, u).digest for u in units}


def persisted(ledger: Path) -> list[str]:
    """Every unit key in the ledger's part files, repeats included."""
    return [json.dumps(v["unit"], sort_keys=True, separators=(",", ":"))
            for part in ledger.glob("part-*.json")
            for v in json.loads(part.read_text())["verdicts"]]


def assert_exact_once(run, reference, ledger: Path):
    got = {v.unit.key: v.digest for v in run.verdicts[TASK]}
    assert got == reference
    keys = persisted(ledger)
    assert sorted(keys) == sorted(set(keys)) == sorted(reference)  # on disk once each


class TestLocal:
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def local_ray(cls):
        with embedded_ray(resources={"solver": 2}):
            yield

    def test_killed_actor_restarts_and_its_units_are_rerouted(self, job, reference, tmp_path):
        ckpt, circuits = job
        actors = start_unit_actors(ckpt, circuits, 2)
        killed = []

        def kill_once(shard, report):
            if not killed:
                killed.append(actors.workers[0])
                ray.kill(actors.workers[0], no_restart=False)  # dies with a unit in flight

        try:
            run = run_units(actors, circuits, tmp_path, UNIT, on_done=kill_once)
        finally:
            actors.kill()
        assert killed and run.reused == 0
        assert_exact_once(run, reference, tmp_path)

    def test_killed_driver_resubmitted_decides_only_what_is_missing(self, job, reference,
                                                                    tmp_path):
        ckpt, circuits = job
        done = []

        def dies_after_three(shard, report):
            done.append(shard)
            if len(done) == 3:
                raise KeyboardInterrupt  # the driver is killed mid-job

        actors = start_unit_actors(ckpt, circuits, 2)
        try:
            with pytest.raises(KeyboardInterrupt):
                run_units(actors, circuits, tmp_path, UNIT, on_done=dies_after_three)
        finally:
            actors.kill()
        on_disk = len(set(persisted(tmp_path)))
        assert 3 <= on_disk < len(reference)
        actors = start_unit_actors(ckpt, circuits, 2)
        try:
            run = run_units(actors, circuits, tmp_path, UNIT)
        finally:
            actors.kill()
        # a hand-over in flight at the kill may land after it: reused, never decided twice
        assert run.reused >= on_disk and run.reused + len(run.reports) == len(reference)
        assert_exact_once(run, reference, tmp_path)


def test_node_removed_mid_job(job, reference, tmp_path):
    """Head (1 CPU, no solver slot) + 2 workers (1 CPU, 1 solver slot); one worker goes."""
    ckpt, circuits = job
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, resources={"solver": 1}) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    actors = None
    try:
        cluster.wait_for_nodes()
        actors = start_unit_actors(ckpt, circuits, 2)
        names = ray.get([w.ping.remote() for w in actors.workers])
        assert len({n.split("@")[1] for n in names}) == 2  # one actor per worker node
        removed = []

        def remove_once(shard, report):
            if not removed:
                victim = next(n for n in nodes if n.node_id[:8] != report.node)
                removed.append(victim.node_id[:8])
                cluster.remove_node(victim)

        run = run_units(actors, circuits, tmp_path, UNIT, on_done=remove_once)
    finally:
        if actors is not None:
            actors.kill()
        ray.shutdown()
        cluster.shutdown()
    assert removed and {r.node for r in run.reports[-3:]} == {
        n.node_id[:8] for n in nodes} - set(removed)  # the rest moved to the survivor
    assert_exact_once(run, reference, tmp_path)
