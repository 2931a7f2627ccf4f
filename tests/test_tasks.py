"""Task families, their specs and canonical names, and domains that are never materialised."""

import hashlib
import random
from fractions import Fraction

import numpy as np
import pytest

from encoders.properties import Planner
from farm.errors import FarmError
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
from farm.tasks.registry import canonical, domain_rows, get_task
from farm.tasks.vocab import CLOSE_PAREN, OPEN_PAREN
from farm.verify.jobs import job_spec_from_dict
from tests.conftest import random_model, weights_of


def test_domain_is_256_rows_in_canonical_order():
    rows = domain_rows()
    assert len(rows) == 256 and [r.index for r in rows] == list(range(256))
    assert rows[0].prompt == (1, 2, 5, 9, 5, 5) and rows[1].prompt == (1, 2, 5, 10, 5, 5)
    assert rows[2].prompt == (1, 2, 5, 9, 5, 6)  # x3 varies before x2, opener innermost
    assert rows[127].prompt == (1, 2, 8, 10, 8, 8)
    assert rows[128].prompt == (1, 3, 5, 11, 5, 5) and rows[255].prompt == (1, 3, 8, 12, 8, 8)
    assert len(set(r.prompt for r in rows)) == 256


def test_targets_alternates_and_candidates():
    assert get_task("quote_close").candidates == (9, 10)
    assert get_task("bracket_type").candidates == (13, 14)
    for row in domain_rows():
        opener = row.prompt[3]
        expected = {9: 9, 10: 10, 11: 13, 12: 14}[opener]
        assert row.target == expected
        assert {row.target, row.alternate} == set(row.task.candidates)


def test_the_default_tasks_plan_the_queries_they_always_planned():
    """Checkpoints, caches and certificates name queries by hash: the families must not
    change one text of SPEC's two tasks (digest taken before the families existed)."""
    model = random_model(0)
    exact = ExactModel(model.cfg, weights_of(model))
    digest = hashlib.sha256()
    for name in ("quote_close", "bracket_type"):
        planner = Planner(exact, Circuit.full(2, 1, "block", name), get_task(name))
        queries = [*planner.functional_equivalence(), *planner.content_invariance(),
                   planner.robustness_query(5, Fraction(1, 100))]
        for q in queries:
            digest.update(q.hash.encode())
    assert digest.hexdigest() == \
        "f779cd5765d2af91defce3e040331f6c36523721d32d96d69f418fc4bd68258e"


@pytest.mark.parametrize("spec, name", [
    ("quote_close", "quote_close"),
    ("quote_close:len=6,fillers=4", "quote_close"),  # SPEC's task, by its defaults
    ("quote_close:fillers=8,len=10", "quote_close:len=10,fillers=8"),
    (" bracket_type:len=8 ", "bracket_type:len=8,fillers=4"),
    ({"bracket_depth": {"len": 8, "fillers": 2}}, "bracket_depth:len=8,fillers=2"),
    ({"bracket_type": None}, "bracket_type"),
])
def test_a_spec_has_one_canonical_name(spec, name):
    assert canonical(spec) == name
    assert get_task(spec) is get_task(name) and get_task(spec).name == name


@pytest.mark.parametrize("spec, says", [
    ("quote_closee", "known families: quote_close, bracket_type, bracket_depth"),
    ("quote_close:length=10", "unknown parameter(s) length; it takes len, fillers"),
    ("quote_close:len=ten", "len must be a whole number, got 'ten'"),
    ("quote_close:len=10,len=11", "is not a new k=v parameter"),
    ("quote_close:len", "is not a new k=v parameter"),
    ("quote_close:len=3", "len must be at least 4"),
    ("quote_close:fillers=0", "fillers must be 1..19"),
    ({"quote_close": 10}, "expected {family: {parameter: value}}"),
])
def test_a_bad_spec_is_named(spec, says):
    with pytest.raises(FarmError, match=None) as err:
        get_task(spec)
    assert says in str(err.value)


