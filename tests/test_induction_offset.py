"""The induction task with the pattern at any offset: a head that looks a fixed distance
back fails it, a previous-token head composed with an induction head is certified on
every prompt, and `farm induction heads` tells the two heads apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.gpt import GPTConfig, VerifiableGPT
from farm.model.train import DomainStream, TrainConfig, position_margins, train
from farm.proofs.induction.check import Mismatch, check_certificate
from farm.proofs.induction.derive import HeadRef, InductionProver
from farm.proofs.induction.domain import certify_domain, check_domain
from farm.proofs.induction.heads import score_heads
from farm.proofs.induction.nfp import parse
from farm.tasks.registry import get_task

TASK = get_task("induction:vocab=5,period=3,len=7")  # 5·4·3·2 arrangements × 2 offsets
TOKENS, POSITIONS, PREVIOUS, COPIED = 0, 5, 12, 17  # residual dims
GAIN = 16.0


def _blank() -> tuple[VerifiableGPT, GPTConfig]:
    cfg = GPTConfig(seq_len=TASK.seq_len, d_model=32, d_mlp=0, norm_variant="none",
                    attn_bias=False, lm_head_bias=False)
    model = VerifiableGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for i, token in enumerate(TASK.candidates):
            model.wte.weight[token, TOKENS + i] = 1
            model.lm_head.weight[token, COPIED + i] = 10
        for p in range(cfg.seq_len):
            model.wpe.weight[p, POSITIONS + p] = 1
    return model, cfg


def _copy_tokens(attn: torch.nn.Module, into: int) -> None:
    for i in range(len(TASK.candidates)):
        attn.v.weight[TOKENS + i, TOKENS + i] = 1
        attn.o.weight[into + i, TOKENS + i] = 1


def composed() -> Checkpoint:
    """Layer 0 attends from each position to the one before and writes its token into
    PREVIOUS; layer 1 matches its query's token against that: K-composition."""
    model, cfg = _blank()
    with torch.no_grad():
        first, second = model.blocks[0].attn, model.blocks[1].attn
        for p in range(1, cfg.seq_len):
            first.k.weight[POSITIONS + p - 1, POSITIONS + p - 1] = 1
            first.q.weight[POSITIONS + p - 1, POSITIONS + p] = GAIN
        _copy_tokens(first, PREVIOUS)
        for i in range(len(TASK.candidates)):
            second.q.weight[i, TOKENS + i] = GAIN
            second.k.weight[i, PREVIOUS + i] = 1
        _copy_tokens(second, COPIED)
    return Checkpoint.from_model(model)


def positional() -> Checkpoint:
    """Layer 1 looks a fixed period − 1 = 2 back, as models of the fixed layout learn to:
    right only where the pattern ends just before its second copy."""
    model, cfg = _blank()
    with torch.no_grad():
        second = model.blocks[1].attn
        for p in range(2, cfg.seq_len):
            second.k.weight[POSITIONS + p - 2, POSITIONS + p - 2] = 1
            second.q.weight[POSITIONS + p - 2, POSITIONS + p] = GAIN
        _copy_tokens(second, COPIED)
    return Checkpoint.from_model(model)


def test_heads_name_the_previous_token_head_and_the_induction_head() -> None:
    first, second = sorted(score_heads(composed(), TASK), key=lambda s: s.head.layer)
    assert first.previous_token == pytest.approx(1.0)  # every position, BOS's next too
    assert second.induction == second.decision == pytest.approx(1.0)
    assert first.induction < 0.5 and second.previous_token < 0.5


def test_the_composed_heads_are_certified_on_every_prompt_and_re_derived(tmp_path: Path
                                                                          ) -> None:
    ckpt = composed()
    summary, _ = certify_domain(ckpt, TASK, HeadRef(1, 0), tmp_path / "certs", progress=False)
    assert summary.prompts == len(TASK.domain()) == 240
    assert summary.certified == 240 and summary.max_eps == 0
    assert check_domain(ckpt, tmp_path / "certs", progress=False).certified == 240


def test_a_head_looking_a_fixed_distance_back_fails_where_the_pattern_moved(tmp_path: Path
                                                                           ) -> None:
    summary, _ = certify_domain(positional(), TASK, HeadRef(1, 0), tmp_path / "certs",
                                progress=False)
    assert summary.certified == 120  # the offset where the fixed distance is right


def test_training_puts_its_margin_on_every_query_of_the_second_copy() -> None:
    """The stopping rule holds every trained position to the goal, not only the last."""
    cfg = TrainConfig(tasks=(TASK.name,), margin_goal=2.0, hinge=3.0, max_steps=2000)
    result = train(GPTConfig(seq_len=TASK.seq_len, d_model=32, d_mlp=0, norm_variant="none"),
                   cfg, progress=False)
    prompts, targets, rivals = DomainStream(cfg.tasks, torch.device("cpu")).rows(
        np.arange(len(TASK.domain())))
    assert targets.shape == (240, 2)  # queries 5 and 6
    assert targets[:, 0].tolist() == TASK.position_targets(prompts.numpy())[:, 0].tolist()
    with torch.no_grad():
        margins = position_margins(result.model(prompts), TASK.trained_positions, targets,
                                   rivals)
    assert result.accuracy == 1.0 and margins.min().item() >= 2.0
    assert result.min_margin == pytest.approx(margins.min().item())


def test_tasks_that_train_other_positions_are_not_trained_together() -> None:
    with pytest.raises(FarmError, match="trained positions"):
        DomainStream(("induction", "induction:vocab=7,period=3,len=8"), torch.device("cpu"))


def test_the_checker_holds_a_key_to_the_prompt_s_own_offset() -> None:
    """A key one period back (the fixed layout's) is off this prompt's stripe: refused."""
    ckpt = composed()
    index = 50  # offset 1: the pattern starts at position 1, its answer at 3
    prompt = TASK.domain()[index]
    assert TASK.decision(prompt) == (6, 3, prompt[3])
    text = InductionProver(ckpt, TASK, HeadRef(1, 0)).certificate(index).render()
    check_certificate(parse(text), ckpt, "cert")
    moved = text.replace(f"# farm query 6 3 {prompt[3]}\n", f"# farm query 6 4 {prompt[4]}\n")
    assert moved != text
    with pytest.raises(Mismatch, match="not on the induction stripe"):
        check_certificate(parse(moved), ckpt, "cert")
