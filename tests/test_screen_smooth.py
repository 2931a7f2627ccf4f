"""The standard operators' interval extensions hold the real values, checked against
60-digit decimal arithmetic (exp and sqrt correctly rounded by `decimal`, erf by its
Taylor series), and the standard screen decides a trained standard model."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest

from farm.errors import FarmError
from farm.screen.interval import Iv, from_ends
from farm.screen.smooth import (
    GELU_FALLS_BEFORE,
    GELU_MIN,
    GELU_RISES_AFTER,
    LAYER_NORM_EPS,
    exp_ends,
    gelu,
    layer_norm,
    softmax,
)

PREC = 80
PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640629")


def dec(x: float) -> Decimal:
    return Decimal(Fraction(x).numerator) / Decimal(Fraction(x).denominator)


def erf(t: Decimal) -> Decimal:
    """2/√π Σ (−1)^n t^(2n+1) / (n! (2n+1)), summed until the terms vanish."""
    total, term, n = Decimal(0), t, 0
    while abs(term) > Decimal(10) ** -(PREC - 5) or n < 3:
        total += term / (2 * n + 1)
        n += 1
        term = -term * t * t / n
    return 2 * total / PI.sqrt()


def gelu_exact(x: float) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = PREC
        d = dec(x)
        return d / 2 * (1 + erf(d / Decimal(2).sqrt()))


def inside(value: Decimal, lo: float, hi: float) -> bool:
    return dec(lo) <= value <= dec(hi)


def test_exp_bounds_hold_the_real_exponential():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-40, 40, 400), rng.uniform(-1e-3, 1e-3, 50), [0.0]])
    lo, hi = exp_ends(xs, xs)
    with localcontext() as ctx:
        ctx.prec = PREC
        for x, a, b in zip(xs, lo, hi, strict=True):
            assert inside(dec(x).exp(), a, b), x
    assert np.all((hi - lo) <= 2.0 ** -40 * hi)  # tight enough to decide anything


def test_gelu_bounds_hold_at_points_and_over_intervals():
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform(-9, 9, 300), rng.uniform(-0.76, -0.74, 60),
                             [GELU_FALLS_BEFORE, GELU_RISES_AFTER, 0.0]])
    out = gelu(Iv.point(points))
    lo, hi = out.ends()
    for x, a, b in zip(points, lo, hi, strict=True):
        assert inside(gelu_exact(x), a, b), x
    away = np.abs(points + 0.7515) > 0.001  # outside the window of the minimum
    assert np.all((hi - lo)[away] <= 1e-12 * (1 + np.abs(points[away]) ** 2))
    # an interval: every point inside it maps inside the image interval
    ends = np.sort(rng.uniform(-3, 3, (100, 2)), axis=1)
    image = gelu(from_ends(ends[:, 0], ends[:, 1]))
    i_lo, i_hi = image.ends()
    for (a, b), c, d in zip(ends, i_lo, i_hi, strict=True):
        for x in np.linspace(a, b, 9):
            assert inside(gelu_exact(float(x)), c, d), (a, b, x)


def test_gelu_min_is_below_the_real_minimum():
    xs = np.linspace(-0.7525, -0.7510, 301)
    assert min(gelu_exact(float(x)) for x in xs) > dec(GELU_MIN)
    assert min(gelu_exact(float(x)) for x in xs) < dec(GELU_MIN) + Decimal("1e-7")


def softmax_exact(z: list[float]) -> list[Decimal]:
    with localcontext() as ctx:
        ctx.prec = PREC
        e = [dec(v).exp() for v in z]
        return [v / sum(e) for v in e]


def test_softmax_bounds_hold_on_every_point_of_the_box():
    rng = np.random.default_rng(2)
    mid = rng.normal(0, 4, (40, 5))
    rad = np.abs(rng.normal(0, 1e-3, (40, 5)))
    mask = np.tril(np.ones((5, 5), dtype=bool))[rng.integers(0, 5, 40)]
    p = softmax(Iv(mid, rad), mask)
    lo, hi = p.ends()
    for row in range(40):
        k = np.flatnonzero(mask[row])
        for _ in range(5):
            z = mid[row, k] + rad[row, k] * rng.uniform(-1, 1, len(k))
            for j, v in zip(k, softmax_exact(list(z)), strict=True):
                assert inside(v, lo[row, j], hi[row, j]), (row, j)
        assert np.all(np.abs(hi[row, ~mask[row]]) < 1e-300)  # outside the prefix: 0
    point = softmax(Iv.point(mid), np.ones_like(mask))
    assert np.max(point.r) < 1e-13  # on concrete scores the bound is a few ulps wide


def layer_norm_exact(x: list[float], w: list[float], b: list[float], eps: float
                     ) -> list[Decimal]:
    with localcontext() as ctx:
        ctx.prec = PREC
        d = [dec(v) for v in x]
        mean = sum(d) / len(d)
        var = sum((v - mean) ** 2 for v in d) / len(d)
        s = (var + dec(eps)).sqrt()
        return [(v - mean) / s * dec(wi) + dec(bi) for v, wi, bi in zip(d, w, b, strict=True)]


@pytest.mark.parametrize("eps", LAYER_NORM_EPS)
def test_layer_norm_bounds_hold_for_either_reading_of_eps(eps):
    rng = np.random.default_rng(3)
    w = rng.normal(1, 0.3, 8).astype(np.float32).astype(np.float64)
    b = rng.normal(0, 0.3, 8).astype(np.float32).astype(np.float64)
    mid = rng.normal(0, 2, (30, 8))
    mid[0] = 0.0  # a zero-ablated input
    mid[1] = 1e-4 * rng.normal(size=8)  # a spread eps dominates
    rad = np.abs(rng.normal(0, 1e-6, (30, 8)))
    lo, hi = layer_norm(Iv(mid, rad), w, b).ends()
    for row in range(30):
        for _ in range(3):
            x = mid[row] + rad[row] * rng.uniform(-1, 1, 8)
            for j, v in enumerate(layer_norm_exact(list(x), list(w), list(b), eps)):
                assert inside(v, lo[row, j], hi[row, j]), (row, j)
    point = layer_norm(Iv.point(mid), w, b)
    assert np.max(point.r) < 1e-9


def test_the_standard_screen_decides_a_trained_standard_model(tmp_path):
    from farm.model.checkpoint import load_checkpoint
    from farm.screen import Screen
    from farm.screen.standard import StandardScreen
    from farm.tasks.registry import get_task

    subprocess.run([sys.executable, "-m", "farm.cli", "train", "--attn", "softmax", "--norm",
                    "layer_norm", "--activation", "gelu", "--device", "cpu", "--out",
                    str(tmp_path / "ckpt")], check=True, capture_output=True)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    task = get_task("quote_close")
    prompts = task.domain().batch(0, len(task.domain()))
    result = StandardScreen(ckpt.config, dict(ckpt.weights)).run(
        prompts, task.targets(prompts), task.candidates)
    assert result.correct.all()  # trained to 100 %: every margin proved positive
    wrong = StandardScreen(ckpt.config, dict(ckpt.weights)).run(
        prompts, np.where(task.targets(prompts) == 9, 10, 9), task.candidates)
    assert wrong.wrong.all()
    with pytest.raises(FarmError, match="standard"):
        Screen(ckpt.config, dict(ckpt.weights))
    with pytest.raises(FarmError, match="ε-ball"):
        StandardScreen(ckpt.config, dict(ckpt.weights)).run(
            prompts, task.targets(prompts), task.candidates, Fraction(1, 100))
