"""The sound batched screen: every exact margin lies inside its interval."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from farm.cli import main
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.screen import Screen
from farm.tasks.registry import get_task
from tests.conftest import random_model, weights_of


def _domain(name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    task = get_task(name)
    prompts = task.domain().batch(0, len(task.domain()))
    return prompts, task.targets(prompts), task.candidates


def _exact_margins(cfg: GPTConfig, weights: dict, prompts: np.ndarray, targets: np.ndarray,
                   candidates: tuple[int, ...], circuit: Circuit | None = None
                   ) -> tuple[list[Fraction], list]:
    rows = ExactModel(cfg, weights).run([tuple(p) for p in prompts], circuit)
    margins = [r.logits[t] - max(r.logits[c] for c in candidates if c != t)
               for r, t in zip(rows, targets, strict=True)]
    return margins, rows


def _assert_inside(result, margins: list[Fraction]) -> None:
    """lo ≤ exact ≤ hi, compared exactly (Fraction of each float end)."""
    for lo, hi, m in zip(result.lo, result.hi, margins, strict=True):
        assert (lo == -np.inf or Fraction(lo) <= m) and (hi == np.inf or m <= Fraction(hi)), \
            (lo, hi, m)


def _circuits(cfg: GPTConfig) -> list[Circuit]:
    """The full circuit and sub-circuits that drop edges (constant sources included)."""
    granularity = "head" if cfg.n_heads > 1 else "block"
    full = Circuit.full(cfg.n_layers, cfg.n_heads, granularity)
    edges = full.ordered_edges()
    rng = np.random.default_rng(cfg.n_heads)
    subs = [full.without(("emb", "logits"))]
    for keep in (0.6, 0.35):
        kept = [e for e in edges if rng.random() < keep]
        subs.append(Circuit(cfg.n_layers, cfg.n_heads, granularity, frozenset(kept)))
    return [full, *subs]


@pytest.mark.parametrize("cfg", [{}, {"norm_variant": "none"}, {"n_heads": 2}],
                         ids=["bandnorm", "none", "two-heads"])
@pytest.mark.parametrize("task", ["quote_close", "bracket_depth"])
def test_sound_against_exact_on_random_models(cfg: dict, task: str) -> None:
    model = random_model(seed=3, **cfg)
    weights = weights_of(model)
    prompts, targets, candidates = _domain(task)
    branches: set[tuple[bool, bool]] = set()
    for circuit in _circuits(model.cfg):
        result = Screen(model.cfg, weights, circuit).run(prompts, targets, candidates)
        margins, rows = _exact_margins(model.cfg, weights, prompts, targets, candidates,
                                       circuit)
        _assert_inside(result, margins)
        assert result.decisive.mean() > 0.5  # sound, and not by giving up
        for row, decided in zip(rows, result.decisive, strict=True):
            if decided:
                branches |= {(b.p.projected, b.p.lifted) for pos in row.trace
                             for b in pos.values() if hasattr(b, "p")}
        # prefixes are shared whatever the batch's order
        order = np.random.default_rng(0).permutation(len(prompts))
        shuffled = Screen(model.cfg, weights, circuit).run(prompts[order], targets[order],
                                                           candidates)
        assert np.array_equal(shuffled.lo, result.lo[order])
    if model.cfg.norm_variant != "none":  # decided inputs went through both BandNorm branches
        assert {p for p, _ in branches} == {True, False}
        assert {lifted for _, lifted in branches} == {True, False}


@pytest.mark.parametrize("offset", [0.0, 1e-10, -1e-10, 1e-12, -1e-12])
def test_near_ties_are_never_decided_the_wrong_way(offset: float) -> None:
    """lm_head biases set so that one prompt's exact margin is within 1e-9 of zero."""
    model = random_model(seed=5)
    prompts, targets, candidates = _domain("quote_close")
    for i in (0, 37, 101):
        weights = weights_of(model)
        t, a = int(targets[i]), next(c for c in candidates if c != targets[i])
        bias = weights["lm_head.bias"]
        bias[t] = 0.0
        m0 = _exact_margins(model.cfg, weights, prompts[i:i + 1], targets[i:i + 1],
                            candidates)[0][0]
        old_a = Fraction(float(bias[a]))
        bias[a] = np.float32(float(old_a + m0))
        r1 = m0 - (Fraction(float(bias[a])) - old_a)  # |r1| ≲ 1e-7
        bias[t] = np.float32(float(-r1) + offset)
        margins, _ = _exact_margins(model.cfg, weights, prompts, targets, candidates)
        assert abs(margins[i]) < 1e-9
        result = Screen(model.cfg, weights).run(prompts, targets, candidates)
        _assert_inside(result, margins)
        assert not (result.correct[i] and margins[i] <= 0)
        assert not (result.wrong[i] and margins[i] > 0)


