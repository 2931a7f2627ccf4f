"""Softmax induction certificates: exp bounded by rationals, a whole softmax model enclosed,
and certificates whose every bound holds against high-precision evaluation."""

from __future__ import annotations

import random
import re
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
import torch

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.proofs.induction.check import check_certificate
from farm.proofs.induction.derive import InductionProver
from farm.proofs.induction.enclosure import SoftmaxEnclosure, softmax_bounds
from farm.proofs.induction.nfp import parse, rejections
from farm.proofs.rational_exp import exp_bounds
from tests.test_induction_certificates import HEAD, TASK, induction_checkpoint

DIGITS = 80
SLACK = Decimal(10) ** -60  # the reference's own rounding, far below any bound's width


def _decimal(x: Fraction) -> Decimal:
    return Decimal(x.numerator) / Decimal(x.denominator)


def _exp(x: Fraction) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = DIGITS
        return _decimal(x).exp()


def _points(seed: int, n: int) -> list[Fraction]:
    rng = random.Random(seed)
    return [Fraction(0), Fraction(1, 2), Fraction(-1, 2), Fraction(1, 10**30)] + [
        Fraction(rng.randint(-10**12, 10**12), rng.choice([1, 7, 1024, 10**9])) / 10**10
        * rng.choice([1, 2]) for _ in range(n)]  # |x| ≤ 200: scores' differences and beyond


def test_exp_bounds_enclose_e_to_the_x_tightly() -> None:
    with localcontext() as ctx:
        ctx.prec = DIGITS
        for x in _points(0, 300):
            lo, hi = exp_bounds(x)
            true = _exp(x)
            assert _decimal(lo) <= true <= _decimal(hi), x
            assert (_decimal(hi) - _decimal(lo)) / true < Decimal(2) ** -70, x
            coarse = exp_bounds(x, bits=20)
            assert coarse[0] <= lo and hi <= coarse[1]  # more bits, a narrower enclosure


def test_far_below_the_limit_exp_is_bounded_by_a_tiny_number() -> None:
    lo, hi = exp_bounds(Fraction(-10**40))
    assert lo == 0 < hi <= exp_bounds(Fraction(-1024))[1] < Fraction(1, 2**1470)
    with pytest.raises(ValueError):
        exp_bounds(Fraction(10**40))


def test_softmax_bounds_hold_at_random_points_of_the_score_boxes() -> None:
    rng = random.Random(1)
    with localcontext() as ctx:
        ctx.prec = DIGITS
        for _ in range(40):
            n = rng.randint(1, 6)
            lo = [Fraction(rng.randint(-4000, 4000), 512) for _ in range(n)]
            hi = [a + Fraction(rng.randint(0, 64), 2**20) for a in lo]
            bounds = softmax_bounds(lo, hi)
            for _ in range(5):
                s = [a + (b - a) * Fraction(rng.randint(0, 100), 100)
                     for a, b in zip(lo, hi, strict=True)]
                e = [_exp(v) for v in s]
                for (w_lo, w_hi), ei in zip(bounds, e, strict=True):
                    assert _decimal(w_lo) <= ei / sum(e) <= _decimal(w_hi)
            assert all(0 < w_lo <= w_hi <= 1 for w_lo, w_hi in bounds)


def _reference(cfg: GPTConfig, weights: dict[str, np.ndarray], prompt: list[int]):
    """The model's real-number run at DIGITS significant digits: every weight at its exact
    binary value, exp by Decimal."""
    def mat(name):
        return [[Decimal(float(v)) for v in row] for row in np.asarray(weights[name])]

    def apply(w, x):
        return [sum(wi * xi for wi, xi in zip(row, x, strict=True)) for row in w]

    wte, wpe = mat("wte.weight"), mat("wpe.weight")
    xs = [[a + b for a, b in zip(wte[t], wpe[p], strict=True)] for p, t in enumerate(prompt)]
    dh, scale = cfg.head_dim, Decimal(cfg.attn_scale)
    patterns = []
    for layer in range(cfg.n_layers):
        q, k, v, o = (mat(f"blocks.{layer}.attn.{n}.weight") for n in "qkvo")
        qs, ks, vs = ([apply(w, x) for x in xs] for w in (q, k, v))
        outs = [[Decimal(0)] * cfg.d_model for _ in xs]
        for h in range(cfg.n_heads):
            cols = range(h * dh, (h + 1) * dh)
            rows = []
            for i in range(len(xs)):
                s = [sum(qs[i][c] * ks[j][c] for c in cols) / scale for j in range(i + 1)]
                e = [x.exp() for x in s]
                w = [x / sum(e) for x in e]
                rows.append(w)
                for c in cols:
                    outs[i][c] = sum(w[j] * vs[j][c] for j in range(i + 1))
            patterns.append(rows)
        xs = [[a + b for a, b in zip(x, apply(o, z), strict=True)] for x, z in zip(xs, outs,
                                                                                 strict=True)]
    return patterns, xs


