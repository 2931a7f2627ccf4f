"""Solver, reducer and trainer actors on a real local Ray instance (2 CPUs, 2 solver slots)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import ray

from actors.reducer import reducer_actor
from actors.solver import solver_actor
from actors.trainer import trainer_actor
from encoders.cache import ResultCache
from encoders.properties import Planner
from farm.model.checkpoint import Checkpoint
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.tracing import traces_table
from farm.model.train import TrainConfig
from farm.tasks.registry import get_task
from farm.verify.jobs import dispatch, shards
from farm.verify.local import LocalFarm, fold, judge
from tests.conftest import embedded_ray


@pytest.fixture(scope="module")
def planned(ckpt, circuit):
    """8 functional-equivalence and 4 content-invariance queries of quote_close, all
    distinct texts (content invariance of inputs 120-126, whose anchor decides P)."""
    planner = Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task("quote_close"))
    return (list(itertools.islice(planner.functional_equivalence(), 8))
            + list(itertools.islice(planner.content_invariance(), 60, 64)))


@pytest.fixture(scope="module")
def reference(planned):
    """The Ray-free answers (LocalFarm), computed before Ray starts."""
    with LocalFarm("z3", 60, jobs=1) as local:
        records = local.solve(planned)
    assert all(r.status != "error" for r in records.values()), [
        r.reason for r in records.values()]
    return records


@pytest.fixture(scope="module")
def local_ray():
    with embedded_ray(resources={"solver": 2}):
        yield


def run_farm(planned, ckpt, cache, actors=2, shard_size=3, mode="race"):
    """Plan → shards → solver actors → reducer, as `farm run` does; returns what it saw
    (the last: the reducer's warnings about the cache)."""
    reducer = reducer_actor(str(cache), ckpt.config, dict(ckpt.weights))
    solvers = [solver_actor(mode, 60) for _ in range(actors)]
    try:
        work = shards(planned, shard_size, lambda b: ray.get(reducer.expect.remote(b)))
        reports = dispatch(work, solvers, reducer, in_flight=2)
        results = ray.get(reducer.finish.remote({}))
        records = ray.get(reducer.fresh_records.remote())
        warnings = [*ray.get(reducer.cache_warnings.remote()),
                    *filter(None, [ray.get(reducer.discarded_warning.remote())])]
    finally:
        for a in (*solvers, reducer):
            ray.kill(a)
    return reports, results, records, warnings


def test_actors_agree_with_the_local_farm_and_resume_from_cache(reference, local_ray, planned,
                                                                ckpt, tmp_path):
    reports, results, records, _ = run_farm(planned, ckpt, tmp_path)
    solved = [h for r in reports for h in r.solved]
    assert sorted(solved) == sorted(q.hash for q in planned)  # each query exactly once
    assert len({r.actor for r in reports}) == 2  # both actors took work
    assert {r.query_hash: r.status for r in records} == {
        h: r.status for h, r in reference.items()}
    model = ExactModel(ckpt.config, ckpt.weights)
    expected = [fold(p, t, [(q, reference[q.hash], judge(q, reference[q.hash], model))
                            for q in planned if (q.property, q.task) == (p, t)])
                for p, t in dict.fromkeys((q.property, q.task) for q in planned)]
    assert [(r.property, r.status, r.queries, r.unsat) for r in results] == [
        (r.property, r.status, r.queries, r.unsat) for r in expected]
    assert all(r.status == "VERIFIED" for r in results)

    reports, results, records, _ = run_farm(planned, ckpt, tmp_path)  # resubmitted
    assert reports == [] and records == []  # not one solver invocation
    assert [(r.status, r.cached) for r in results] == [("VERIFIED", 8), ("VERIFIED", 4)]


def test_a_damaged_part_and_a_cached_answer_that_does_not_replay_heal_on_the_next_run(
        local_ray, planned, ckpt, tmp_path):
    """A truncated part is set aside (one warning line) and a cached sat with an empty model
    discarded: the resubmitted job solves exactly their queries again and verifies."""
    run_farm(planned, ckpt, tmp_path)  # every answer on disk, one part per shard
    damaged = min(tmp_path.glob("part-*.parquet"))
    lost = set(pq.read_table(damaged).column("query_hash").to_pylist())
    victim = next(q.hash for q in planned if q.hash not in lost)
    with ResultCache(tmp_path) as cache:  # a later part: it wins on opening
        cache.put([replace(cache.get(victim), status="sat", model={})])
    damaged.write_bytes(damaged.read_bytes()[:64])

    reports, results, _, warnings = run_farm(planned, ckpt, tmp_path)
    assert sorted(h for r in reports for h in r.solved) == sorted({*lost, victim})
    assert [r.status for r in results] == ["VERIFIED", "VERIFIED"]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert f"cache part {damaged} is damaged" in warnings[0]
    assert warnings[1].startswith("1 cached answer(s)")
    assert damaged.with_name(damaged.name + ".damaged").exists() and not damaged.exists()

    reports, results, _, warnings = run_farm(planned, ckpt, tmp_path)  # healed: quiet
    assert reports == [] and warnings == [] and [r.cached for r in results] == [8, 4]


def test_trainer_actor_trains_traces_and_extracts_as_the_library_does(local_ray, trained,
                                                                       ckpt, circuit):
    trainer = trainer_actor()
    try:
        config, weights, info = ray.get(trainer.train.remote(GPTConfig(), TrainConfig(seed=0)))
        assert Checkpoint(config, weights).sha256 == ckpt.sha256  # deterministic, same bytes
        assert info["accuracy"] == 1.0
        found = ray.get(trainer.extract.remote(config, weights, "quote_close"))
        assert found.circuit == circuit
        assert found.circuit.metadata["checkpoint_sha256"] == ckpt.sha256
        prompts = get_task("quote_close").domain()[:40]  # more than one batch
        table = ray.get(trainer.trace.remote(config, weights, circuit, prompts))
        local = traces_table(ExactModel(config, weights).run(prompts, circuit), circuit,
                             ckpt.sha256)
        assert table.equals(local, check_metadata=True)  # names the checkpoint it ran
    finally:
        ray.kill(trainer)
