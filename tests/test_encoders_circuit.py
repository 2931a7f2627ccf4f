"""Circuit runs encoded in QF_LRA against the exact evaluator, with real Z3 and cvc5.

For each model and circuit: `defs ∧ guards ∧ logits ≠ exact` is UNSAT (the
encoding allows no other logits) and `defs ∧ guards ∧ logits = exact` is SAT
(it is not vacuous); guided and full encodings agree.
"""

import re

import pytest

from encoders.circuit import EncodedRun, _consts, encode_run
from encoders.smtlib import Affine, Query, and_, eq, not_
from encoders.solvers import SolverPool
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
from tests.conftest import random_model, weights_of

PROMPT = (1, 2, 5, 9, 6, 7)
QUOTE_EDGES = {("emb", "attn_0"), ("attn_0", "mlp_0"), ("mlp_0", "logits")}


@pytest.fixture(scope="module")
def both():
    with SolverPool("both", timeout=120) as pool:
        yield pool


def _exact(seed: int = 0, **cfg) -> ExactModel:
    m = random_model(seed, **cfg)
    return ExactModel(m.cfg, weights_of(m))


def _status(both: SolverPool, model: ExactModel, circuit: Circuit, prompt, mode: str,
            differ: bool, logits: list[int] | None = None) -> str:
    """Solve defs ∧ guards ∧ (chosen logits ≠ / = exact)."""
    expected = model.run([prompt], circuit)[0]
    q = Query()
    run = encode_run(q, model, circuit, prompt, tag="c", mode=mode, result=expected)
    picked = logits if logits is not None else range(len(run.logits))
    same = and_(*(eq(run.logits[i], expected.logits[i]) for i in picked))
    q.add(*run.guards, not_(same) if differ else same)
    return both.solve(q.text()).status


def _assert_exact(both, model, circuit, prompt=PROMPT, modes=("guided",), logits=None):
    for mode in modes:
        assert _status(both, model, circuit, prompt, mode, True, logits) == "unsat", mode
        assert _status(both, model, circuit, prompt, mode, False, logits) == "sat", mode


CANDIDATES = [9, 10, 13, 14]  # the logits the properties read (T of both tasks)


def test_full_model_one_head(both):
    _assert_exact(both, _exact(0), Circuit.full(2), prompt=(1, 2, 5, 9))


def test_two_heads_head_granularity_with_edges_removed(both):
    model = _exact(1, n_heads=2)
    circuit = Circuit.full(2, 2, "head")
    for edge in (("emb", "attn_1_h_0"), ("attn_0_h_1", "mlp_0"), ("mlp_1", "logits")):
        circuit = circuit.without(edge)
    _assert_exact(both, model, circuit, prompt=(1, 3, 11, 6), logits=CANDIDATES)
    block = Circuit.full(2).without(("emb", "logits")).without(("attn_0", "attn_1"))
    _assert_exact(both, model, block, prompt=(1, 3, 12), logits=CANDIDATES)


def test_norm_none_guided_and_full_agree(both):
    model = _exact(2, norm_variant="none", n_heads=2)
    _assert_exact(both, model, Circuit.full(2).without(("mlp_0", "logits")), prompt=(1, 2, 7, 9),
                  modes=("guided", "full"))
    _assert_exact(both, model, Circuit(2, 1, "block", frozenset(QUOTE_EDGES)), prompt=(1, 2, 7),
                  modes=("guided", "full"))


def test_trained_model(both, trained):
    model = ExactModel(trained.model.cfg, weights_of(trained.model))
    _assert_exact(both, model, Circuit(2, 1, "block", frozenset(QUOTE_EDGES)), logits=[9, 10])
    _assert_exact(both, model, Circuit.full(2), prompt=(1, 3, 5, 12), logits=[13, 14])


