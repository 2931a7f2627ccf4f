"""The exact evaluator is the ground truth: hold it to the float64 torch forward."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from farm.errors import FarmError
from farm.model.exact import ExactModel, band_norm, sparsemax
from farm.model.gpt import BandNorm, GPTConfig
from farm.model.gpt import sparsemax as torch_sparsemax
from farm.tasks.registry import domain_rows
from tests.conftest import random_model, weights_of

PROMPTS = [r.prompt for r in domain_rows()]


@pytest.mark.parametrize("cfg", [{}, {"n_heads": 2}, {"norm_variant": "none"},
                                 {"n_heads": 2, "lm_head_bias": False}])
def test_exact_logits_agree_with_float64_torch_on_all_256_rows(cfg):
    model = random_model(**cfg)
    results = ExactModel(model.cfg, weights_of(model)).run(PROMPTS)
    with torch.no_grad():
        reference = model.double()(torch.tensor(PROMPTS))[:, -1].numpy()
    exact = np.array([[float(v) for v in r.logits] for r in results])
    assert np.abs(exact - reference).max() < 1e-9


def test_trained_model_margins_agree(trained):
    model = trained.model
    results = ExactModel(model.cfg, weights_of(model)).run(PROMPTS)
    rows = domain_rows()
    margins = [r.margin(row.target, row.alternate) for r, row in zip(results, rows, strict=True)]
    assert all(isinstance(m, Fraction) for m in margins)
    assert min(margins) >= 1  # the margin objective's promise, checked exactly


def _torch_band_norm(x: list[Fraction]) -> np.ndarray:
    norm = BandNorm(len(x), Fraction(22, 5), Fraction(42, 5)).double()
    return norm(torch.tensor([[float(v) for v in x]], dtype=torch.float64))[0].detach().numpy()


def _check_band_norm(x):
    ones, zeros = [Fraction(1)] * len(x), [Fraction(0)] * len(x)
    out, branch = band_norm(x, ones, zeros, Fraction(22, 5), Fraction(42, 5))
    assert np.abs(np.array([float(v) for v in out]) - _torch_band_norm(x)).max() < 1e-12
    return out, branch


def test_band_norm_projection_branch():
    x = [Fraction(v) for v in (20, -20, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -4)]
    out, branch = _check_band_norm(x)
    assert branch.p.projected and branch.n.projected
    assert sum(v for v in out if v > 0) <= Fraction(42, 5) + 1


def test_band_norm_lift_branch():
    x = [Fraction(i % 3, 10) for i in range(16)]  # tiny spread: both sides below half_low
    out, branch = _check_band_norm(x)
    assert branch.p.lifted and branch.n.lifted and not branch.p.projected


def test_band_norm_fallback_branch():
    x = [Fraction(7, 3)] * 16  # constant: c = 0, no side has an active coordinate
    out, branch = _check_band_norm(x)
    assert branch.p.fallback and branch.n.fallback
    assert branch.p.support == tuple(range(0, 16, 2)) and branch.n.support == tuple(range(1, 16, 2))
    assert all(v == (Fraction(22, 5) / 8 if i % 2 == 0 else -Fraction(22, 5) / 8)
               for i, v in enumerate(out))


def test_band_norm_random_points_match_torch():
    rng = np.random.default_rng(0)
    for scale in (0.01, 0.3, 1.0, 5.0):
        for _ in range(25):
            _check_band_norm([Fraction(float(v)) for v in rng.normal(0, scale, 16)])


def _spec_band_norm(x, gamma, beta, half_low, half_high):
    """SPEC §2's BandNorm step by step in Fractions: the oracle for the integer version."""
    d, zero = len(x), Fraction(0)
    c = [v - sum(x) / d for v in x]

    def side(s, fallback):
        projected, rho = sum(s) > half_high, -1
        if projected:
            ordered = sorted(s, reverse=True)
            cand = [(sum(ordered[:k]) - half_high) / k for k in range(1, d + 1)]
            rho = min(max(sum(v > t for v, t in zip(ordered, cand, strict=True)) - 1, 0), d - 1)
            s = [max(v - cand[rho], zero) for v in s]
        deficit = max(half_low - sum(s), zero)
        active = tuple(i for i, v in enumerate(s) if v > 0)
        support = active or fallback
        s = [v + (deficit / len(support) if i in support else zero) for i, v in enumerate(s)]
        return s, (projected, rho, deficit > 0, not active, support)

    p, pb = side([max(v, zero) for v in c], tuple(range(0, d, 2)))
    n, nb = side([max(-v, zero) for v in c], tuple(range(1, d, 2)))
    z = [a - b for a, b in zip(p, n, strict=True)]
    out = [g * (v - sum(z) / d) + b for g, v, b in zip(gamma, z, beta, strict=True)]
    return out, (tuple((v > 0) - (v < 0) for v in c), pb, nb)