def _cancelling_model() -> dict[str, np.ndarray]:
    """Blocks that output exactly zero; the final residual (2^24, 1, 0, …); lm_head with
    logit[9] = 2^24 + 2^-30 − 2^24 and logit[10] = 2^-31: exact margin +2^-31, while
    float64 rounds 2^24 + 2^-30 to 2^24 and gets −2^-31."""
    cfg = GPTConfig(norm_variant="none")
    model = VerifiableGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    weights = weights_of(model)
    weights["wte.weight"][:, 0] = 2.0 ** 24
    weights["wte.weight"][:, 1] = 1.0
    weights["lm_head.weight"][9, :2] = (1.0, 2.0 ** -30)
    weights["lm_head.bias"][9] = -(2.0 ** 24)
    weights["lm_head.bias"][10] = 2.0 ** -31
    return weights


def test_catastrophic_cancellation_fools_float64_but_not_the_screen() -> None:
    cfg = GPTConfig(norm_variant="none")
    weights = _cancelling_model()
    prompts, _, candidates = _domain("quote_close")
    targets = np.full(len(prompts), 9)
    margins, rows = _exact_margins(cfg, weights, prompts, targets, candidates)
    assert all(m == Fraction(1, 2 ** 31) for m in margins)
    # plain float64 from the exact final residual: the wrong decision
    residual = np.array([[float(v) for v in r.final_residual] for r in rows])
    logits = residual @ weights["lm_head.weight"].astype(np.float64).T \
        + weights["lm_head.bias"].astype(np.float64)
    assert (logits[:, 9] - logits[:, 10] < 0).all()
    result = Screen(cfg, weights).run(prompts, targets, candidates)
    _assert_inside(result, margins)
    assert not result.wrong.any()


@pytest.mark.parametrize("task", ["quote_close", "bracket_type"])
def test_trained_model_is_decided_by_the_screen(trained, task: str) -> None:
    weights = weights_of(trained.model)
    prompts, targets, candidates = _domain(task)
    result = Screen(trained.model.cfg, weights).run(prompts, targets, candidates)
    margins, _ = _exact_margins(trained.model.cfg, weights, prompts, targets, candidates)
    _assert_inside(result, margins)
    assert result.decisive.mean() >= 0.99
    exact_correct = np.array([m > 0 for m in margins])
    assert np.array_equal(result.correct, exact_correct & result.decisive)


def test_farm_screen_decides_the_domain_and_names_what_it_could_not(trained, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(Checkpoint.from_model(trained.model), ckpt)
    assert main(["screen", "--checkpoint", str(ckpt), "--task", "quote_close", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "screened 128 of 128 inputs of quote_close" in out
    assert "decided correctly 128; wrongly 0; not decisive 0" in out
    # nothing reaches the logits but the embedding: a circuit that decides many inputs wrongly
    blind = tmp_path / "blind.json"
    save_circuit(Circuit(2, 1, "block", frozenset({("emb", "logits")}), "quote_close"), blind)
    assert main(["screen", "--checkpoint", str(ckpt), "--task", "quote_close", "--circuit",
                 str(blind), "--limit", "64", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "screened 64 of 128 inputs" in out and "first wrongly decided: " in out