def test_two_runs_share_one_query(both):
    """A circuit and the circuit minus an edge, side by side under distinct tags."""
    model = _exact(0)
    circuit = Circuit.full(2)
    smaller = circuit.without(("attn_1", "logits"))
    a, b = (model.run([PROMPT], c)[0] for c in (circuit, smaller))
    for differ in (True, False):
        q = Query()
        ra = encode_run(q, model, circuit, PROMPT, tag="a", result=a)
        rb = encode_run(q, model, smaller, PROMPT, tag="b", result=b)
        gap = eq(ra.logits[9] - rb.logits[9], a.logits[9] - b.logits[9])
        q.add(*ra.guards, *rb.guards, not_(gap) if differ else gap)
        assert both.solve(q.text()).status == ("unsat" if differ else "sat")


@pytest.mark.parametrize("edge", [("attn_1", "logits"), ("emb", "attn_1"), ("emb", "attn_0")])
def test_a_run_on_a_base_reencodes_only_what_the_removed_edge_reaches(both, edge):
    """The circuit minus an edge, encoded on the circuit's run of the same prompt: the
    same exact logits as alone, and no variable of its own for nodes the edge does not
    reach (an edge into the logits leaves every earlier position to the base)."""
    model = _exact(0)
    circuit = Circuit.full(2)
    smaller = circuit.without(edge)
    a, b = (model.run([PROMPT], c)[0] for c in (circuit, smaller))
    for differ in (True, False):
        q = Query()
        ra = encode_run(q, model, circuit, PROMPT, tag="a", result=a)
        rb = encode_run(q, model, smaller, PROMPT, tag="b", result=b, base=ra)
        gap = eq(ra.logits[9] - rb.logits[9], a.logits[9] - b.logits[9])
        q.add(*ra.guards, *rb.guards, not_(gap) if differ else gap)
        assert both.solve(q.text()).status == ("unsat" if differ else "sat")
    own = {v.split(".")[1] for v in re.findall(r"\(declare-fun (b\.\S+) ", q.text())
           if not v.startswith("b.g")}  # its variables' position and site, not its guards
    last = len(PROMPT) - 1
    if edge[1] == "logits":
        assert own == {f"{last}f"}  # the final residual and norm only
    elif edge[1] == "attn_1":
        assert not any(site.endswith("a0") for site in own)  # layer 0 is the base's
    else:
        assert any(site == "0a0" for site in own)  # everything downstream is new
    with pytest.raises(ValueError, match="same prompt"):
        encode_run(Query(), model, smaller, PROMPT[:-1], tag="c", base=ra)


def test_a_wrong_trace_fails_its_guards_and_never_makes_defs_vacuous(both):
    model = _exact(0)
    circuit = Circuit.full(2)
    wrong = model.run([PROMPT], circuit.without(("attn_0", "mlp_0")))[0]
    q = Query()
    run = encode_run(q, model, circuit, PROMPT, tag="c", result=wrong)
    q2 = Query()
    encode_run(q2, model, circuit, PROMPT, tag="c", result=wrong)
    assert both.solve(q2.text()).status == "sat"  # the definitions alone
    q.add(*run.guards)
    assert both.solve(q.text()).status == "unsat"


def test_text_is_deterministic_and_outputs_are_terms():
    model = _exact(1, n_heads=2)
    circuit = Circuit.full(2, 2, "head").without(("emb", "logits"))
    hashes, runs = set(), []
    for _ in range(2):
        q = Query()
        runs.append(encode_run(q, model, circuit, PROMPT, tag="x"))
        hashes.add(q.hash)
    assert len(hashes) == 1
    run: EncodedRun = runs[0]
    assert len(run.logits) == 32 and len(run.final_residual) == 16 and run.guards
    assert all(isinstance(t, Affine) for t in [*run.logits, *run.final_residual])
    assert all(v.startswith("x.") for t in run.logits for v in t.coeffs)


