import torch

from farm.model.gpt import GPTConfig, VerifiableGPT, sparsemax


def test_sparsemax_is_a_distribution_on_the_causal_prefix():
    torch.manual_seed(0)
    z = torch.randn(100, 6, dtype=torch.float64) * 3
    mask = torch.tril(torch.ones(6, 6, dtype=torch.bool))[torch.arange(100) % 6]
    p = sparsemax(z, mask)
    assert torch.allclose(p.sum(-1), torch.ones(100, dtype=torch.float64))
    assert (p[~mask] == 0).all() and (p >= 0).all()
    # a dominant entry takes all the mass
    assert torch.equal(sparsemax(torch.tensor([[5.0, 0.0, 0.0]])), torch.tensor([[1.0, 0, 0]]))


def test_every_activation_is_reachable_by_name():
    model = VerifiableGPT(GPTConfig(n_heads=2))
    logits, cache = model.run_with_cache(torch.tensor([[1, 2, 5, 9, 6, 7]]))
    for name in ("hook_embed", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
                 "blocks.1.mlp.hook_pre", "blocks.1.hook_resid_post",
                 "norm_final.hook_normalized", "hook_logits"):
        assert name in cache, name
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, 2, 6, 6)
    assert cache["blocks.0.attn.hook_z"].shape == (1, 6, 2, 8)
    assert torch.equal(cache["hook_logits"], logits)
    assert set(cache) == set(model.hook_names())


def test_paper_size_parameter_count():
    # ~7.7k: embeddings 608, two blocks of 3280, final norm 32, lm_head with bias 544
    assert VerifiableGPT(GPTConfig()).num_parameters() == 7744
