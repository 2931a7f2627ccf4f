from farm.errors import FarmError
from farm.tasks.registry import (
    BRACKET_TYPE,
    QUOTE_CLOSE,
    Task,
    domain_rows,
    get_task,
    register,
    task_names,
)


def test_domain_is_256_rows_in_canonical_order():
    rows = domain_rows()
    assert len(rows) == 256 and [r.index for r in rows] == list(range(256))
    assert rows[0].prompt == (1, 2, 5, 9, 5, 5) and rows[1].prompt == (1, 2, 5, 10, 5, 5)
    assert rows[2].prompt == (1, 2, 5, 9, 5, 6)  # x3 varies before x2, opener innermost
    assert rows[127].prompt == (1, 2, 8, 10, 8, 8)
    assert rows[128].prompt == (1, 3, 5, 11, 5, 5) and rows[255].prompt == (1, 3, 8, 12, 8, 8)
    assert len(set(r.prompt for r in rows)) == 256


def test_targets_alternates_and_candidates():
    assert QUOTE_CLOSE.candidates == (9, 10) and BRACKET_TYPE.candidates == (13, 14)
    for row in domain_rows():
        opener = row.prompt[3]
        expected = {9: 9, 10: 10, 11: 13, 12: 14}[opener]
        assert row.target == expected
        assert {row.target, row.alternate} == set(row.task.candidates)


def test_unknown_task_names_the_task_and_the_known_ones():
    try:
        get_task("quote_closee")
    except FarmError as err:
        assert "quote_closee" in str(err) and "bracket_type" in str(err)
    else:
        raise AssertionError("expected FarmError")


def test_new_tasks_plug_in_without_touching_the_core():
    longer = Task("quote_close_long_test", 2, {9: 9, 10: 10}, n_after=3)
    register(longer)
    assert "quote_close_long_test" in task_names()
    assert longer.seq_len == 7 and len(longer.domain()) == 4 ** 4 * 2
    assert longer.domain()[0] == (1, 2, 5, 9, 5, 5, 5)
