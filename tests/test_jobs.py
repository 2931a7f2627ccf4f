"""Job specs, sharding and the reducer's collector: the Ray-free half of the farm."""

from __future__ import annotations

import itertools
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from actors.reducer import Collector
from encoders.cache import ResultCache
from encoders.properties import FUNCTIONAL_EQUIVALENCE, PROPERTIES, RADIUS, Planner
from encoders.solvers import SolverPool
from farm.discovery.acdc import extract
from farm.errors import FarmError
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.jobs import (
    JobSpec,
    Shard,
    job_spec_from_dict,
    job_stats,
    load_job_spec,
    shards,
    solve_shard,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def planner(trained, ckpt) -> Planner:
    """quote_close on its ACDC circuit."""
    circuit = extract(trained.model, "quote_close").circuit
    return Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task("quote_close"))


@pytest.fixture(scope="module")
def planned(planner):
    """The first 6 functional-equivalence queries of quote_close on its ACDC circuit."""
    return list(itertools.islice(planner.functional_equivalence(), 6))


def test_default_job_yaml_parses():
    spec = load_job_spec(ROOT / "job.yaml")
    assert spec.checkpoint == "train" and spec.circuits == "extract"
    assert spec.properties == tuple(PROPERTIES.values())
    assert spec.epsilon == Fraction(1, 100)  # the decimal as written, not float(0.01)
    assert spec.out == str(ROOT / "runs/demo")


def test_spec_resolves_paths_and_refuses_bad_fields(tmp_path):
    spec = job_spec_from_dict({"checkpoint": "ck", "tasks": ["quote_close"],
                               "circuits": {"quote_close": "c.json"}, "epsilon": 0.1},
                              tmp_path)
    assert spec.checkpoint == str(tmp_path / "ck")
    assert spec.circuits == {"quote_close": str(tmp_path / "c.json")}
    assert spec.epsilon == Fraction(1, 10)
    for bad, message in (({"shards": 3}, "unknown field"), ({"tasks": ["nope"]}, "tasks"),
                         ({"properties": ["fe", "x"]}, "properties"),
                         ({"solver": "yices"}, "solver"), ({"epsilon": "-1"}, "epsilon"),
                         ({"solver_actors": 0}, "at least 1"),
                         ({"circuits": {"bracket_type": "c.json"}}, "no entry"),
                         ({"timeout": "abc"}, "timeout must be a finite number, got 'abc'"),
                         ({"shard_size": "x"}, "shard_size must be a whole number"),
                         ({"in_flight": True}, "in_flight must be a whole number"),
                         ({"tasks": 5}, "tasks must be a list of text, got 5"),
                         ({"tasks": []}, "tasks must name at least one task"),
                         ({"checkpoint": 5}, "checkpoint must be text, got 5"),
                         ({"name": ["a", "b"]}, r"name must be text, got \['a', 'b'\]"),
                         ({"out": None}, "out must be text, got None"),
                         ({"signing_key": 1}, "signing_key must be text or null"),
                         ({"epsilon": [1]}, "epsilon must be a number"),
                         ({"circuits": {"quote_close": 5}}, "circuits must be text or a mapping"),
                         ({"train": None}, "train must be a mapping, got None"),
                         ({"train": {"seed": "abc"}}, "train.seed must be a whole number"),
                         ({"train": {"lr": "fast"}}, "train.lr must be a finite number"),
                         ({"train": {"device": 0}}, "train.device must be text"),
                         ({"train": {"model": {"d_model": "16"}}},
                          "train.model.d_model must be a whole number"),
                         ({"train": {"model": {"lm_head_bias": "no"}}},
                          "train.model.lm_head_bias must be true or false"),
                         ({"train": {"model": {"bogus": 1}}}, "unknown train.model option"),
                         ({"train": {"bogus": 1}}, "unknown train option"),
                         ({"train": {"model": {"n_heads": 3}}}, "train.model: d_model 16"),
                         ({"radius": True, "properties": ["fe"]}, "radius needs the robustness"),
                         ({"radius": "yes"}, "radius must be true or false"),
                         ({"radius_precision": "0"}, "radius_precision must be positive"),
                         ({"radius_solver": "yices"}, "radius_solver must be one of"),
                         ({"tasks": ["induction"]}, "robustness on farm run's units needs "
                          "tasks of two candidates"),
                         ({"tasks": ["max_of_k:k=3,vocab=16"], "properties": ["rob"]},
                          "two candidates")):
        with pytest.raises(FarmError, match=message):
            job_spec_from_dict(bad)


