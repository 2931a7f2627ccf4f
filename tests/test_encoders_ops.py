"""Operator encoders against the exact evaluator, on every branch, with real Z3 and cvc5.

Each check is the pair that makes an encoding trustworthy: with the input
fixed to exact rationals, `output ≠ exact output` is UNSAT (the encoding
allows nothing else) and `output = exact output` is SAT (it is not vacuous).
Guided encodings are checked together with their guards.
"""

import functools
import random
from collections.abc import Callable
from fractions import Fraction as F

import pytest

from encoders.ops import (
    Settled,
    band_norm_full,
    band_norm_guided,
    leaky_relu_full,
    leaky_relu_guided,
    sparsemax_full,
    sparsemax_guided,
)
from encoders.smtlib import Affine, Formula, Query, and_, eq, ge, gt, le, not_
from encoders.solvers import SolverPool
from farm.model.exact import band_norm, leaky_relu, sparsemax

HALF_LOW, HALF_HIGH = F(22, 5), F(42, 5)
Encode = Callable[[Query, list[Affine]], tuple[list[Affine], list[Formula]]]


@pytest.fixture(scope="module")
def both():
    with SolverPool("both", timeout=60) as pool:
        yield pool


def _fixed_input(q: Query, values: list[F]) -> list[Affine]:
    """Input variables pinned to exact values (variables, so the solver does the arithmetic)."""
    xs = [q.real(f"in{i}") for i in range(len(values))]
    q.add(*(eq(x, v) for x, v in zip(xs, values, strict=True)))
    return xs


def _assert_exact(both: SolverPool, encode: Encode, values: list[F], expected: list[F]) -> None:
    for differ in (True, False):
        q = Query()
        out, guards = encode(q, _fixed_input(q, values))
        same = [eq(o, e) for o, e in zip(out, expected, strict=True)]
        q.add(*guards)
        q.add(not_(and_(*same)) if differ else and_(*same))
        status = both.solve(q.text()).status
        assert status == ("unsat" if differ else "sat"), (differ, values)


def _guided(op: Callable, *branch) -> Encode:
    return lambda q, xs: op(q, xs, *branch, tag="op")


def _full(op: Callable, **kw) -> Encode:
    return lambda q, xs: (op(q, xs, tag="op", **kw), [])


# --------------------------------------------------------------------------- LeakyReLU


def test_leaky_relu_both_signs(both):
    values = [F(-3, 7), F(0), F(5, 3), F(-1, 100), F(2**-30), F(-12345, 17)]
    expected, signs = leaky_relu(values)
    assert set(signs) == {True, False}
    _assert_exact(both, lambda q, xs: leaky_relu_guided(xs, signs), values, expected)
    _assert_exact(both, _full(leaky_relu_full), values, expected)


def test_leaky_relu_wrong_branch_is_never_silently_unsat(both):
    """A wrong recorded sign fails its guard: the guarded query is unsat, never accepted."""
    values = [F(-3, 7), F(5, 3)]
    q = Query()
    out, guards = leaky_relu_guided(_fixed_input(q, values), (True, True))
    q.add(*guards)
    assert both.solve(q.text()).status == "unsat"


# --------------------------------------------------------------------------- sparsemax


def _scores(rng: random.Random, n: int, k: int) -> list[F]:
    """n scores whose sparsemax support has exactly k elements, in shuffled positions."""
    z = [F(rng.randint(0, 100), 1000) for _ in range(k)]
    z += [F(-5) + F(rng.randint(-1000, 1000), 997) for _ in range(n - k)]
    rng.shuffle(z)
    return z


@pytest.mark.parametrize("k", range(1, 7))
def test_sparsemax_every_support_size(both, k):
    rng = random.Random(k)
    for n in sorted({k, 6}):
        z = _scores(rng, n, k)
        expected, support = sparsemax(z)
        assert len(support) == k
        _assert_exact(both, _guided(sparsemax_guided, support), z, expected)
        _assert_exact(both, _full(sparsemax_full), z, expected)


def test_sparsemax_tie_at_threshold(both):
    """z_i exactly at τ is outside the support (weight 0): the ≤ side of the split."""
    z = [F(1), F(0), F(-1, 2)]
    expected, support = sparsemax(z)
    assert support == (0,) and expected == [1, 0, 0]
    _assert_exact(both, _guided(sparsemax_guided, support), z, expected)
    _assert_exact(both, _full(sparsemax_full), z, expected)


# --------------------------------------------------------------------------- BandNorm


def _band_input(rng: random.Random, side_sum: F, d: int = 16, zeros: int = 0) -> list[F]:
    """A random x whose positive side sums to `side_sum` (Σp = Σn since Σc = 0).

    The last `zeros` coordinates sit exactly at the mean (centred value 0).
    """
    c = [F(rng.randint(-1000, 1000), 331) for _ in range(d - zeros)]
    mean = sum(c) / len(c)
    c = [v - mean for v in c] + [F(0)] * zeros
    total = sum(v for v in c if v > 0)
    offset = F(rng.randint(-50, 50), 7)
    return [v * side_sum / total + offset for v in c] if side_sum else [offset] * d


