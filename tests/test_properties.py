"""Query planning: claims, identities and what a planned query carries (no solver needed)."""

import hashlib
import itertools
import pickle
import random
import re
from fractions import Fraction as F

import pytest

from encoders.properties import Claim, Fixed, Perturbed, Planner, settled_in_ball
from farm.errors import FarmError
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel, band_norm
from farm.model.tracing import TraceReader, record_traces
from farm.tasks.registry import get_task
from tests.conftest import weights_of

QUOTE_EDGES = [("emb", "attn_0"), ("emb", "attn_1"), ("attn_0", "attn_1"), ("attn_1", "logits")]


@pytest.fixture(scope="module")
def planner(trained):
    model = ExactModel(trained.model.cfg, weights_of(trained.model))
    circuit = Circuit(2, 1, "block", frozenset(QUOTE_EDGES), "quote_close")
    return Planner(model, circuit, get_task("quote_close"), inputs=[0, 1, 15])


def _truth(text: str) -> bool:
    """Value of a ground and/or formula over true/false, as the solver would read it."""
    expr = text.replace("(or ", "any((").replace("(and ", "all((").replace(" ", ", ")
    expr = expr.replace("true", "True").replace("false", "False").replace(")", ",))")
    return eval(expr)  # noqa: S307 - test-local, only the tokens replaced above


@pytest.mark.parametrize("claim", [Claim("decides", 1), Claim("decides", -1), Claim("differ"),
                                   Claim("agree")])
def test_claim_negation_rejects_exactly_the_sign_patterns_it_fails(claim):
    values = (F(-1, 3), F(0), F(2, 7))
    for margins in itertools.product(values, repeat=claim.arity):
        rejected = claim.violated(list(margins))  # constant margins fold each atom
        assert _truth(rejected.text) == (not claim.holds(margins))


def test_ties_are_never_decisions():
    assert not Claim("decides", 1).holds([F(0)])
    assert not Claim("agree").holds([F(0), F(0)])
    assert Claim("differ").holds([F(0), F(1)])


def test_planned_queries_are_named_by_their_text_and_pickle(planner):
    fe = list(planner.functional_equivalence())
    assert len(fe) == 3
    for q in fe:
        assert q.hash == hashlib.sha256(q.text.encode()).hexdigest()
        assert isinstance(q.replay, Fixed) and q.holds_exactly is True
        assert q.margin_vars == ("m0",) and "m0" in q.model_vars
    again = next(planner.functional_equivalence())
    assert again.hash == fe[0].hash  # planning is deterministic
    assert pickle.loads(pickle.dumps(fe[0])) == fe[0]


def test_edge_necessity_finds_witnesses_and_content_invariance_shares_the_anchors_decision(
        planner):
    queries, findings = planner.edge_necessity()
    assert findings == [] and [q.edge for q in queries] == QUOTE_EDGES
    assert all(q.holds_exactly for q in queries)
    ci = list(planner.content_invariance())
    fe = list(planner.functional_equivalence())
    # inputs 1 and 2 share an opener (input 0's class has no pair): each decides as the
    # anchor; it decides P(x), so these are functional equivalence's texts, solved once
    assert [q.subject.split("anchor ")[1] for q in ci] == ["1", "1"]
    assert [q.hash for q in ci] == [q.hash for q in fe[1:]]
    assert {q.property for q in ci} == {"content_invariance"}
    (pair,) = planner.content_invariance(pairwise=True)
    assert pair.subject.startswith("pair 1~2") and pair.claim == Claim("agree")


def test_exact_runs_are_computed_when_first_asked_for_and_equal_a_whole_run(planner):
    """Solving the first queries overlaps evaluating the later prompts: a new planner
    has run nothing, and what it runs is the exact model's run."""
    model, circuit = planner.model, planner.circuit
    planner = Planner(model, circuit, planner.task)
    assert len(planner.runs.memo) == 0
    first = next(planner.functional_equivalence())
    assert {len(p) for p in planner.runs.memo} == set(range(1, 7))  # prompt 0 only
    assert first.replay.margins == (planner.margin(model.run([planner.prompts[0]], circuit)[0]),)
    assert planner.results[-1] == model.run([planner.prompts[-1]], circuit)[0]
    assert planner.results[1:3] == model.run(planner.prompts[1:3], circuit)
    with pytest.raises(IndexError):
        planner.results[len(planner.prompts)]


def test_robustness_fixes_signs_only_in_the_full_encoding(planner):
    guided = planner.robustness_query(0, F(1, 100))
    full = planner.robustness_query(0, F(1, 100), encoding="full")
    assert isinstance(guided.replay, Perturbed) and guided.replay.branch is not None
    assert full.replay.branch is None and guided.hash != full.hash
    assert guided.model_vars[:16] == tuple(f"eta_{k}" for k in range(16))
    assert "(<= (* 100 eta_0) 1)" in full.text and full.replay.centre == full.replay.residual


