"""The induction task: BOS, a pattern, the pattern again; the answer continues it."""

from __future__ import annotations

import numpy as np
import pytest

from farm.errors import FarmError
from farm.tasks.domain import ProductDomain
from farm.tasks.registry import get_task
from farm.tasks.vocab import BOS, FILLER_POOL


def test_default_domain_is_every_pattern_of_four_over_eight_tokens() -> None:
    task = get_task("induction")
    domain = task.domain()
    assert (task.name, len(domain), task.seq_len) == ("induction", 8 ** 4, 8)
    assert task.candidates == tuple(range(21, 29))
    assert domain[0] == (BOS, *[21] * 7)
    prompts = {p for p in domain}
    assert len(prompts) == 4096
    for prompt in list(prompts)[:200]:
        assert prompt[1:4] == prompt[5:8] and set(prompt[1:]) <= set(task.candidates)


def test_target_is_the_token_after_the_previous_occurrence_of_the_last_token() -> None:
    task = get_task("induction")
    prompt = (BOS, 24, 21, 27, 22, 24, 21, 27)
    assert task.target(prompt) == 22 == prompt[prompt.index(27, 1) + 1]
    assert prompt.count(22) == 1  # seen once: only one period back
    assert [tuple(e) for e in task.stripe(prompt)] == [(5, 2, 21), (6, 3, 27), (7, 4, 22)]
    assert task.decision(prompt) == task.stripe(prompt)[-1]
    batch = task.domain().batch(100, 400)
    assert task.targets(batch).tolist() == [task.target(tuple(p)) for p in batch.tolist()]


def test_index_and_batch_agree_and_untied_prompts_are_outside() -> None:
    domain = get_task("induction:vocab=5,period=3").domain()
    assert len(domain) == 125
    batch = domain.take(np.array([7, 124, 0]))
    assert [domain.index(p) for p in batch.tolist()] == [7, 124, 0]
    assert [domain[i] for i in (7, 124, 0)] == [tuple(p) for p in batch.tolist()]
    broken = list(domain[7])
    broken[-1] = broken[-1] + 1 if broken[-1] != 25 else 21
    assert len(broken) == 6
    assert tuple(broken) not in domain


def test_pattern_tokens_are_the_family_own_ids() -> None:
    """Default prompts use no filler of SPEC's two tasks: their rows stay apart."""
    assert not set(get_task("induction").candidates) & set(FILLER_POOL[:4])


@pytest.mark.parametrize("spec", ["induction:vocab=1", "induction:vocab=16",
                                  "induction:period=1"])
def test_bad_parameters_are_refused(spec: str) -> None:
    with pytest.raises(FarmError, match="induction"):
        get_task(spec)


def test_a_tie_must_repeat_an_earlier_position_with_its_tokens() -> None:
    with pytest.raises(ValueError, match="tie"):
        ProductDomain(((1,), (2, 3), (2, 4)), (1,), ((2, 1),))


def test_rivals_are_every_other_candidate_and_the_alternate_of_two() -> None:
    task = get_task("induction:vocab=4,period=2")
    assert task.rivals(np.array([22, 21])).tolist() == [[21, 23, 24], [22, 23, 24]]
    lookup = get_task("quote_close")
    targets = lookup.targets(lookup.domain().batch(0, 8))
    assert lookup.rivals(targets)[:, 0].tolist() == lookup.alternates(targets).tolist()
    with pytest.raises(FarmError, match="outside the candidates"):
        task.rivals(np.array([5]))


OFFSET = "induction:vocab=7,period=3,len=8"


def test_len_places_the_pattern_at_every_offset_among_distinct_tokens() -> None:
    """The variant that forces a search: 7·6·5·4·3 arrangements × 3 offsets, the answer
    at position 3, 4 or 5, its query at 7 always; each copied token occurs once before."""
    task = get_task(OFFSET)
    domain = task.domain()
    assert (task.name, len(domain), task.seq_len) == (OFFSET, 7560, 8)
    prompts = domain.batch(0, len(domain))
    assert len({tuple(p) for p in prompts.tolist()}) == 7560
    assert (prompts[:, 0] == BOS).all()
    assert all(len(set(p[1:6])) == 5 for p in prompts.tolist())
    keys = task.stripe_keys(prompts)
    assert sorted(set(keys[:, -1].tolist())) == [3, 4, 5]  # no fixed answer position
    for p, k in zip(prompts.tolist()[::97], keys.tolist()[::97], strict=True):
        for q, key in zip(task.stripe_queries, k, strict=True):
            assert p[1:q].count(p[q]) == 1 and p.index(p[q], 1) + 1 == key
    assert task.targets(prompts).tolist() == prompts[np.arange(7560), keys[:, -1]].tolist()


def test_the_offset_layout_decides_as_its_reference_and_trains_every_query() -> None:
    task = get_task(OFFSET)
    prompt = (BOS, 25, 21, 27, 23, 22, 21, 27)
    assert [tuple(e) for e in task.stripe(prompt)] == [(6, 3, 27), (7, 4, 23)]
    assert task.target(prompt) == 23 == task.features(prompt)
    assert task.trained_positions == (6, 7)
    assert task.position_targets(np.array([prompt])).tolist() == [[27, 23]]
    assert get_task("induction").trained_positions == (7,)  # the fixed layout: as before


def test_offset_domain_indexes_by_arithmetic_and_refuses_what_it_does_not_hold() -> None:
    domain = get_task(OFFSET).domain()
    picks = np.array([0, 1, 2519, 2520, 7559, 4321])
    batch = domain.take(picks)
    assert [domain.index(p) for p in batch.tolist()] == picks.tolist()
    assert [domain[int(i)] for i in picks] == [tuple(p) for p in batch.tolist()]
    assert list(domain)[4321] == domain[4321] == domain[-3239]
    assert domain[0] == (BOS, 21, 22, 23, 24, 25, 21, 22)
    repeated = (BOS, 21, 21, 23, 24, 25, 21, 21)
    no_answer = (BOS, 21, 22, 23, 24, 25, 24, 25)  # the window's next token is past the span
    not_a_window = (BOS, 21, 22, 23, 24, 25, 21, 23)
    for prompt in (repeated, no_answer, not_a_window, (BOS, 21, 22)):
        assert prompt not in domain
    with pytest.raises(IndexError):
        domain.take(np.array([7560]))


@pytest.mark.parametrize("spec", ["induction:period=3,len=6", "induction:vocab=4,period=2,len=7",
                                  "induction:len=9,colour=2"])
def test_offset_parameters_that_cannot_make_the_layout_are_refused(spec: str) -> None:
    with pytest.raises(FarmError, match="induction"):
        get_task(spec)


def test_names_written_before_len_existed_stay_the_same() -> None:
    """Certificates state their task's name: len is written only when set."""
    assert get_task("induction:len=0").name == "induction"
    assert get_task("induction:vocab=5,period=3").name == "induction:vocab=5,period=3"
    assert get_task({"induction": {"len": 9}}).name == "induction:vocab=8,period=4,len=9"