def _norm_params(rng: random.Random, d: int = 16) -> tuple[list[F], list[F]]:
    return ([F(rng.randint(1, 400), 256) for _ in range(d)],
            [F(rng.randint(-100, 100), 512) for _ in range(d)])


BRANCHES = {  # name -> (side sum, zero coordinates, expected (projected, lifted, fallback))
    "projected": (F(12), 0, (True, False, False)),
    "projected_boundary": (HALF_HIGH, 3, (False, False, False)),
    "middle": (F(6), 2, (False, False, False)),
    "lifted": (F(2), 0, (False, True, False)),
    "lifted_boundary": (HALF_LOW, 0, (False, False, False)),
    "fallback": (F(0), 0, (False, True, True)),
}


@pytest.mark.parametrize("name", BRANCHES)
def test_band_norm_every_branch(both, name):
    side_sum, zeros, flags = BRANCHES[name]
    rng = random.Random(name)
    x = _band_input(rng, side_sum, zeros=zeros)
    gamma, beta = _norm_params(rng)
    expected, branch = band_norm(x, gamma, beta, HALF_LOW, HALF_HIGH)
    for side in (branch.p, branch.n):
        assert (side.projected, side.lifted, side.fallback) == flags
    assert branch.signs.count(0) == (16 if name == "fallback" else zeros)
    params = (gamma, beta, HALF_LOW, HALF_HIGH)
    _assert_exact(both, _guided(band_norm_guided, *params, branch), x, expected)
    full = functools.partial(band_norm_full, gamma=gamma, beta=beta, half_low=HALF_LOW,
                             half_high=HALF_HIGH, tag="op")
    _assert_exact(both, full, x, expected)
    fixed = {i: s for i, s in enumerate(branch.signs) if s}
    settled = {n: Settled(side.projected, side.lifted)
               for n, side in (("p", branch.p), ("n", branch.n))}
    _assert_exact(both, functools.partial(full, fixed_signs=fixed, settled=settled), x,
                  expected)
    if branch.p.projected:  # and the support settled too: no split is left
        settled = {n: Settled(True, False, frozenset(side.support),
                              frozenset(range(16)) - frozenset(side.support))
                   for n, side in (("p", branch.p), ("n", branch.n))}
        _assert_exact(both, functools.partial(full, fixed_signs=fixed, settled=settled), x,
                      expected)


@pytest.mark.parametrize("k", [1, 2])
def test_band_norm_full_lift_onto_few_coordinates(both, k):
    """A side lifted onto k = 1 or 2 active coordinates (the other side onto 16 − k):
    the full encoding, with or without the signs and the lift settled in advance,
    admits the exact output and nothing else, so its stated bounds on the share
    (deficit/k_max ≤ share ≤ deficit/k_min) and the lifts' sum are implied, not
    assumed."""
    x = [F(3, 2 * k)] * k + [F(-3, 2 * (16 - k))] * (16 - k)  # Σp = Σn = 3/2 < half_low
    gamma, beta = _norm_params(random.Random(k))
    expected, branch = band_norm(x, gamma, beta, HALF_LOW, HALF_HIGH)
    assert branch.p.lifted and branch.p.support == tuple(range(k))
    full = functools.partial(band_norm_full, gamma=gamma, beta=beta, half_low=HALF_LOW,
                             half_high=HALF_HIGH, tag="op")
    _assert_exact(both, full, x, expected)
    fixed = dict(enumerate(branch.signs))
    for lifted in (None, True):
        settled = {"p": Settled(False, lifted), "n": Settled(False, lifted)}
        _assert_exact(both, functools.partial(full, fixed_signs=fixed, settled=settled), x,
                      expected)


def test_band_norm_guards_reject_a_wrong_branch(both):
    rng = random.Random(7)
    x = _band_input(rng, F(12))
    gamma, beta = _norm_params(rng)
    _, branch = band_norm(x, gamma, beta, HALF_LOW, HALF_HIGH)
    wrong = branch._replace(p=branch.p._replace(support=branch.p.support[1:]))
    q = Query()
    _, guards = band_norm_guided(q, _fixed_input(q, x), gamma, beta, HALF_LOW, HALF_HIGH, wrong,
                                 tag="bn")
    q.add(*guards)
    assert both.solve(q.text()).status == "unsat"