def test_a_first_robustness_query_is_centred_short_and_its_ball_holds_the_epsilon_ball(
        planner):
    """r_E(x)'s hundreds of digits are left out of a first query: its centre is a
    multiple of 2^-40 and its ball reaches every point of the ε-ball around r_E(x)."""
    from encoders.properties import CENTRE_BITS

    for i in range(len(planner.prompts)):
        first = planner.robustness_query(i, F(1, 100))
        again = planner.robustness_query(i, F(1, 100), encoding="full")
        p = first.replay
        assert all((c * 2 ** CENTRE_BITS).denominator == 1 for c in p.centre)
        assert max(abs(c - r) for c, r in zip(p.centre, p.residual, strict=True)) + p.epsilon \
            <= p.ball <= p.epsilon + F(1, 2 ** (CENTRE_BITS + 1))
        longest = [max(map(len, re.findall(r"\d+", q.text))) for q in (first, again)]
        assert longest[0] <= 40 < 100 < longest[1]  # digits of the longest numeral


def test_robustness_asks_guided_only_where_no_sign_can_change(planner):
    """A centred coordinate within 2ε(d−1)/d of zero changes sign at a vertex of the
    ball, where a guided query's guard fails: such inputs go straight to full."""
    d = planner.model.cfg.d_model
    for epsilon in (F(1, 100), F(1, 20)):
        kinds = []
        for i in range(len(planner.prompts)):
            q = planner.robustness_query(i, epsilon)
            r, reach = q.replay.centre, 2 * q.replay.ball * (d - 1) / d
            near_zero = any(abs(c - sum(r) / d) <= reach for c in r)
            assert (q.replay.branch is None) == near_zero, (epsilon, i)
            kinds.append(q.kind)
    assert set(kinds) == {"robustness/guided", "robustness/full"}  # at 1/20, both occur


@pytest.fixture(scope="module")
def trace_file(planner, tmp_path_factory):
    """The circuit's trace over the whole domain, as `farm run` records it."""
    path = tmp_path_factory.mktemp("trace") / "quote_close.parquet"
    record_traces(planner.model, planner.task.domain(), path, planner.circuit)
    return path


def _texts(p: Planner) -> list[tuple[str, str]]:
    queries = [*p.functional_equivalence(), *p.edge_necessity()[0], *p.content_invariance(),
               *p.robustness(F(1, 100)), p.robustness_query(1, F(1, 100), encoding="full")]
    return [(q.subject, q.hash) for q in queries] + [("text", q.text) for q in queries]


def test_planning_from_a_trace_file_gives_the_same_queries(planner, trace_file):
    traced = Planner(planner.model, planner.circuit, planner.task, inputs=[0, 1, 15],
                     traces=TraceReader(trace_file))
    assert traced.branches.keys() == set(planner.prompts)  # a subset of the domain's file
    assert _texts(traced) == _texts(planner)
    guided = traced.robustness_query(2, F(1, 100))
    assert guided.replay == planner.robustness_query(2, F(1, 100)).replay


def test_a_trace_of_another_circuit_or_other_prompts_is_refused(planner, trace_file, tmp_path):
    model, task, circuit = planner.model, planner.task, planner.circuit
    full = Circuit.full(2, 1, "block", task.name)
    record_traces(model, task.domain()[:1], tmp_path / "full.parquet", full)
    with pytest.raises(FarmError, match=r"full.parquet was recorded for another circuit: it "
                                        r"has edge\(s\) \[.*'mlp_0'.*\] not planned$"):
        Planner(model, circuit, task, inputs=[0], traces=TraceReader(tmp_path / "full.parquet"))
    with pytest.raises(FarmError, match="another circuit: it lacks the planned edge"):
        Planner(model, full, task, inputs=[0], traces=TraceReader(trace_file))
    record_traces(model, task.domain()[:2], tmp_path / "few.parquet", circuit)
    with pytest.raises(FarmError, match=r"few.parquet has no record of 1 of the 3 prompts "
                                        r"planned, e.g. \[1, 2, 5, 10, 6, 8\]"):
        Planner(model, circuit, task, inputs=[0, 1, 15], traces=TraceReader(
            tmp_path / "few.parquet"))
    record_traces(model, task.domain()[:2], tmp_path / "model.parquet")  # no circuit recorded
    bracket = get_task("bracket_type")
    with pytest.raises(FarmError, match="no record of 2 of the 2 prompts"):
        Planner(model, Circuit.full(2, 1, "block", bracket.name), bracket, inputs=[0, 1],
                traces=TraceReader(tmp_path / "model.parquet"))


