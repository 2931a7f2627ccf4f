"""The sound batched screen: every exact margin lies inside its interval."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch

from farm.cli import main
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.model.exact import ExactModel, band_norm
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.screen import Screen
from farm.screen.ball import radius_above, robust
from farm.screen.bandnorm import band_norm as interval_band_norm
from farm.screen.interval import Iv
from farm.screen.sweep import sweep
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
    supports: set[int] = set()  # sparsemax support sizes at the last position
    slopes: set[bool] = set()  # LeakyReLU sides
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
                last = row.trace[-1]
                supports |= {len(v) for k, v in last.items() if k.endswith("sparsemax")}
                slopes |= {s for k, v in last.items() if k.endswith(".act") for s in v}
        # prefixes are shared whatever the batch's order
        order = np.random.default_rng(0).permutation(len(prompts))
        shuffled = Screen(model.cfg, weights, circuit).run(prompts[order], targets[order],
                                                           candidates)
        assert np.array_equal(shuffled.lo, result.lo[order])
    if model.cfg.norm_variant != "none":  # decided inputs went through both BandNorm branches
        assert {p for p, _ in branches} == {True, False}
        assert {lifted for _, lifted in branches} == {True, False}
    # ... and through sparsemax on one key and on several, and both sides of LeakyReLU
    assert 1 in supports and max(supports) > 1
    assert slopes == {True, False}


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


# --------------------------------------------------------------------------- robustness


def _ball_margins(model: ExactModel, residual: list[Fraction], eta: list[Fraction],
                  target: int, candidates: tuple[int, ...]) -> list[Fraction]:
    """Exact margins target − c of the final norm and lm_head on r_E(x) + η."""
    r = [a + e for a, e in zip(residual, eta, strict=True)]
    if model.norm_final is not None:
        r, _ = band_norm(r, *model.norm_final, model.cfg.half_low, model.cfg.half_high)
    logits = model.lm_head(r)
    return [logits[target] - logits[c] for c in candidates if c != target]


def _attacks(model: ExactModel, weights: dict, residual: list[Fraction], epsilon: Fraction,
             target: int, candidates: tuple[int, ...], rng: np.random.Generator
             ) -> list[list[Fraction]]:
    """Exact η in the ε-ball likely to break the decision: the worst of 512 random vertices
    in float64 (a first-order search), vertices that flip the smallest centred coordinates'
    signs (BandNorm's branch changes), and random interior points."""
    d = len(residual)
    signs = rng.choice([-1, 1], size=(512, d))
    x = np.array([float(v) for v in residual]) + float(epsilon) * signs
    if model.norm_final is not None:
        gain, shift = (weights[f"norm_final.norm.{k}"].astype(np.float64)
                       for k in ("weight", "bias"))
        half = (Iv.of_rational(float(model.cfg.half_low)),
                Iv.of_rational(float(model.cfg.half_high)))
        x = interval_band_norm(Iv.point(x), gain, shift, *half)[0].m
    head = weights["lm_head.weight"].astype(np.float64)
    bias = weights["lm_head.bias"].astype(np.float64)
    logits = x @ head.T + bias
    worst = np.argsort(np.min([logits[:, target] - logits[:, c] for c in candidates
                               if c != target], axis=0))[:3]
    found = [[epsilon * int(s) for s in signs[k]] for k in worst]
    centred = np.array([float(v - sum(residual) / d) for v in residual])
    for n in (1, 2, 3):  # push the n smallest centred coordinates across 0
        flip = np.argsort(np.abs(centred))[:n]
        eta = [epsilon * int(s) for s in rng.choice([-1, 1], size=d)]
        for i in flip:
            eta[i] = -epsilon if centred[i] > 0 else epsilon
        found.append(eta)
    found += [[epsilon * Fraction(int(k), 1000) for k in rng.integers(-1000, 1001, size=d)]
              for _ in range(2)]
    return found


@pytest.mark.parametrize("cfg", [{}, {"norm_variant": "none"}, {"n_heads": 2}],
                         ids=["bandnorm", "none", "two-heads"])
@pytest.mark.parametrize("epsilon", [Fraction(1, 100), Fraction(1, 20), Fraction(1, 5)])
def test_inputs_called_robust_keep_their_decision_on_every_eta_replayed(cfg: dict,
                                                                        epsilon: Fraction):
    _assert_robust_survives_attacks(random_model(seed=1, **cfg), epsilon, None)


@pytest.mark.parametrize("which", [1, 2, 3])
def test_robustness_of_circuits_survives_eta_replayed(which: int):
    """r_E(x) of a circuit that drops edges (zero ablation) is bounded as well."""
    model = random_model(seed=2, n_heads=2)
    _assert_robust_survives_attacks(model, Fraction(1, 20), _circuits(model.cfg)[which])


def _assert_robust_survives_attacks(model: VerifiableGPT, epsilon: Fraction,
                                    circuit: Circuit | None) -> None:
    weights = weights_of(model)
    prompts, targets, candidates = _domain("quote_close")
    exact = ExactModel(model.cfg, weights)
    rows = exact.run([tuple(p) for p in prompts], circuit)
    result = Screen(model.cfg, weights, circuit).run(prompts, targets, candidates, epsilon)
    assert result.robust is not None and not (result.robust & ~result.correct).any()
    assert result.robust.sum() >= 5  # sound, and not by proving nothing
    rng = np.random.default_rng(0)
    for i in np.flatnonzero(result.robust):
        residual = list(rows[i].final_residual)
        for eta in _attacks(exact, weights, residual, epsilon, int(targets[i]), candidates,
                            rng):
            assert max(abs(e) for e in eta) <= epsilon
            assert min(_ball_margins(exact, residual, eta, int(targets[i]), candidates)) > 0, i


def _near_boundaries(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Final residuals on BandNorm's edges: coordinate 0 within ±0.004 of the mean (its
    sign, and with it the lift's support, changes inside a 0.01-ball), and every second
    row scaled so that a side's sum is within 0.03 of half_low (the lift itself changes)."""
    x = rng.normal(size=(n, d)) * 0.3
    x[:, 0] = x[:, 1:].mean(-1) + rng.uniform(-0.004, 0.004, size=n)
    c = x - x.mean(-1, keepdims=True)
    near = np.arange(n) % 2 == 1
    target = 22 / 5 + rng.uniform(-0.03, 0.03, size=n)
    x[near] *= (target / np.maximum(c, 0).sum(-1))[near, None]
    return x


def _ball_attacks(x: list[Fraction], epsilon: Fraction, rng: np.random.Generator
                  ) -> list[list[Fraction]]:
    """η that put coordinate 0 exactly on the mean or just off it on either side (each
    with the rest at a random vertex), spread or shrink every side (the lift's edge),
    and random vertices."""
    d = len(x)
    found = []
    for _ in range(3):
        vertex = [epsilon * int(s) for s in rng.choice([-1, 1], size=d)]
        rest = sum(a + e for a, e in zip(x[1:], vertex[1:], strict=True)) / (d - 1)
        for offset in (Fraction(0), Fraction(1, 10**6), -Fraction(1, 10**6)):
            eta0 = rest + offset - x[0]
            if abs(eta0) <= epsilon:
                found.append([eta0, *vertex[1:]])
    mean = sum(x) / d
    for sign in (1, -1):
        found.append([sign * epsilon * (1 if v > mean else -1) for v in x])
    found += [[epsilon * int(s) for s in rng.choice([-1, 1], size=d)] for _ in range(4)]
    return found


def test_the_ball_bound_covers_every_sign_and_lift_the_ball_reaches():
    """Sign changes of a near-zero coordinate move the lift's support, and near half_low
    the lift itself switches: BandNorm jumps there. Every row the bound proves keeps its
    decision on η that land on each side of, and exactly on, those edges (exact
    rationals); rows the attacks break are never proved, and most rows are proved."""
    rng = np.random.default_rng(7)
    d, n, epsilon = 16, 96, Fraction(1, 100)
    x = _near_boundaries(rng, n, d)
    head = rng.normal(size=(2, d))
    gain, shift = 1.0 + 0.05 * rng.normal(size=d), 0.05 * rng.normal(size=d)
    low, high = Fraction(22, 5), Fraction(42, 5)
    exact_gain, exact_shift = [Fraction(v) for v in gain], [Fraction(v) for v in shift]
    exact_head = [[Fraction(v) for v in row] for row in head]

    def margin(r: list[Fraction], t: int) -> Fraction:
        y, _ = band_norm(r, exact_gain, exact_shift, low, high)
        return sum((a - b) * v for a, b, v in zip(exact_head[t], exact_head[1 - t], y,
                                                   strict=True))

    rows = [[Fraction(v) for v in r] for r in x]
    targets = np.array([0 if margin(r, 0) > 0 else 1 for r in rows])
    lo = np.array([np.nextafter(float(margin(r, t)), -np.inf) for r, t in zip(rows, targets,
                                                                              strict=True)])
    pairs = []
    for t in (0, 1):
        w = head[t] - head[1 - t]
        pairs.append((targets == t, Iv(w, 2.0**-52 * np.abs(w)), Iv.point(np.zeros(()))))
    half = (Iv.of_rational(float(low)), Iv.of_rational(float(high)))
    proved = robust(Iv.point(x), lo, radius_above(epsilon), (gain, shift, *half), pairs)
    broken = set()
    for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
        for eta in _ball_attacks(r, epsilon, rng):
            assert max(abs(e) for e in eta) <= epsilon
            if margin([a + e for a, e in zip(r, eta, strict=True)], int(t)) <= 0:
                broken.add(i)
    assert broken, "the attacks should break some rows: the edges are real"
    assert not broken & set(np.flatnonzero(proved).tolist())
    assert proved.sum() >= n // 2


@pytest.mark.parametrize("task", ["quote_close", "bracket_type"])
def test_trained_model_is_proved_robust_at_one_percent_without_a_solver(trained, task: str):
    """The demo model: the SMT route proves all 256 inputs robust at ε = 0.01
    (docs/BENCHMARKS.md); so does the screen."""
    prompts, targets, candidates = _domain(task)
    result = Screen(trained.model.cfg, weights_of(trained.model)).run(
        prompts, targets, candidates, Fraction(1, 100))
    assert result.robust.all()
    assert Screen(trained.model.cfg, weights_of(trained.model)).run(
        prompts, targets, candidates).robust is None


def test_the_screen_never_proves_robust_what_the_solver_refutes(tmp_path):
    """Real Z3/cvc5 through `farm verify --properties rob` on a random model at ε = 1/5,
    where about half the inputs have a replayed counterexample."""
    ckpt = tmp_path / "checkpoint"
    model = random_model(seed=1)
    save_checkpoint(Checkpoint.from_model(model), ckpt)
    out = tmp_path / "rob.json"
    main(["verify", "--checkpoint", str(ckpt), "--circuit", "full", "--task", "quote_close",
          "--properties", "rob", "--epsilon", "1/5", "--jobs", "1", "--out", str(out),
          "--quiet"])
    (found,) = json.loads(out.read_text())["results"]
    assert found["unknown"] == 0 and found["errors"] == 0
    refuted = {int(c["subject"].split()[1]) for c in found["counterexamples"]}
    assert 20 <= len(refuted) < 128
    prompts, targets, candidates = _domain("quote_close")
    result = Screen(model.cfg, weights_of(model)).run(prompts, targets, candidates,
                                                       Fraction(1, 5))
    proved = set(np.flatnonzero(result.robust).tolist())
    assert not proved & refuted
    assert len(proved) >= 10


def test_epsilon_is_widened_to_a_float_ball_that_holds_it():
    for eps in (Fraction(1, 100), Fraction(1, 3), Fraction(0), Fraction(2) ** -1074 / 3):
        assert Fraction(radius_above(eps)) >= eps
        assert radius_above(eps) <= float(eps) * (1 + 2.0 ** -52) or eps < 2.0 ** -1000
    with pytest.raises(FarmError):
        radius_above(Fraction(-1, 100))


def test_farm_screen_counts_the_inputs_it_proves_robust(trained, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(Checkpoint.from_model(trained.model), ckpt)
    assert main(["screen", "--checkpoint", str(ckpt), "--task", "bracket_type", "--epsilon",
                 "0.01", "--quiet"]) == 0
    assert "robust at epsilon 1/100: 128 proved; 0 decided correctly but not proved" \
        in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["screen", "--checkpoint", str(ckpt), "--task", "bracket_type", "--epsilon",
              "-0.01", "--quiet"])


def test_a_sweep_in_two_processes_finds_what_one_process_finds():
    """At ε = 1/5 this model has correct inputs that are not robust (the solvers refute
    them); at 1/20 every correct input is robust and the bound proves all of them."""
    ckpt = Checkpoint.from_model(random_model(seed=1))
    task = get_task("quote_close")
    one, two = (sweep(ckpt, task, batch=24, epsilon=Fraction(1, 5), processes=n)
                for n in (1, 2))
    assert one.correct + one.wrong == 128 and 0 < one.robust < one.correct
    assert replace(one, seconds=0.0) == replace(two, seconds=0.0)
