import pytest
import torch

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, candidate_margins, domain_tensors, train
from farm.screen.sweep import training_pass
from farm.tasks.registry import get_task


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


def test_a_domain_larger_than_a_batch_trains_by_minibatches_until_a_full_pass_clears():
    task = "quote_close:len=8,fillers=4"  # 2,048 inputs, minibatches of 256
    cfg = TrainConfig(tasks=(task,), seed=0, full_batch_max=256, batch_size=256, check_every=20,
                      max_steps=3000)
    result = train(GPTConfig(seq_len=8), cfg, progress=False)
    assert result.accuracy == 1.0 and result.min_margin >= cfg.margin_goal
    prompts, targets, alternates = domain_tensors((task,), torch.device("cpu"))
    assert len(prompts) == 2048
    with torch.no_grad():  # the stopping rule saw every input, not the last minibatch
        margins = candidate_margins(result.model(prompts), targets, alternates)
    assert margins.min().item() >= cfg.margin_goal


def test_tasks_of_two_lengths_are_not_trained_together():
    with pytest.raises(FarmError, match="one length"):
        train(GPTConfig(seq_len=8), TrainConfig(tasks=("quote_close", "bracket_type:len=8")),
              progress=False)


def test_the_screen_full_pass_stops_training_only_on_a_proved_margin():
    """On CPU `farm train` stops a minibatch run on the screen's full pass: its floor is a
    proof, so the exact margin of every input clears the goal."""
    task = "quote_close:len=8,fillers=4"
    cfg = TrainConfig(tasks=(task,), seed=0, full_batch_max=256, batch_size=256, check_every=20,
                      max_steps=3000, device="cpu")
    config = GPTConfig(seq_len=8)
    screen = training_pass(config, cfg)
    assert screen is not None and training_pass(config, TrainConfig(device="cpu")) is None
    result = train(config, cfg, progress=False, full_pass=screen)
    assert result.accuracy == 1.0 and result.min_margin >= cfg.margin_goal
    ckpt = Checkpoint.from_model(result.model)
    rows = ExactModel(ckpt.config, ckpt.weights).run(get_task(task).domain())
    spec = get_task(task)
    assert min(r.margin(spec.target(r.prompt), spec.alternate(r.prompt))
               for r in rows) >= result.min_margin
