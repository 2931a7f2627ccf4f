"""The Parquet results cache: exact round trip, append by parts, atomic writes."""

from fractions import Fraction as F

import pyarrow as pa
import pyarrow.parquet as pq

from encoders.cache import SCHEMA, Record, ResultCache
from encoders.solvers import RaceResult, Verdict

SAT = RaceResult("sat", "cvc5", (Verdict("sat", "cvc5", 0.25, {"x": F(22, 5), "y": F(-1, 3)}),))
UNKNOWN = RaceResult("unknown", None, (Verdict("unknown", "z3", 1.5, reason="timeout"),
                                      Verdict("unknown", "cvc5", 1.5, reason="timeout")))


def test_round_trip_across_reopen(tmp_path):
    sat = Record.from_result("a" * 64, "functional_equivalence", "quote_close", "17", SAT)
    with ResultCache(tmp_path) as cache:
        cache.put([sat])
        assert cache.get("a" * 64) is sat and "b" * 64 not in cache
    again = ResultCache(tmp_path)
    assert again.get("a" * 64) == sat
    assert again.get("a" * 64).model == {"x": F(22, 5), "y": F(-1, 3)}
    assert (sat.z3_seconds, sat.cvc5_seconds, sat.winner) == (None, 0.25, "cvc5")


def test_parts_append_and_later_results_win(tmp_path):
    cache = ResultCache(tmp_path)
    first = Record.from_result("h1", "robustness", "bracket_type", "3", UNKNOWN)
    cache.put([first, Record.from_result("h2", "robustness", "bracket_type", "4", UNKNOWN)])
    assert cache.flush() is not None and cache.flush() is None
    assert first.reason == "z3: timeout; cvc5: timeout"
    cache.put([Record.from_result("h1", "robustness", "bracket_type", "3", SAT)])
    cache.flush()
    cache.put([Record.from_result("h3", "robustness", "bracket_type", "5", SAT)])  # not flushed
    parts = sorted(tmp_path.glob("part-*.parquet"))
    assert len(parts) == 2 and pq.read_table(parts[0]).column_names[0] == "query_hash"
    again = ResultCache(tmp_path)
    assert again.get("h1").status == "sat" and again.get("h2").status == "unknown"
    assert len(again) == 2 and {r.query_hash for r in again} == {"h1", "h2"}


def test_half_written_temp_files_are_ignored(tmp_path):
    (tmp_path / ".tmp-part-00000000000000000001-deadbeef.parquet").write_bytes(b"PAR1 trunc")
    cache = ResultCache(tmp_path)
    assert len(cache) == 0
    cache.put([Record.from_result("h", "edge_necessity", "quote_close", "emb->attn_0", SAT)])
    cache.flush()
    assert ResultCache(tmp_path).get("h").subject == "emb->attn_0"


def test_a_damaged_part_is_set_aside_in_one_line_and_its_answers_are_absent(tmp_path):
    """Truncated, or a row that is no answer (a model that is not a map of rationals):
    the part is renamed, not deleted and not read again; the other parts still count."""
    good = Record.from_result("g", "robustness", "quote_close", "1", SAT)
    with ResultCache(tmp_path) as cache:
        cache.put([good])
    with ResultCache(tmp_path) as cache:
        cache.put([Record.from_result("t", "robustness", "quote_close", "2", SAT)])
    truncated = max(tmp_path.glob("part-*.parquet"))
    truncated.write_bytes(truncated.read_bytes()[:100])
    malformed = tmp_path / "part-99999999999999999999-bad.parquet"
    row = Record.from_result("m", "robustness", "quote_close", "3", SAT)._row()
    pq.write_table(pa.Table.from_pylist([row | {"model": '{"x": "1/0"}'}], schema=SCHEMA),
                   malformed)

    cache = ResultCache(tmp_path)
    assert cache.get("g") == good and "t" not in cache and "m" not in cache
    assert len(cache.warnings) == 2 and all("\n" not in w for w in cache.warnings)
    assert all(f"cache part {p} is damaged" in w and "solved again" in w
               for p, w in zip((truncated, malformed), cache.warnings, strict=True))
    assert {p.name for p in tmp_path.glob("*.damaged")} == {
        truncated.name + ".damaged", malformed.name + ".damaged"}
    again = ResultCache(tmp_path)  # set aside once: the next opening is quiet
    assert again.warnings == [] and len(again) == 1