def test_the_enclosure_contains_a_high_precision_run_of_a_random_model() -> None:
    torch.manual_seed(3)
    cfg = GPTConfig(vocab_size=12, seq_len=6, d_model=8, n_heads=2, d_mlp=0,
                    norm_variant="none", attn_variant="softmax", attn_bias=False)
    model = VerifiableGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # sharper attention than at initialisation
    weights = dict(Checkpoint.from_model(model).weights)
    enclosure = SoftmaxEnclosure(cfg, weights)
    rng = random.Random(4)
    with localcontext() as ctx:
        ctx.prec = DIGITS
        for _ in range(4):
            prompt = [rng.randrange(cfg.vocab_size) for _ in range(cfg.seq_len)]
            patterns, xs = _reference(cfg, weights, prompt)
            sites = enclosure.run(prompt)
            for layer in range(cfg.n_layers):
                for h in range(cfg.n_heads):
                    for i, site in enumerate(sites):
                        for j, (lo, hi) in enumerate(site.weights[layer, h]):
                            true = patterns[layer * cfg.n_heads + h][i][j]
                            assert _decimal(lo) - SLACK <= true <= _decimal(hi) + SLACK
                            assert hi - lo < Fraction(1, 10**9)
            final = sites[-1].residual[-1]
            for c, true in enumerate(xs[-1]):
                assert Decimal(final.m[c] - final.r[c]) - SLACK <= true <= \
                    Decimal(final.m[c] + final.r[c]) + SLACK
                assert final.r[c] < 1e-9


@pytest.fixture(scope="module")
def sharp() -> Checkpoint:
    return induction_checkpoint(gain=64.0, attention="softmax")


def test_a_softmax_induction_head_is_certified_and_its_bounds_hold(sharp: Checkpoint) -> None:
    prover = InductionProver(sharp, TASK, HEAD)
    cert = prover.certificate(1234)
    assert ("certified", "yes") in cert.farm and rejections(cert) == []
    assert 0 < cert.eps < Fraction(1, 10**3)  # softmax never puts all weight on one key
    with torch.no_grad():
        model = sharp.to_model().double()
        _, cache = model.run_with_cache(torch.tensor([TASK.domain()[1234]]))
        pattern = cache["blocks.1.attn.hook_pattern"][0, 0].numpy()
    assert abs(pattern[7, 4] - (1 - float(cert.eps))) < 1e-6 and pattern[7, 4] >= 1 - cert.eps
    for k in range(8):
        assert pattern[7, k] <= float(cert.weight_bound[7, k]) + 1e-15
    assert sum(cert.weight[7, k] for k in range(8)) == 1
    farm = {words[0]: words[1:] for words in cert.farm}
    assert 9 < Fraction(farm["decision"][2]) < 10  # ε of the weight leaks away from 10
    check_certificate(parse(cert.render()), sharp, "cert")


@pytest.mark.parametrize("pattern, replacement, complaint", [
    (r"^weight-bound 7 4 (\S+)$", "weight-bound 7 4 2", "weight-bound 7 4 is 2"),
    (r"^eps (\S+)$", "eps 1/1000000000", "eps is 1/1000000000"),
    (r"^prev 7 4$", "prev 7 3", "prev 7 is 3"),
])
def test_tampered_softmax_certificates_are_rejected(sharp: Checkpoint, pattern: str,
                                                    replacement: str, complaint: str) -> None:
    text = InductionProver(sharp, TASK, HEAD).certificate(99).render()
    tampered, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert count == 1
    with pytest.raises(FarmError, match=re.escape(complaint)):
        check_certificate(parse(tampered), sharp, "cert")


def test_enormous_score_gaps_are_bounded_not_stalled_on() -> None:
    """Gaps of about 2·10^4: the weights off the key are bounded via e^-1024 (ε is then the
    80-bit rounding of the key's lower bound). Gaps of about
    2·10^36: float64 score intervals are ~10^20 wide there, so nothing is certified, and
    the certificate says so without computing e^(10^36)."""
    cert = InductionProver(induction_checkpoint(gain=1e5, attention="softmax"), TASK,
                           HEAD).certificate(1234)
    assert ("certified", "yes") in cert.farm and 0 < cert.eps <= Fraction(1, 2**79)
    cert = InductionProver(induction_checkpoint(gain=1e37, attention="softmax"), TASK,
                           HEAD).certificate(1234)
    assert ("certified", "no") in cert.farm and cert.eps == 1


def test_a_weak_softmax_head_is_stated_but_not_certified() -> None:
    """A score gap of 2/√32 leaves most weight elsewhere: ε is large and stated, and the
    copying bound falls below zero, so the certificate says no."""
    cert = InductionProver(induction_checkpoint(gain=2.0, attention="softmax"), TASK,
                           HEAD).certificate(1234)
    assert cert.eps > Fraction(1, 2) and ("certified", "no") in cert.farm
