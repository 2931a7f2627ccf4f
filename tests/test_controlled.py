"""The controlled forward is the model when nothing is removed and farm.model.exact otherwise."""

import copy

import pytest
import torch

from farm.errors import FarmError
from farm.model.circuit import Circuit
from farm.model.controlled import FlipScreen, controlled_forward, domain_means
from farm.model.exact import ExactModel
from farm.model.train import domain_tensors
from farm.tasks.registry import get_task
from tests.conftest import random_model, weights_of

TOKENS = domain_tensors(("quote_close", "bracket_type"), torch.device("cpu"))[0]
BLOCK = Circuit.full(2)
HEAD = Circuit.full(2, 2, "head")


@pytest.mark.parametrize(("heads", "granularity", "d_mlp"),
                         [(1, "block", 64), (2, "block", 64), (2, "head", 64), (2, "head", 0)])
def test_full_circuit_is_the_model_bit_for_bit(heads, granularity, d_mlp):
    model = random_model(seed=heads, n_heads=heads, d_mlp=d_mlp)
    full = Circuit.full(2, heads, granularity, attention_only=d_mlp == 0)
    with torch.no_grad():
        out = controlled_forward(model, full, TOKENS)
        logits, cache = model.run_with_cache(TOKENS)
    assert torch.equal(out.logits, logits)
    assert torch.equal(out.final_residual, cache["blocks.1.hook_resid_post"])


def _exact_vs_controlled(model, circuit):
    rows = ExactModel(model.cfg, weights_of(model)).run(TOKENS.tolist(), circuit)
    with torch.no_grad():
        out = controlled_forward(copy.deepcopy(model).double(), circuit, TOKENS)
    exact_logits = torch.tensor([[float(v) for v in r.logits] for r in rows], dtype=torch.float64)
    exact_resid = torch.tensor([[float(v) for v in r.final_residual] for r in rows],
                               dtype=torch.float64)
    return ((out.logits[:, -1] - exact_logits).abs().max().item(),
            (out.final_residual[:, -1] - exact_resid).abs().max().item())


PARTIAL_BLOCK = {
    "upstream quote shape": {("emb", "attn_0"), ("attn_0", "mlp_0"), ("mlp_0", "logits")},
    "attn_1 without inputs": {("emb", "attn_0"), ("attn_0", "mlp_0"), ("attn_1", "logits"),
                              ("mlp_0", "logits"), ("emb", "mlp_1"), ("mlp_1", "logits")},
    "all but emb->logits": set(BLOCK.edges) - {("emb", "logits")},
}
PARTIAL_HEAD = {
    "one head of layer 0 read": {("emb", "attn_0_h_0"), ("emb", "attn_0_h_1"),
                                 ("attn_0_h_1", "mlp_0"), ("mlp_0", "attn_1_h_0"),
                                 ("attn_1_h_0", "logits"), ("emb", "logits")},
    "all but the heads of layer 1 into logits": set(HEAD.edges) - {
        ("attn_1_h_0", "logits"), ("attn_1_h_1", "logits")},
}


ATTN_ONLY_HEAD = Circuit.full(2, 2, "head", attention_only=True)
PARTIAL_ATTN_ONLY = {
    "previous-token head into an induction head": {
        ("emb", "attn_0_h_0"), ("attn_0_h_0", "attn_1_h_1"), ("emb", "attn_1_h_1"),
        ("attn_1_h_1", "logits"), ("emb", "logits")},
    "all but emb->logits": set(ATTN_ONLY_HEAD.edges) - {("emb", "logits")},
    "a layer-1 head without inputs": {("attn_1_h_0", "logits"), ("emb", "attn_0_h_1"),
                                      ("attn_0_h_1", "logits")},
}


@pytest.mark.parametrize("name", PARTIAL_BLOCK)
def test_partial_circuits_match_exact_on_every_row(trained, name):
    circuit = Circuit(2, 1, "block", frozenset(PARTIAL_BLOCK[name]))
    assert max(_exact_vs_controlled(trained.model, circuit)) < 1e-9