def test_band_norm_full_guards_what_the_caller_settled(both):
    """A projected side called unprojected, a lift that does not happen, a coordinate
    called inside (outside) the projection's support that is not, a sign called
    fixed that is not: the guard fails, so a wrong setting never makes a
    claim true. And the encoding still admits that input with its guard failing
    (the facts it states as hard constraints hold on every branch), so a query
    whose negated claim includes the guards finds it."""
    rng = random.Random(8)
    x, middle = _band_input(rng, F(12)), _band_input(rng, F(6))
    gamma, beta = _norm_params(rng)
    _, branch = band_norm(x, gamma, beta, HALF_LOW, HALF_HIGH)
    _, unlifted = band_norm(middle, gamma, beta, HALF_LOW, HALF_HIGH)
    assert branch.p.projected and not unlifted.p.lifted
    wrong_sign = next(i for i, s in enumerate(branch.signs) if s > 0)
    negative = next(i for i, s in enumerate(unlifted.signs) if s < 0)
    kept, dropped = branch.p.support[0], next(i for i, s in enumerate(branch.signs)
                                              if s > 0 and i not in branch.p.support)
    wrong = ((x, {"settled": {"p": Settled(projected=False)}}),
             (x, {"settled": {"p": Settled(lifted=True)}}),
             (x, {"settled": {"p": Settled(True, False, inside=frozenset({dropped}))}}),
             (x, {"settled": {"p": Settled(True, False, outside=frozenset({kept}))}}),
             (x, {"fixed_signs": {wrong_sign: -1}}),
             (middle, {"settled": {"p": Settled(False, True), "n": Settled(False, None)}}),
             (middle, {"fixed_signs": {negative: 1}}))
    for values, settled in wrong:
        for guards_fail in (False, True):
            q = Query()
            _, guards = band_norm_full(q, _fixed_input(q, values), gamma, beta, HALF_LOW,
                                       HALF_HIGH, tag="bn", **settled)
            q.add(not_(and_(*guards)) if guards_fail else and_(*guards))
            assert both.solve(q.text()).status == ("sat" if guards_fail else "unsat"), settled


# --------------------------------------------------------------------------- full BandNorm on a box


def _box_query(centre: list[F], eps: F, gamma, beta, extra: Callable[[list[Affine]], list],
               fixed: dict[int, int]) -> Query:
    q = Query()
    xs = [q.real(f"x{i}", model=True) for i in range(len(centre))]
    q.add(*(f for x, a in zip(xs, centre, strict=True) for f in (ge(x, a - eps), le(x, a + eps))))
    out, guards = band_norm_full(q, xs, gamma, beta, HALF_LOW, HALF_HIGH, tag="bn",
                                 fixed_signs=fixed)
    q.add(*guards)  # the box keeps the fixed signs: asserting them loses no model
    for i, o in enumerate(out):
        q.define(f"out{i}", o, model=True)
    q.add(*extra(xs))
    return q


def _replay(both: SolverPool, q: Query, gamma, beta) -> set[tuple[bool, bool]]:
    """Every solver's model replays exactly; returns the (projected, lifted) branches seen."""
    r = both.solve(q.text(), q.model_vars)
    assert r.status == "sat"
    seen = set()
    for v in r.verdicts:
        x = [v.model[f"x{i}"] for i in range(16)]
        expected, branch = band_norm(x, gamma, beta, HALF_LOW, HALF_HIGH)
        assert [v.model[f"out{i}"] for i in range(16)] == expected, v.solver
        seen.add((branch.p.projected, branch.p.lifted))
    return seen


@pytest.mark.parametrize("boundary", [HALF_HIGH, HALF_LOW])
def test_band_norm_full_on_a_box_replays_exactly_on_both_sides(both, boundary):
    """Boxes straddling the projection / lift boundary: models on each side replay exactly."""
    rng = random.Random(str(boundary))
    centre = _band_input(rng, boundary, zeros=2)
    gamma, beta = _norm_params(rng)
    eps = F(1, 100)
    mean = sum(centre) / 16
    signs = [(v > mean) - (v < mean) for v in centre]
    fixed = {i: s for i, s in enumerate(signs) if abs(centre[i] - mean) > 2 * eps}
    assert len(fixed) <= 14  # at least the two zero coordinates keep their sign split

    def side_sum(xs):  # Σp over the fixed-positive coordinates: a lower bound, affine in x
        m = Affine.sum(xs) * F(1, 16)
        return Affine.sum(xs[i] - m for i, s in fixed.items() if s > 0)

    def at_most(xs):  # ... and exact once the free coordinates are held at or below the mean
        m = Affine.sum(xs) * F(1, 16)
        return [le(side_sum(xs), boundary - eps),
                *(le(x - m, 0) for i, x in enumerate(xs) if i not in fixed)]

    above = _replay(both, _box_query(centre, eps, gamma, beta,
                                     lambda xs: [gt(side_sum(xs), boundary + eps)], fixed),
                    gamma, beta)
    below = _replay(both, _box_query(centre, eps, gamma, beta, at_most, fixed), gamma, beta)
    if boundary == HALF_HIGH:
        assert above == {(True, False)} and below == {(False, False)}
    else:
        assert above == {(False, False)} and below == {(False, True)}
    assert _replay(both, _box_query(centre, eps, gamma, beta, lambda xs: [], {}), gamma, beta)
