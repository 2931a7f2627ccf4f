"""Lean export: the generated module states the certificate exactly, and Lean checks it."""

from __future__ import annotations

import re
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from farm.errors import FarmError
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.tasks.registry import domain_rows
from farm.trust.lean_export import (
    LEAN_PACKAGE,
    NO_TOOLCHAIN,
    LeanExport,
    lake_path,
    render_module,
    run_lake_build,
    write_module,
)
from tests.conftest import random_model, weights_of

CKPT_SHA = "ab" * 32
CERT_FP = "cd" * 32
RATIONAL = re.compile(r"⟨(-?\d+), (\d+)⟩")


def _rows(cfg: GPTConfig, weights: dict[str, np.ndarray]) -> list[dict]:
    """The certificate's rows with their exact margins (the ground-truth evaluator's)."""
    rows = domain_rows()
    results = ExactModel(cfg, weights).run(r.prompt for r in rows)
    margins = [res.margin(r.target, r.alternate) for r, res in zip(rows, results, strict=True)]
    return [{"index": r.index, "task": r.task.name, "prompt": list(r.prompt), "target": r.target,
             "alternate": r.alternate, "margin": f"{m.numerator}/{m.denominator}"}
            for r, m in zip(rows, margins, strict=True)]


def _properties(status: str = "verified") -> list[dict]:
    return [{"property": p, "task": t, "status": status,
             "counts": {"verified": 128, "falsified": 0, "unknown": 0}}
            for p in ("functional_equivalence", "robustness") for t in ("quote_close",
                                                                       "bracket_type")]


CIRCUIT = {"task": "quote_close", "nodes": ["emb", "attn_0", "mlp_0", "attn_1", "mlp_1", "logits"],
           "edges": [{"source": "mlp_0", "target": "logits"}, {"source": "emb", "target": "attn_0"},
                     {"source": "attn_0", "target": "mlp_0"}], "num_edges": 3}


@pytest.fixture(scope="module")
def export() -> LeanExport:
    model = random_model(seed=3)
    weights = weights_of(model)
    weights["wte.weight"][0, 0] = np.float32(0.1)
    weights["wte.weight"][0, 1] = np.float32(-0.1)
    return LeanExport("Random3", model.cfg, weights, _rows(model.cfg, weights), CKPT_SHA, CERT_FP,
                      _properties() + [{"property": "edge_necessity", "task": "quote_close",
                                        "status": "verified",
                                        "counts": {"verified": 3, "falsified": 0, "unknown": 0}}],
                      [CIRCUIT])


def test_module_states_every_row_both_fingerprints_and_the_theorems(export: LeanExport) -> None:
    text = render_module(export)
    assert text.startswith("/-") and "\nimport FarmCert\n" in text
    for row in export.rows:
        n, d = row["margin"].split("/")
        task = {"quote_close": 0, "bracket_type": 1}[row["task"]]
        literal = (f"⟨{row['index']}, {task}, [{', '.join(map(str, row['prompt']))}], "
                   f"{row['target']}, {row['alternate']}, ⟨{n}, {d}⟩⟩")
        assert literal in text
    assert f'def checkpointSha256 : String := "{CKPT_SHA}"' in text
    assert f'def certificateFingerprint : String := "{CERT_FP}"' in text
    for theorem in ("theorem model_wf : model.wellFormed = true := by decide +kernel",
                    "theorem rows_ok : checkRows certifiedTasks rows = true := by decide +kernel",
                    "theorem margins_positive : marginsPositive rows = true := by decide +kernel",
                    "theorem properties_ok : checkProperties certifiedTasks circuits properties",
                    "theorem replay_ok : replayMatches model rows = true := by native_decide",
                    "theorem margins_replayed : ∀ r ∈ rows, replayMargin model r = r.margin",
                    "theorem decisions_correct : ∀ r ∈ rows, (replayMargin model r).isPos"):
        assert theorem in text
    assert "def certifiedTasks : List Nat := [0, 1]" in text
    assert "⟨0, 6, [(0, 1), (1, 2), (2, 5)]⟩" in text  # edges by node position, sorted
    assert "⟨1, 0, .verified, 3, 0, 0⟩" in text


def test_a_single_task_certificate_states_its_task(export: LeanExport) -> None:
    bracket = [r | {"index": i} for i, r in enumerate(r for r in export.rows
                                                     if r["task"] == "bracket_type")]
    text = render_module(LeanExport(**export.__dict__ | {"rows": bracket}))
    assert "def certifiedTasks : List Nat := [1]" in text
    assert "⟨0, 1, [1, 3, 5, 11, 5, 5], 13, 14, " in text


