"""Faults: a solver actor killed, a node removed, the driver killed; answers stay exact.

Every run is compared with the Ray-free `LocalFarm` on the same queries: the
fault-free reference. "Exactly once" is checked on what the reducer folded.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from ray.cluster_utils import Cluster

from actors.reducer import reducer_actor
from actors.solver import solver_actor
from encoders.cache import ResultCache
from encoders.properties import Planner
from farm.discovery.acdc import extract
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.jobs import dispatch, shards
from farm.verify.local import LocalFarm
from tests.conftest import embedded_ray


@pytest.fixture(scope="module")
def planned(trained, ckpt):
    """16 functional-equivalence queries of quote_close on its ACDC circuit."""
    circuit = extract(trained.model, "quote_close").circuit
    planner = Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task("quote_close"))
    return list(itertools.islice(planner.functional_equivalence(), 16))


@pytest.fixture(scope="module")
def reference(planned):
    with LocalFarm("z3", 60, jobs=1) as local:
        records = local.solve(planned)
    assert all(r.status != "error" for r in records.values()), [
        r.reason for r in records.values()]
    return {h: r.status for h, r in records.items()}


@contextlib.contextmanager
def _awaiting_exit(pid: int, deadline_s: float = 60.0) -> Iterator[None]:
    """On leaving, block until process `pid` has exited (a pidfd: no polling, no pid reuse)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        yield
        return
    try:
        yield
        if not select.select([fd], [], [], deadline_s)[0]:
            raise TimeoutError(f"process {pid} still running {deadline_s:g} s after its kill")
    finally:
        os.close(fd)


def persisted(cache: Path) -> Counter[str]:
    """How many Parquet parts hold each hash: the audit trail, not the cache's last-wins view."""
    return Counter(h for part in cache.glob("part-*.parquet")
                   for h in pq.read_table(part, columns=["query_hash"])["query_hash"].to_pylist())


class Farm:
    """A reducer and solver actors on whatever cluster Ray is connected to."""

    def __init__(self, ckpt, cache, actors=2):
        self.reducer = reducer_actor(str(cache), ckpt.config, dict(ckpt.weights))
        self.reducer_pid: int = ray.get(self.reducer.__ray_call__.remote(lambda _: os.getpid()))
        self.solvers = [solver_actor("z3", 60) for _ in range(actors)]

    def run(self, planned, on_done=lambda s, r: None, shard_size=2):
        work = shards(planned, shard_size, lambda b: ray.get(self.reducer.expect.remote(b)))
        return dispatch(work, self.solvers, self.reducer, 2, on_done)

    def folded(self):
        """(property results, statuses by hash) of what the reducer holds."""
        results = ray.get(self.reducer.finish.remote({}))
        records = ray.get(self.reducer.fresh_records.remote())
        return results, records

    def close(self):
        """Kill every actor; return only once the reducer's process is gone.

        `ray.kill` returns, and Ray reports the actor dead, before its process
        stops: a shard it was persisting can still land in the cache after
        that. Once the process has exited, what the cache holds is final.
        """
        with _awaiting_exit(self.reducer_pid):  # on this node: the reducer is pinned here
            for a in (*self.solvers, self.reducer):
                ray.kill(a)


def assert_exact_once(planned, reference, results, records, cached=0):
    [result] = results
    assert result.queries == len(planned) and result.cached == cached
    assert result.unsat + result.sat + result.unknown + result.errors == len(planned)
    assert len({r.query_hash for r in records}) == len(records)  # one answer per hash
    differ = {r.query_hash[:12]: (r.status, r.reason) for r in records
              if r.status != reference[r.query_hash]}
    assert not differ, differ  # (status, reason) of every answer the reference contradicts
    assert result.status == ("VERIFIED" if set(reference.values()) == {"unsat"} else
                             result.status)


def _ping_after_restart(actor, deadline_s: float = 120.0) -> bool:
    """Ping an actor Ray is restarting: "unavailable" is the restart in progress, not an answer."""
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            return ray.get(actor.ping.remote())
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.5)


