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