def test_a_domain_of_millions_is_indexed_not_listed():
    domain = get_task("quote_close:len=10,fillers=8").domain()
    assert len(domain) == 2 * 8 ** 7 == 4_194_304 and domain.seq_len == 10
    assert domain[0] == (1, 2, 5, 9, 5, 5, 5, 5, 5, 5)
    assert domain[1] == (1, 2, 5, 10, 5, 5, 5, 5, 5, 5)  # opener innermost
    assert domain[2] == (1, 2, 5, 9, 5, 5, 5, 5, 5, 6)  # then the last filler
    assert domain[-1] == (1, 2, 18, 10, 18, 18, 18, 18, 18, 18)
    for i in random.Random(0).sample(range(len(domain)), 200):
        assert domain.index(domain[i]) == i
    start = 4_000_000
    batch = domain.batch(start, start + 1000)
    assert batch.shape == (1000, 10) and batch.dtype == np.int64
    assert [tuple(r) for r in batch[::97]] == [domain[start + k] for k in range(0, 1000, 97)]
    assert (1, 2, 5, 9, 5, 5, 5, 5, 5, 4) not in domain
    with pytest.raises(IndexError):
        domain[len(domain)]


def test_iteration_follows_the_indices():
    domain = get_task("bracket_depth:len=6,fillers=1").domain()
    assert list(domain) == [domain[i] for i in range(len(domain))]
    assert [tuple(r) for r in domain.batch(0, len(domain))] == list(domain)


def test_bracket_depth_reads_nesting_and_depth():
    small, large = get_task("bracket_depth"), get_task("bracket_depth:len=8,fillers=2")
    assert len(small.domain()) == 3 ** 4 and len(large.domain()) == 4 ** 6
    o, c, f = OPEN_PAREN, CLOSE_PAREN, 5
    assert small.target((1, 4, o, f, f, f)) == CLOSE_PAREN  # one open
    assert small.target((1, 4, o, c, f, f)) == OPEN_PAREN  # closed again
    assert small.target((1, 4, c, o, o, f)) == OPEN_PAREN  # went below zero first
    assert small.target((1, 4, o, o, c, f)) == CLOSE_PAREN  # depth 1 left
    assert small.same_class((1, 4, o, f, f, f), (1, 4, f, f, f, o))
    assert not small.same_class((1, 4, o, f, f, f), (1, 4, o, o, f, f))  # depth 1 vs 2
    assert {small.target(p) for p in small.domain()} == {OPEN_PAREN, CLOSE_PAREN}


def test_content_invariance_groups_by_the_features_the_program_reads():
    model = random_model(0, vocab_size=32, seq_len=6)
    task = get_task("bracket_depth")
    planner = Planner(ExactModel(model.cfg, weights_of(model)),
                      Circuit.full(2, 1, "block", task.name), task)
    pairs = [q.prompts for q in planner.content_invariance(pairwise=True)]
    assert pairs and all(len(p) == 2 and task.same_class(*p) for p in pairs)
    classes = {task.features(p) for p in task.domain()}
    assert len(classes) > 2  # finer than the target: depth and nesting, not the answer


@pytest.mark.parametrize("spec", ["quote_close", "bracket_type:len=7", "bracket_depth",
                                  "bracket_depth:len=8,fillers=2", "induction",
                                  "induction:vocab=7,period=3,len=8"])
def test_feature_codes_are_the_classes_of_the_features(spec):
    """Vectorised class codes (what content invariance by evaluation groups by) partition
    the domain exactly as `features` does, batch after batch."""
    task = get_task(spec)
    domain = task.domain()
    n = min(len(domain), 5000)
    codes = np.concatenate([task.feature_codes(domain.batch(s, min(s + 700, n)))
                            for s in range(0, n, 700)])
    features = [task.features(domain[i]) for i in range(n)]
    by_code: dict[int, object] = {}
    for code, feature in zip(codes.tolist(), features, strict=True):
        assert by_code.setdefault(code, feature) == feature
    assert len(by_code) == len(set(features))


def test_a_job_spec_names_tasks_by_spec_or_mapping():
    spec = job_spec_from_dict({"tasks": ["quote_close:len=6", {"bracket_depth": {"len": 8}}],
                               "properties": ["fe", "ci", "en"],
                               "circuits": {"quote_close": "full",
                                            "bracket_depth:len=8": "full"}})
    assert spec.tasks == ("quote_close", "bracket_depth:len=8,fillers=1")
    assert set(spec.circuits) == set(spec.tasks)
    with pytest.raises(FarmError, match="job: tasks: unknown task 'nope'"):
        job_spec_from_dict({"tasks": ["nope"]})