class TestLocal:
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def local_ray(cls):
        with embedded_ray(resources={"solver": 2}):
            yield

    def test_killed_actor_restarts_and_its_shards_are_rerouted(self, planned, reference, ckpt,
                                                               tmp_path):
        farm = Farm(ckpt, tmp_path)
        killed = []

        def kill_once(shard, report):
            if not killed:
                killed.append(farm.solvers[0])
                ray.kill(farm.solvers[0], no_restart=False)  # dies with a shard in flight

        try:
            reports = farm.run(planned, kill_once)
            results, records = farm.folded()
            assert _ping_after_restart(farm.solvers[0])  # Ray brought it back
        finally:
            farm.close()
        assert killed and len(records) == len(planned)
        assert {h for r in reports for h in r.solved} == {q.hash for q in planned}
        assert_exact_once(planned, reference, results, records)

    def test_the_only_actor_killed_gets_its_work_back_after_the_restart(self, planned,
                                                                         reference, ckpt,
                                                                         tmp_path):
        """While Ray restarts an actor its ping answers "unavailable": that is not death."""
        farm = Farm(ckpt, tmp_path, actors=1)
        pids = []

        def kill_once(shard, report):
            if not pids:
                pids.append(ray.get(farm.solvers[0].__ray_call__.remote(lambda _: os.getpid())))
                ray.kill(farm.solvers[0], no_restart=False)

        try:
            reports = farm.run(planned, kill_once)
            results, records = farm.folded()
            after = ray.get(farm.solvers[0].__ray_call__.remote(lambda _: os.getpid()))
        finally:
            farm.close()
        assert pids and after != pids[0]  # the same actor, restarted in a new process
        assert len(records) == len(planned)
        assert {h for r in reports for h in r.solved} == {q.hash for q in planned}
        assert_exact_once(planned, reference, results, records)

    def test_more_actors_than_solver_slots_finish_on_the_placed_ones(self, planned, reference,
                                                                     ckpt, tmp_path):
        """A third actor never finds a slot (2 here): no shard may wait for it."""
        farm = Farm(ckpt, tmp_path, actors=3)
        outcome = []
        job = threading.Thread(target=lambda: outcome.append(farm.run(planned)), daemon=True)
        try:
            job.start()
            job.join(timeout=180)
            assert outcome, "the job waited for an actor that has no slot"
            results, records = farm.folded()
        finally:
            farm.close()
        assert {h for r in outcome[0] for h in r.solved} == {q.hash for q in planned}
        assert_exact_once(planned, reference, results, records)

    def test_killed_driver_resubmitted_solves_only_what_is_missing(self, planned, reference,
                                                                   ckpt, tmp_path):
        done = []

        def dies_after_two_shards(queries):
            for q in queries:
                if len(done) >= 2:
                    raise KeyboardInterrupt  # the driver is killed mid-job
                yield q

        farm = Farm(ckpt, tmp_path)
        try:
            with pytest.raises(KeyboardInterrupt):
                farm.run(dies_after_two_shards(planned), lambda s, r: done.append(r))
        finally:
            farm.close()
        # What reached the disk, shards in flight at the kill included (close() waited for the
        # reducer's process to exit): exactly what the resubmitted job starts from.
        first = {r.query_hash for r in ResultCache(tmp_path)}
        assert {h for r in done for h in r.solved} <= first
        assert 0 < len(first) < len(planned)
        assert persisted(tmp_path) == dict.fromkeys(first, 1)

        farm = Farm(ckpt, tmp_path)  # the job resubmitted, same results directory
        try:
            reports = farm.run(planned)
            results, records = farm.folded()
        finally:
            farm.close()
        solved = [h for r in reports for h in r.solved]
        assert not set(solved) & first  # zero solver invocations for persisted hashes
        assert sorted(solved) == sorted(q.hash for q in planned if q.hash not in first)
        assert_exact_once(planned, reference, results, records, cached=len(first))
        assert persisted(tmp_path) == dict.fromkeys({q.hash for q in planned}, 1)  # no rework


def test_node_removed_mid_job(planned, reference, ckpt, tmp_path):
    """Head (1 CPU, no solver slot) + 2 workers (1 CPU, 1 solver slot); one worker goes."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, resources={"solver": 1}) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    farm = None
    try:
        cluster.wait_for_nodes()
        farm = Farm(ckpt, tmp_path)
        nodes = ray.get([s.ping.remote() for s in farm.solvers])
        assert len({n.split("@")[1] for n in nodes}) == 2  # one actor per worker node
        removed = []

        def remove_once(shard, report):
            if not removed:
                victim = next(w for w in workers if w.node_id[:8] != report.actor[-8:])
                removed.append(victim.node_id)
                cluster.remove_node(victim)

        reports = farm.run(planned, remove_once)
        results, records = farm.folded()
    finally:
        if farm is not None:
            farm.close()
        ray.shutdown()
        cluster.shutdown()
    assert removed and len(reports) == len(planned) // 2
    assert {h for r in reports for h in r.solved} == {q.hash for q in planned}
    assert_exact_once(planned, reference, results, records)
    assert all(not r.actor.endswith(removed[0][:8]) for r in reports[-3:])  # the rest moved
