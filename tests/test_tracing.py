"""Trace files give back exactly the branch records of the exact evaluator."""

import pyarrow.parquet as pq
import pytest

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
from farm.model.tracing import TraceReader, record_traces
from farm.tasks.registry import domain_rows
from tests.conftest import random_model, weights_of

PROMPTS = [r.prompt for r in domain_rows()]


def test_all_256_rows_round_trip(trained, tmp_path):
    model = ExactModel(trained.model.cfg, weights_of(trained.model))
    record_traces(model, PROMPTS, tmp_path / "trace.parquet")
    reader = TraceReader(tmp_path / "trace.parquet")
    expected = model.run(PROMPTS)
    assert len(reader) == 256 and reader.prompts == PROMPTS and reader.circuit is None
    assert reader.checkpoint_sha256 is None  # not recorded: any checkpoint may read it
    assert TraceReader(tmp_path / "trace.parquet", "0" * 64).checkpoint_sha256 is None
    for index, row in enumerate(expected):
        assert reader.trace(index) == row.trace, index
    # one row per (input, position, site): 8 sites per position, plus the final norm
    assert pq.read_metadata(tmp_path / "trace.parquet").num_rows == 256 * (6 * 8 + 1)


def test_head_circuit_traces_keep_their_types(tmp_path):
    torch_model = random_model(seed=2, n_heads=2)
    model = ExactModel(torch_model.cfg, weights_of(torch_model))
    circuit = Circuit.full(2, 2, "head").without(("attn_0_h_1", "mlp_0"))
    prompts = PROMPTS[::16]
    record_traces(model, prompts, tmp_path / "t.parquet", circuit)
    reader = TraceReader(tmp_path / "t.parquet")
    assert reader.circuit == circuit
    for index, row in enumerate(model.run(prompts, circuit)):
        got = reader.trace(index)
        assert got == row.trace
        for position, sites in enumerate(row.trace):
            for site, record in sites.items():
                assert type(got[position][site]) is type(record)
                if site.endswith(".norm"):
                    assert type(got[position][site].p) is type(record.p)


def test_the_checkpoint_identity_is_recorded_and_checked(tmp_path):
    torch_model = random_model(seed=3)
    ckpt = Checkpoint.from_model(torch_model)
    other = Checkpoint.from_model(random_model(seed=4)).sha256
    path = tmp_path / "t.parquet"
    record_traces(ExactModel(ckpt.config, ckpt.weights), PROMPTS[:2], path,
                  checkpoint_sha256=ckpt.sha256)
    assert TraceReader(path).checkpoint_sha256 == ckpt.sha256
    assert TraceReader(path, ckpt.sha256).prompts == PROMPTS[:2]
    with pytest.raises(FarmError, match=f"t.parquet was recorded for checkpoint {ckpt.sha256}, "
                                        f"not {other}"):
        TraceReader(path, other)


def test_bad_trace_files_are_refused(tmp_path):
    with pytest.raises(FarmError, match="cannot read trace file"):
        TraceReader(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(FarmError, match="cannot read trace file"):
        TraceReader(tmp_path / "junk.parquet")