def test_shards_skip_what_is_answered(planned):
    answered = {planned[1].hash, planned[4].hash}
    seen, skipped = [], []

    def expect(batch):
        assert all(q.text == "" for q in batch)  # the reducer never receives the text
        seen.extend(batch)
        return [q.hash for q in batch if q.hash not in answered]

    out = list(shards(planned, 4, expect, skipped.append))
    assert [len(s.queries) for s in out] == [3, 1] and skipped == [1, 1]
    assert [s.index for s in out] == [0, 1]
    assert [q.hash for s in out for q in s.queries] == [
        q.hash for q in planned if q.hash not in answered]
    assert all(q.text for s in out for q in s.queries)  # the solvers do
    assert len(seen) == len(planned)


def test_a_text_repeated_within_a_batch_is_solved_once(planned, ckpt, tmp_path):
    batch = [planned[0], planned[1], replace(planned[0], property="content_invariance")]
    skipped = []
    reducer = Collector(tmp_path, ckpt.config, dict(ckpt.weights))
    [shard] = shards(batch, 3, reducer.expect, skipped.append)
    assert [q.hash for q in shard.queries] == [planned[0].hash, planned[1].hash]
    assert skipped == [1]


def test_collector_persists_dedupes_and_resumes(planned, ckpt, tmp_path):
    model_args = (ckpt.config, dict(ckpt.weights))
    col = Collector(tmp_path, *model_args)
    todo = col.expect(planned)
    assert todo == [q.hash for q in planned]
    with SolverPool("z3", 60) as pool:
        records = solve_shard(pool, Shard(0, tuple(planned)))
    assert col.add(records[:4]) == 4
    assert col.add(records[2:]) == 2 and col.duplicates == 2  # a rerun shard counts once
    flipped = replace(records[0], status="sat")
    col.add([flipped])
    assert col.records[planned[0].hash].status == "error"  # sat after unsat: never a choice
    assert len(list(tmp_path.glob("part-*.parquet"))) == 3  # each add is on disk at once

    [result] = col.finish({})
    assert (result.property, result.queries, result.errors) == (FUNCTIONAL_EQUIVALENCE, 6, 1)
    assert result.status == "ERROR"

    again = Collector(tmp_path, *model_args)  # the job resubmitted: only the conflict is redone
    assert again.expect(planned) == [planned[0].hash]
    again.add(records[:1])
    [result] = again.finish({})
    assert (result.status, result.unsat, result.cached) == ("VERIFIED", 6, 5)


def test_collector_retries_unknown_and_refuses_missing_answers(planned, ckpt, tmp_path):
    col = Collector(tmp_path, ckpt.config, dict(ckpt.weights))
    col.expect(planned[:2])
    with SolverPool("z3", 60) as pool:
        solved = solve_shard(pool, Shard(0, tuple(planned[:1])))
    col.add([replace(solved[0], status="unknown", reason="timeout")])
    with pytest.raises(RuntimeError, match="1 planned queries have no answer"):
        col.finish({})
    assert Collector(tmp_path, ckpt.config, dict(ckpt.weights)).expect(planned[:1]) == [
        planned[0].hash]  # an unknown is worth another try


