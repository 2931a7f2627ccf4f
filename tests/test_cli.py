"""The CLI as users drive it: real files, real exit codes."""

import csv
import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from farm.cli import main
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, trained):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_checkpoint(Checkpoint.from_model(trained.model), path)
    return path


def test_train_then_replay(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["train", "--out", str(out), "--seed", "0"]) == 0
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert main(["replay", "--checkpoint", str(out), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "quote_close      128/128" in printed and "bracket_type     128/128" in printed
    rows = json.loads((tmp_path / "m.json").read_text())
    assert len(rows) == 256 and all(r["margin_float"] >= 1.0 for r in rows)
    assert "/" in rows[0]["margin"] or rows[0]["margin"].lstrip("-").isdigit()
    before = (out / "model.safetensors").read_bytes()
    assert main(["train", "--out", str(out), "--seed", "1"]) == 2  # never silently replaced
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert main(["train", "--out", str(out), "--seed", "1", "--force"]) == 0
    assert (out / "model.safetensors").read_bytes() != before


def test_weights_round_trip_through_upstream_smt_weights_json(checkpoint_dir, tmp_path, capsys):
    exported = tmp_path / "smt_weights.json"
    assert main(["weights", "export", "--checkpoint", str(checkpoint_dir), "--out",
                 str(exported)]) == 0
    assert main(["replay", "--checkpoint", str(exported)]) == 2  # a file: says what to do
    assert "farm weights import" in capsys.readouterr().err
    back = tmp_path / "imported"
    assert main(["weights", "import", str(exported), "--out", str(back)]) == 0
    assert load_checkpoint(back).sha256 == load_checkpoint(checkpoint_dir).sha256
    assert main(["weights", "import", str(exported), "--out", str(back)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_replay_of_a_missing_checkpoint_fails_clearly(tmp_path, capsys):
    assert main(["replay", "--checkpoint", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def _tamper(src, dst, edit):
    """A self-consistent checkpoint (hash recorded) whose weights are bad."""
    dst.mkdir()
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256((dst / "model.safetensors").read_bytes()).hexdigest()
    (dst / "config.json").write_text(json.dumps(config))


def test_nan_weights_are_named(checkpoint_dir, tmp_path, capsys):
    bad = tmp_path / "nan"
    _tamper(checkpoint_dir, bad, lambda t: t["blocks.0.mlp.up.weight"].__setitem__((0, 0), np.nan))
    assert main(["replay", "--checkpoint", str(bad)]) == 2
    assert "blocks.0.mlp.up.weight" in capsys.readouterr().err


def test_weights_that_overflow_float32_replay_exactly_without_a_crash(checkpoint_dir, tmp_path,
                                                                      capsys):
    """3e38 is a float32, so the exact replay is defined; the float32 runtime overflows,
    and its distance from the exact logits is reported as infinite, not a crash."""
    huge = tmp_path / "huge"
    _tamper(checkpoint_dir, huge, lambda t: t["wte.weight"].__setitem__((1, 0), 3e38))
    assert main(["replay", "--checkpoint", str(huge)]) in (0, 1)  # 1: some rows fail
    assert "float32 runtime within inf of the exact logits" in capsys.readouterr().out


def test_wrong_shape_is_named(checkpoint_dir, tmp_path, capsys):
    bad = tmp_path / "shape"
    _tamper(checkpoint_dir, bad, lambda t: t.__setitem__("wpe.weight", t["wpe.weight"][:5]))
    assert main(["replay", "--checkpoint", str(bad)]) == 2
    assert "wpe.weight" in capsys.readouterr().err


def test_unknown_task_exits_non_zero(checkpoint_dir):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--checkpoint", str(checkpoint_dir), "--tasks", "no_such_task"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["verify", "--checkpoint", "{ck}", "--circuit", "full", "--task", "quote_close",
      "--out", "{file}/v.json"], "is not a directory"),
    (["verify", "--checkpoint", "{ck}", "--circuit", "full", "--task", "quote_close",
      "--out", "{tmp}"], "is a directory, not a file"),
    (["replay", "--checkpoint", "{ck}", "--json", "{tmp}"], "is a directory, not a file"),
    (["train", "--out", "{file}"], "exists and is not a directory"),
    (["certify", "--checkpoint", "{ck}", "--verify-result", "r.json", "--key", "k.pem",
      "--out", "{tmp}"], "is a directory, not a file"),
])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(
        checkpoint_dir, tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("")
    names = {"ck": str(checkpoint_dir), "file": str(tmp_path / "file"), "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**names) for a in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--out", "{tmp}/t", "--max-steps", "0"], "--max-steps: 0: expected a whole"),
    (["train", "--out", "{tmp}/t", "--margin", "nan"], "--margin: nan: expected a finite"),
    (["train", "--out", "{tmp}/t", "--margin", "-1"], "--margin: -1: expected a finite"),
    (["verify", "--checkpoint", "{ck}", "--circuit", "full", "--task", "quote_close",
      "--timeout", "inf"], "--timeout: inf: expected a finite"),
    (["bench", "solvers", "--checkpoint", "{ck}", "--out", "{tmp}/b", "--limit", "-1"],
     "--limit: -1: expected 0 (all)"),
    (["bench", "solvers", "--checkpoint", "{ck}", "--out", "{tmp}/b", "--jobs", "0"],
     "--jobs: 0: expected a whole number"),
])
def test_numbers_out_of_range_are_refused_by_name(checkpoint_dir, tmp_path, capsys, argv,
                                                  message):
    names = {"ck": str(checkpoint_dir), "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**names) for a in argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_unknown_training_device_is_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "t"), "--device", "bogus"]) == 2
    assert "unknown device 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_an_unwritable_file_is_one_line_not_a_traceback(checkpoint_dir, capsys):
    """Refused when the arguments are read where permissions say so (not as root), else
    when the write fails: either way one line naming the path, exit status 2."""
    try:
        code = main(["replay", "--checkpoint", str(checkpoint_dir), "--json", "/proc/rows.json"])
    except SystemExit as refused:
        code = refused.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("farm replay: error: ") and "rows.json" in err


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Verification farm" in capsys.readouterr().out


def test_bench_solvers_writes_its_tables_and_times_all_properties_from_scratch(
        checkpoint_dir, tmp_path):
    """The all-properties wall solves every text again: FE's own pass must not answer
    them from the farm's memory."""
    out = tmp_path / "bench"
    assert main(["bench", "solvers", "--checkpoint", str(checkpoint_dir), "--tasks",
                 "quote_close", "--properties", "fe", "--limit", "2", "--solver", "z3",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    e2e = summary["end_to_end"]
    assert e2e["quote_close functional_equivalence"]["status"] == "VERIFIED"
    assert e2e["all properties, all tasks"]["solved"] == 2
    assert {r["mode"] for r in summary["per_mode"]} == {"z3", "cvc5", "race"}
    assert (out / "solvers.png").stat().st_size > 0 and (out / "solver_times.csv").exists()


def test_bench_solvers_sample_times_a_few_queries_but_measures_end_to_end_on_all(
        checkpoint_dir, tmp_path):
    """--sample keeps the per-mode timing short (cvc5 alone is slow on functional
    equivalence); the end-to-end figures still count every query."""
    out = tmp_path / "bench"
    assert main(["bench", "solvers", "--checkpoint", str(checkpoint_dir), "--tasks",
                 "quote_close", "--properties", "fe", "--limit", "6", "--sample", "2",
                 "--solver", "z3", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timed_per_task_and_property"] == 2
    assert all(r["n"] == 2 for r in summary["per_mode"])
    timed = [r for r in csv.DictReader((out / "solver_times.csv").open()) if r["mode"] == "z3"]
    assert [r["subject"].split()[1] for r in timed] == ["0", "3"]  # evenly spaced of 6
    assert summary["end_to_end"]["quote_close functional_equivalence"]["queries"] == 6
    with pytest.raises(SystemExit):  # refused as the arguments are read
        main(["bench", "solvers", "--checkpoint", str(checkpoint_dir), "--tasks",
              "quote_close", "--properties", "fe", "--limit", "2", "--sample", "-1",
              "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