def test_a_trace_with_no_circuit_is_of_the_full_model(planner, tmp_path):
    """`farm.model.exact` runs the full model when given no circuit, so such a file serves the
    full circuit only: the ACDC circuit's branches differ from the model's."""
    model, task = planner.model, planner.task
    record_traces(model, task.domain()[:2], tmp_path / "model.parquet")
    reader = TraceReader(tmp_path / "model.parquet")
    with pytest.raises(FarmError, match=r"model.parquet was recorded for the full model \(no "
                                        r"circuit recorded\): it has edge\(s\) .* not planned"):
        Planner(model, planner.circuit, task, inputs=[0, 1], traces=reader)
    full = Planner(model, Circuit.full(2, 1, "block", task.name), task, inputs=[0, 1],
                   traces=reader)
    assert [full.branches[r.prompt] for r in full.results] == [r.trace for r in full.results]


def test_shared_prefix_positions_do_not_change_any_query_text(trained):
    """Prefix positions are encoded once and reused, yet every query's text (and so its
    hash) is what a cold planner writes for that input alone, in any order; the prompts
    sharing a prefix also share its sections word for word."""
    weights = weights_of(trained.model)
    circuit = Circuit(2, 1, "block", frozenset(QUOTE_EDGES), "quote_close")
    task, inputs = get_task("quote_close"), [0, 2, 4, 6]  # one opener, x3 varies
    warm = [q.text for q in Planner(ExactModel(trained.model.cfg, weights), circuit, task,
                                    inputs=inputs).functional_equivalence()]
    cold = [next(Planner(ExactModel(trained.model.cfg, weights), circuit, task,
                         inputs=[i]).functional_equivalence()).text for i in reversed(inputs)]
    assert warm == cold[::-1]
    prefixes = {t[:t.index("; section r0.p5")] for t in warm}
    assert len(prefixes) == 1 and all(f"; section r0.p{k}\n" in warm[0] for k in range(6))


@pytest.mark.parametrize("epsilon", [F(1, 100), F(1, 10), F(3, 10)])
def test_what_is_settled_in_the_ball_holds_at_its_extreme_points(planner, epsilon):
    """Fixed signs, settled projections and lifts, and the projection's settled support
    hold at every η that moves a centred coordinate furthest (η_i = ±ε, the others
    ∓ε), at the η that most grow and shrink the sides' sums (η_i = ±ε sign(c_i)),
    and at random vertices of the ball: for the planner's residuals, and for spread
    ones whose sides are always projected."""
    cfg = planner.model.cfg
    rng = random.Random(0)
    spread = [[F(rng.randint(-900, 900), 97) for _ in range(16)] for _ in range(8)]
    residuals = [result.final_residual for result in planner.results] + spread
    projected = 0
    for r in residuals:
        d = len(r)
        settled = settled_in_ball(r, epsilon, cfg)
        projected += settled["settled"]["p"].projected is True
        extreme = [[s * (epsilon if j == i else -epsilon) for j in range(d)]
                   for i in range(d) for s in (1, -1)]
        mean = sum(r) / d
        sums = [[s * epsilon * (1 if a >= mean else -1) for a in r] for s in (1, -1)]
        vertices = [[rng.choice((epsilon, -epsilon)) for _ in range(d)] for _ in range(64)]
        for eta in extreme + sums + vertices:
            x = [a + e for a, e in zip(r, eta, strict=True)]
            _, branch = band_norm(x, *planner.model.norm_final, cfg.half_low, cfg.half_high)
            assert all(branch.signs[k] == s for k, s in settled["fixed_signs"].items())
            for side, found in (("p", branch.p), ("n", branch.n)):
                want = settled["settled"][side]
                assert want.projected in (None, found.projected)
                assert want.lifted in (None, found.lifted)
                assert want.inside <= set(found.support)
                assert not want.outside & set(found.support)
    assert projected >= 8  # the spread residuals' supports were put to the test


def test_a_wrong_flip_screen_costs_time_never_a_witness(planner):
    """Edge necessity's witness search stays exact and exhaustive: a screen that names
    inputs which do not flip (or nonsense) still ends at a real flip."""
    screened = Planner(planner.model, planner.circuit, planner.task,
                       likely_flips=lambda ablated: [127, 127, 2])
    queries, findings = screened.edge_necessity()
    assert findings == [] and [q.edge for q in queries] == QUOTE_EDGES
    assert all(q.holds_exactly for q in queries)
    with pytest.raises(ValueError, match="whole domain"):  # its indices would be wrong
        Planner(planner.model, planner.circuit, planner.task, inputs=[0, 1],
                likely_flips=lambda ablated: [1])