def test_the_radius_search_asks_an_undecided_text_again_and_its_answer_replaces(
        planned, ckpt, tmp_path):
    """Its first step repeats robustness's text at ε: a timeout there is no radius answer."""
    col = Collector(tmp_path, ckpt.config, dict(ckpt.weights))
    col.expect(planned[:2])
    with SolverPool("z3", 60) as pool:
        solved = solve_shard(pool, Shard(0, tuple(planned[:2])))
    col.add([replace(solved[0], status="unknown", reason="timeout"), solved[1]])
    [result] = col.finish({})
    assert (result.unknown, result.unsat) == (1, 1)  # the property's verdict, folded first
    again = replace(planned[0], property=RADIUS)
    assert col.expect([again, planned[1]]) == []  # as before: asked already
    assert col.expect([again, planned[1]], retry_undecided=True) == [planned[0].hash]
    col.add(solved[:1])
    assert col.answers([planned[0].hash])[planned[0].hash].status == "unsat"


def test_identical_texts_are_solved_once_and_judged_per_query(planned, ckpt, tmp_path):
    twin = replace(planned[0], subject="twin")  # same text, another input's replay
    col = Collector(tmp_path, ckpt.config, dict(ckpt.weights))
    assert col.expect([planned[0], twin]) == [planned[0].hash]
    with SolverPool("z3", 60) as pool:
        col.add(solve_shard(pool, Shard(0, (planned[0],))))
    assert len(col.outcomes) == 2
    [result] = col.finish({})
    assert (result.queries, result.unsat, result.cached, result.status) == (
        2, 2, 0, "VERIFIED")


def test_job_stats_counts_fresh_answers_only(planned):
    with SolverPool("race", 60) as pool:
        records = solve_shard(pool, Shard(0, tuple(planned[:3])))
    stats = job_stats(records, total=5, seconds=2.0, actors=1, slowest=2)
    assert (stats.solved, stats.reused, stats.throughput) == (3, 2, 1.5)
    assert sum(stats.wins.values()) == 3 and stats.unknowns == 0
    assert len(stats.slowest) == 2 and stats.slowest[0]["seconds"] >= stats.slowest[1]["seconds"]
    assert JobSpec().solver == "race"


def test_a_cached_answer_that_does_not_replay_is_asked_again_never_trusted(
        planner, planned, ckpt, tmp_path):
    """A sat with an empty model, or with margins exact replay does not give, on disk in a
    later part than the true answer: the reducer neither judges it an error forever nor
    crashes on a robustness query (η missing); it asks again, and the new answer lasts."""
    rob = next(iter(planner.robustness(Fraction(1, 100))))
    queries = [*planned[:3], rob]
    with SolverPool("race", 60) as pool:
        true = solve_shard(pool, Shard(0, tuple(queries)))
    assert [r.status for r in true] == ["unsat"] * 4
    fake = {v: Fraction(0) for v in planned[1].model_vars}
    bad = [replace(true[0], status="sat", model={}),
           replace(true[1], status="sat", model=fake),
           replace(true[3], status="sat", model={})]
    with ResultCache(tmp_path) as cache:
        cache.put(true)
    with ResultCache(tmp_path) as cache:  # a later part: these win on opening
        cache.put(bad)

    col = Collector(tmp_path, ckpt.config, dict(ckpt.weights))
    todo = col.expect(queries)
    assert todo == [planned[0].hash, planned[1].hash, rob.hash]  # planned[2]'s answer stands
    assert col.discarded_warning().startswith("3 cached answer(s)")
    with SolverPool("race", 60) as pool:
        col.add(solve_shard(pool, Shard(1, tuple(q for q in queries if q.hash in todo))))
    assert [(r.property, r.status, r.cached) for r in col.finish({})] == [
        (FUNCTIONAL_EQUIVALENCE, "VERIFIED", 1), ("robustness", "VERIFIED", 0)]
    again = Collector(tmp_path, ckpt.config, dict(ckpt.weights))
    assert again.expect(queries) == [] and again.discarded_warning() is None
