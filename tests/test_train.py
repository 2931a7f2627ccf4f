import pytest
import torch

from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, candidate_margins, domain_tensors, train


def test_training_reaches_full_accuracy_with_margin(trained, trained_two_heads):
    for result in (trained, trained_two_heads):
        assert result.accuracy == 1.0
        assert result.min_margin >= 1.0


def test_training_is_deterministic_for_a_seed(trained):
    again = train(GPTConfig(), TrainConfig(seed=0), progress=False)
    assert again.steps == trained.steps
    for (name, a), b in zip(trained.model.state_dict().items(),
                            again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_different_seed_gives_a_different_model(trained):
    other = train(GPTConfig(), TrainConfig(seed=1), progress=False)
    assert not torch.equal(other.model.wte.weight, trained.model.wte.weight)


@pytest.mark.parametrize("variant", [
    {"norm_variant": "layer_norm", "attn_variant": "softmax", "activation": "gelu"},
    {"norm_variant": "none"},
])
def test_other_variants_train(variant):
    result = train(GPTConfig(**variant), TrainConfig(seed=0), progress=False)
    assert result.accuracy == 1.0 and result.min_margin >= 1.0
    prompts, targets, alternates = domain_tensors(("quote_close", "bracket_type"),
                                                  torch.device("cpu"))
    with torch.no_grad():
        margins = candidate_margins(result.model(prompts), targets, alternates)
    assert margins.min().item() == pytest.approx(result.min_margin)
