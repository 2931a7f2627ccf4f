"""Units of work: folded per-unit verdicts equal the whole-domain evaluator; a cover with
a gap, a duplicate or an overlap is refused; the ledger resumes per unit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.tasks.registry import get_task
from farm.units.fold import DECISION_PROPERTIES, fold_units
from farm.units.ledger import Ledger, UnitShardResult
from farm.units.unit import Unit, circuit_hash, cover_problems, split
from farm.units.verdict import UnitVerdict, decide_unit
from farm.verify.evaluate import Evaluator
from farm.verify.jobs import ShardReport
from farm.verify.local import resolve_circuit
from tests.conftest import random_model

FAMILY = "quote_close:len=6,fillers=8"  # 1,024 inputs over the default model's vocabulary


def _summary(result):
    return (result.status, result.failing, result.routes,
            [c["subject"] for c in result.counterexamples])


@pytest.fixture(scope="module")
def wrong():
    """A random model and its full circuit: it fails inputs and pairs, which units must
    count exactly as the whole-domain evaluator does."""
    ckpt = Checkpoint.from_model(random_model(seed=3))
    return ckpt, resolve_circuit("full", ckpt, "quote_close")


@pytest.mark.parametrize("task", ["quote_close", FAMILY])
@pytest.mark.parametrize("unit_size", [7, 100])
@pytest.mark.parametrize("model", ["trained", "random"])
def test_units_folded_equal_the_whole_domain(ckpt, circuit, wrong, task, unit_size, model):
    if model == "random":
        ckpt, circuit = wrong
    whole = Evaluator(ckpt, circuit, get_task(task), progress=False)
    expected = [_summary(getattr(whole, p)()) for p in DECISION_PROPERTIES]
    evaluator = Evaluator(ckpt, circuit, get_task(task), progress=False)
    units = split(task, circuit_hash(circuit), len(evaluator.domain), unit_size)
    verdicts = [decide_unit(evaluator, u) for u in units]
    assert [_summary(r) for r in fold_units(evaluator, verdicts[::-1])] == expected
    if model == "random":
        assert expected[0][1] > 0 and expected[1][1] > 0


def test_a_unit_round_trips_and_bad_json_is_named():
    u = Unit("quote_close", "ab" * 32, 3, 9)
    assert Unit.from_json(json.loads(json.dumps(u.to_json()))) == u
    with pytest.raises(FarmError, match="start must be int"):
        Unit.from_json({**u.to_json(), "start": "3"})
    with pytest.raises(FarmError, match="0 <= start < stop"):
        Unit("quote_close", "x", 5, 5)


@pytest.mark.parametrize("change, message", [
    (lambda us: us[:2] + us[3:], "inputs [20, 30) are in no unit"),
    (lambda us: us + [us[1]], "unit [10, 20) is listed twice"),
    (lambda us: us[:1] + [dataclasses.replace(us[1], start=5)] + us[2:],
     "unit [5, 20) overlaps"),
    (lambda us: us[:-1] + [dataclasses.replace(us[-1], stop=45)], "past the domain's 40"),
    (lambda us: us[:-1], "inputs [30, 40) are in no unit"),
])
def test_cover_problems_name_gaps_duplicates_and_overlaps(change, message):
    units = split("t", "c", 40, 10)
    assert cover_problems(units, 40) == []
    assert any(message in p for p in cover_problems(change(units), 40))


def test_fold_refuses_a_partial_cover(ckpt, circuit):
    evaluator = Evaluator(ckpt, circuit, get_task("quote_close"), progress=False)
    units = split("quote_close", circuit_hash(circuit), len(evaluator.domain), 32)
    verdicts = [decide_unit(evaluator, u) for u in units[1:]]
    with pytest.raises(FarmError, match=r"inputs \[0, 32\) are in no unit"):
        fold_units(evaluator, verdicts)


def test_ledger_persists_resumes_and_counts_a_unit_once(ckpt, circuit, tmp_path):
    evaluator = Evaluator(ckpt, circuit, get_task("quote_close"), progress=False)
    units = split("quote_close", circuit_hash(circuit), len(evaluator.domain), 32)
    verdicts = [decide_unit(evaluator, u) for u in units]
    ledger = Ledger(tmp_path)
    assert ledger.expect(units) == units

    def shard(vs):
        return UnitShardResult(ShardReport(0, tuple(v.unit.key for v in vs), 0.0, "a", "n"),
                               tuple(vs))

    ledger.accept(shard(verdicts[:2]))
    ledger.accept(shard(verdicts[1:3]))  # unit 1 again: a rerouted shard
    assert ledger.duplicates == 1
    again = Ledger(tmp_path)  # the job resubmitted
    assert again.expect(units) == units[3:]
    assert again.collect(units[:3]) == verdicts[:3]
    part = sorted(tmp_path.glob("part-*.json"))[0]
    part.write_text("{not json")
    damaged = Ledger(tmp_path)
    assert len(damaged.warnings) == 1 and "decided again" in damaged.warnings[0]
    assert len(damaged.expect(units)) > len(units) - 3


def test_a_verdict_round_trips(ckpt, circuit):
    evaluator = Evaluator(ckpt, circuit, get_task(FAMILY), progress=False)
    [v] = [decide_unit(evaluator, u) for u in split(FAMILY, "c", 1024, 1024)]
    assert UnitVerdict.from_json(json.loads(json.dumps(v.to_json()))) == v
    with pytest.raises(FarmError, match="malformed"):
        UnitVerdict.from_json({**v.to_json(), "classes": 3})