def test_weights_are_exact_binary_fractions_in_state_dict_order(export: LeanExport) -> None:
    text = render_module(export)
    assert "⟨13421773, 134217728⟩" in text and "⟨-13421773, 134217728⟩" in text
    assert Fraction(13421773, 134217728) == Fraction(float(np.float32(0.1)))
    weights_part = text[text.index("def wte_weight"):text.index("def model : Model")]
    written = [Fraction(int(n), int(d)) for n, d in RATIONAL.findall(weights_part)]
    stored = [Fraction(float(w)) for a in export.weights.values() for w in a.ravel()]
    assert written == stored


def test_no_sorry_admit_or_axiom_anywhere(export: LeanExport) -> None:
    sources = [render_module(export)] + [p.read_text() for p in LEAN_PACKAGE.rglob("*.lean")
                                         if ".lake" not in p.parts]
    for text in sources:
        code = re.sub(r"/-.*?-/|--[^\n]*", "", text, flags=re.S)  # comments may say the words
        for word in ("sorry", "admit", "axiom"):
            assert not re.search(rf"\b{word}\b", code), word


def test_write_is_atomic_and_bad_input_writes_nothing(export: LeanExport, tmp_path: Path) -> None:
    path = write_module(export, tmp_path)
    assert path == tmp_path / "FarmCert" / "Generated" / "Random3.lean"
    assert path.read_text() == render_module(export)
    first_row = dict(export.rows[0])
    bad_weights = dict(export.weights)
    bad_weights["lm_head.bias"] = bad_weights["lm_head.bias"].astype(np.float64)
    cases = [
        ({"name": "random3"}, "UpperCamelCase"),
        ({"checkpoint_sha256": "xyz"}, "checkpoint SHA-256"),
        ({"weights": bad_weights}, "'lm_head.bias' must be a numpy float32"),
        ({"weights": {k: v for k, v in export.weights.items() if k != "wpe.weight"}},
         r"missing \['wpe.weight'\]"),
        ({"rows": [first_row | {"margin": "2/4"}]}, "row 0: margin '2/4' is not in lowest terms"),
        ({"rows": [first_row | {"margin": "1/0"}]}, "zero denominator"),
        ({"rows": [first_row | {"margin": 0.5}]}, "rational string"),
        ({"rows": [first_row | {"task": "sorting"}]}, "unknown task 'sorting'"),
        ({"properties": [{"property": "robustness", "task": "quote_close", "status": "done",
                          "counts": {}}]}, "status must be one of"),
        ({"circuits": [CIRCUIT | {"num_edges": 4}]}, "num_edges is 4"),
        ({"config": GPTConfig(attn_variant="softmax")}, "piecewise-linear family"),
    ]
    for i, (change, message) in enumerate(cases):
        fields = export.__dict__ | change | {"name": change.get("name", f"Bad{i}")}
        with pytest.raises(FarmError, match=message):
            write_module(LeanExport(**fields), tmp_path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["Random3.lean"]


def test_lake_build_is_reported_as_not_run_without_a_toolchain(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    outcome = run_lake_build()
    assert (outcome.status, outcome.log, outcome.ok) == ("not run", NO_TOOLCHAIN, False)


@pytest.mark.skipif(lake_path() is None, reason=NO_TOOLCHAIN)
def test_lake_build_proves_a_real_certificate_and_rejects_a_wrong_margin(trained,
                                                                        tmp_path: Path) -> None:
    model = trained.model.cpu()
    weights = weights_of(model)
    rows = _rows(model.cfg, weights)
    package = tmp_path / "lean"
    shutil.copytree(LEAN_PACKAGE, package, ignore=shutil.ignore_patterns(".lake", "Generated"))
    write_module(LeanExport("Trained", model.cfg, weights, rows, CKPT_SHA, CERT_FP,
                            _properties()), package)
    outcome = run_lake_build(package)
    assert outcome.ok, outcome.log
    wrong = Fraction(rows[5]["margin"]) + Fraction(1, 10**6)
    rows[5] = rows[5] | {"margin": f"{wrong.numerator}/{wrong.denominator}"}
    write_module(LeanExport("Trained", model.cfg, weights, rows, CKPT_SHA, CERT_FP,
                            _properties()), package)
    outcome = run_lake_build(package)
    # Lean names the failing proposition, not the theorem: `native_decide` evaluated that the
    # proposition `replayMatches model rows = true` is false.
    assert outcome.status == "failed" and "replayMatches" in outcome.log