@pytest.mark.parametrize("name", PARTIAL_HEAD)
def test_head_circuits_match_exact_on_every_row(name):
    circuit = Circuit(2, 2, "head", frozenset(PARTIAL_HEAD[name]))
    assert max(_exact_vs_controlled(random_model(seed=3, n_heads=2), circuit)) < 1e-9


@pytest.mark.parametrize("name", PARTIAL_ATTN_ONLY)
def test_attention_only_circuits_match_exact_on_every_row(name):
    circuit = Circuit(2, 2, "head", frozenset(PARTIAL_ATTN_ONLY[name]), attention_only=True)
    model = random_model(seed=7, n_heads=2, d_mlp=0)
    assert max(_exact_vs_controlled(model, circuit)) < 1e-9


def test_mean_ablation_substitutes_the_domain_mean_per_position():
    model = random_model(seed=4, n_heads=2).double()
    means = domain_means(model, TOKENS)
    with torch.no_grad():
        assert torch.equal(controlled_forward(model, HEAD, TOKENS, means).logits,
                           controlled_forward(model, HEAD, TOKENS).logits)
        full = controlled_forward(model, HEAD, TOKENS)
        cut = controlled_forward(model, HEAD.without(("emb", "logits")), TOKENS, means)
    emb = full.outputs.vectors["emb"]
    expected = full.final_residual - emb + emb.mean(0)
    assert torch.allclose(cut.final_residual, expected, atol=1e-12)


def test_mean_ablated_heads_still_pass_through_w_o():
    model = random_model(seed=5, n_heads=2).double()
    means = domain_means(model, TOKENS)
    cut = HEAD.without(("attn_1_h_1", "logits"))
    with torch.no_grad():
        full = controlled_forward(model, HEAD, TOKENS)
        out = controlled_forward(model, cut, TOKENS, means)
    o = model.blocks[1].attn.o
    head0, head1 = full.outputs.heads[1, 0], full.outputs.heads[1, 1]
    delta = (o(torch.cat([head0, head1.mean(0).expand_as(head1)], -1))
             - o(torch.cat([head0, head1], -1)))
    assert torch.allclose(out.final_residual, full.final_residual + delta, atol=1e-12)


def test_mismatched_circuit_is_refused():
    model = random_model(n_heads=2)
    with pytest.raises(FarmError, match=r"names node\(s\) attn_2, mlp_2, which the model "
                                        r"\(2 layers, 2 heads per layer\) does not have"):
        controlled_forward(model, Circuit.full(3), TOKENS)
    with pytest.raises(FarmError, match=r"names node\(s\) attn_0_h_2, attn_0_h_3, attn_1_h_2, "
                                        "attn_1_h_3, which"):
        controlled_forward(model, Circuit.full(2, 4, "head"), TOKENS)
    with pytest.raises(FarmError, match="circuit has 1 layers, the model has 2"):
        controlled_forward(model, Circuit.full(1), TOKENS)
    with pytest.raises(FarmError, match="circuit has 1 heads per layer, the model has 2"):
        controlled_forward(model, Circuit.full(2, 1, "head"), TOKENS)


def test_flip_screen_names_the_rows_whose_exact_decision_changes(trained):
    """On the trained model the float64 screen and exact arithmetic agree on which
    inputs an ablation flips; the flips come clearest first."""
    task = get_task("bracket_type")
    full = Circuit.full(2)
    exact = ExactModel(trained.model.cfg, weights_of(trained.model))
    c0, c1 = task.candidates
    decisions = [r.logits[c0] > r.logits[c1] for r in exact.run(task.domain(), full)]
    screen = FlipScreen(trained.model, full, task.domain(), task.candidates)
    assert next(trained.model.parameters()).dtype == torch.float32  # the model is not touched
    for edge in (("emb", "attn_0"), ("emb", "mlp_0")):  # flip 64 and 2 of its 128 rows
        ablated = full.without(edge)
        rows = exact.run(task.domain(), ablated)
        flipped = {i for i, r in enumerate(rows) if (r.logits[c0] > r.logits[c1]) != decisions[i]}
        likely = screen(ablated)
        assert flipped and set(likely) == flipped
        margins = [abs(rows[i].logits[c0] - rows[i].logits[c1]) for i in likely]
        assert margins[0] == max(margins)