def test_band_norm_is_spec_exactly_on_every_branch_and_tie():
    """Small integers over small denominators: equal coordinates, sums at exactly
    half_low or half_high, zero vectors; every branch, compared as exact values."""
    rng = np.random.default_rng(1)
    seen = set()
    for k in range(600):
        den = int(rng.choice([1, 2, 5, 7, 10]))
        spread = int(rng.choice([0, 1, 3, 10, 40]))
        x = [Fraction(int(v), den) for v in rng.integers(-spread, spread + 1, 16)]
        gamma = [Fraction(int(v), 4) for v in rng.integers(-8, 9, 16)]
        beta = [Fraction(int(v), 8) for v in rng.integers(-8, 9, 16)]
        half_low, half_high = (Fraction(22, 5), Fraction(42, 5)) if k % 2 else (
            Fraction(int(rng.integers(1, 5))), Fraction(int(rng.integers(5, 9))))
        out, branch = band_norm(x, gamma, beta, half_low, half_high)
        want, (signs, pb, nb) = _spec_band_norm(x, gamma, beta, half_low, half_high)
        assert out == want and branch.signs == signs
        assert tuple(branch.p) == pb and tuple(branch.n) == nb
        seen |= {(side.projected, side.lifted, side.fallback) for side in (branch.p, branch.n)}
    assert seen >= {(True, False, False), (False, True, False), (False, False, False),
                    (False, True, True)}


@pytest.mark.parametrize("size", range(1, 7))
def test_sparsemax_supports_of_every_size(size):
    rng = np.random.default_rng(size)
    seen = set()
    for _ in range(400):
        z = [Fraction(float(v)) for v in rng.normal(0, 10 ** rng.uniform(-2, 1), size)]
        out, support = sparsemax(z)
        assert sum(out) == 1 and all(v >= 0 for v in out)
        ref = torch_sparsemax(torch.tensor([[float(v) for v in z]], dtype=torch.float64))[0]
        assert np.abs(ref.numpy() - np.array([float(v) for v in out])).max() < 1e-12
        seen.add(len(support))
    assert seen == set(range(1, size + 1))


def test_standard_variants_are_refused_with_a_clear_error():
    model = random_model(norm_variant="layer_norm", attn_variant="softmax", activation="gelu")
    with pytest.raises(FarmError, match="layer_norm/softmax/gelu"):
        ExactModel(model.cfg, weights_of(model))


def test_config_is_validated():
    with pytest.raises(FarmError, match="norm_variant"):
        GPTConfig(norm_variant="rms")
    with pytest.raises(FarmError, match="n_heads"):
        GPTConfig(n_heads=3)


def test_nodes_without_a_path_to_the_logits_are_not_evaluated():
    """A dangling edge changes nothing and costs nothing: only what feeds the logits runs."""
    from farm.model.circuit import Circuit

    model = ExactModel(GPTConfig(), weights_of(random_model(0)))
    prompts = [row.prompt for row in domain_rows()[:8]]
    core = {("emb", "attn_1"), ("attn_1", "logits")}
    dangling = Circuit(2, 1, "block", frozenset(core | {("emb", "mlp_0"), ("emb", "attn_0")}))
    runs = [model.run(prompts, c) for c in (Circuit(2, 1, "block", frozenset(core)), dangling)]
    assert [r.logits for r in runs[0]] == [r.logits for r in runs[1]]
    for row in runs[1]:
        assert set(row.positions[-1].residuals) == {"attn_1"}
        assert all(not site.startswith(("attn_0", "mlp_")) for t in row.trace for site in t)