def test_only_what_the_final_position_reads_is_encoded():
    """emb -> logits alone needs the final norm at the last position, nothing else."""
    model = _exact(0)
    q = Query()
    run = encode_run(q, model, Circuit(2, 1, "block", frozenset({("emb", "logits")})),
                     PROMPT, tag="x")
    assert set(re.findall(r"\bx\.(\w+)\.", q.text())) == {"5f"}
    assert [g.text for g in run.guards] == ["x.g5"]  # one Boolean per position with guards
    lines = q.text().splitlines()
    assert "(assert (= x.g5 x.5f.bn.g))" in lines  # ... naming one Boolean per site
    (named,) = [line for line in lines if line.startswith("(assert (= x.5f.bn.g ")]
    assert named.count("x.5f.x") >= 16  # the final norm's signs, at least


@pytest.mark.parametrize(("n_heads", "stems"),
                         [(1, ["a1.o", "m1.u"]), (2, ["a1.o", "a1.h0k", "a1.h1v"])])
def test_weight_rows_read_the_same_in_every_query(n_heads, stems):
    """Weight rows at the final position (the output projection, the MLP's first
    layer, each head's key and value) read the same in every query: the vector a
    matrix is applied to is named over one scale and constants join after, so z3
    parses those rows once (a run's own denominators would make every row new)."""
    model = _exact(2, n_heads=n_heads)
    circuit = Circuit.full(2, n_heads, "block").without(("emb", "logits"))

    def rows(prompt, stem):
        q = Query()
        encode_run(q, model, circuit, prompt, tag="x")
        return [line for line in q.text().splitlines()
                if line.startswith(f"(assert (= x.5{stem}")]

    for stem in stems:
        first, second = rows(PROMPT, stem), rows((1, 3, 6, 10, 5, 8), stem)
        assert first and first == second, stem


# attn_0 keeps no input: a constant source, whose heads read the same values in every prompt
CONSTANT_SOURCE_EDGES = {("emb", "attn_1"), ("attn_0", "attn_1"), ("attn_1", "logits")}


@pytest.mark.parametrize(("n_heads", "edges"), [
    (1, None), (1, CONSTANT_SOURCE_EDGES), (2, CONSTANT_SOURCE_EDGES)])
def test_a_prompt_encodes_alike_on_a_fresh_model_and_after_others(n_heads, edges):
    """Sites encoded for earlier prompts (a norm of the same token's embedding, prefix
    positions, a constant node's heads and output) are replayed from the model's
    caches: the text is the one a fresh encoding writes, byte for byte, in both modes."""
    weights = random_model(3, n_heads=n_heads)
    circuit = (Circuit(2, 1, "block", frozenset(edges)) if edges
               else Circuit.full(2).without(("emb", "logits")))
    for mode in ("guided", "full"):
        fresh = ExactModel(weights.cfg, weights_of(weights))
        alone = Query()
        encode_run(alone, fresh, circuit, PROMPT, tag="x", mode=mode)
        warm = ExactModel(weights.cfg, weights_of(weights))
        for prompt in ((1, 2, 5, 10, 6, 7), (1, 3, 5, 9, 6, 7), PROMPT[:5]):
            encode_run(Query(), warm, circuit, prompt, tag="x", mode=mode)
        again = Query()
        encode_run(again, warm, circuit, PROMPT, tag="x", mode=mode)
        assert again.text() == alone.text(), mode
        kept = {key[0] for key in _consts(warm).fragments}
        assert kept, "nothing was kept to replay"
        assert ({"head", "attn_out"} <= kept) == bool(edges), kept


def test_a_constant_source_replayed_stays_exact(both):
    """The replayed heads of a constant source still pin the logits exactly."""
    model = _exact(4)
    circuit = Circuit(2, 1, "block", frozenset(CONSTANT_SOURCE_EDGES))
    encode_run(Query(), model, circuit, (1, 3, 5, 10, 6, 8), tag="c")  # fills the caches
    _assert_exact(both, model, circuit, logits=CANDIDATES)
