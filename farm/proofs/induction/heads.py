"""Finding the induction head and the previous-token head by their attention patterns.

ACDC (`farm.discovery`) prunes edges by their effect on the task's logits; here the
question is which head *looks* back to the token after the query's previous
occurrence, which the pattern answers directly: a head's induction score is its mean
attention from each query of the second copy to that query's induction key (one
period back, or wherever the pattern sits), its previous-token score its mean
attention from each position to the one before. Float32 forward passes over the
domain: this only chooses the head, the certificate then proves what it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farm.model.checkpoint import Checkpoint
from farm.proofs.induction.derive import HeadRef
from farm.tasks.induction import Induction


@dataclass(frozen=True)
class HeadScore:
    head: HeadRef
    induction: float  # mean weight on the induction key over the second copy's queries
    decision: float  # the same at the last position alone
    previous_token: float  # mean weight on position q − 1 over positions 1..


def score_heads(checkpoint: Checkpoint, task: Induction, batch: int = 4096) -> list[HeadScore]:
    """Every head's scores over the whole domain, best induction head first."""
    model, domain = checkpoint.to_model().eval(), task.domain()
    cfg = checkpoint.config
    seq = task.seq_len
    queries = np.asarray(task.stripe_queries)
    sums = np.zeros((cfg.n_layers, cfg.n_heads, 3))
    with torch.no_grad():
        for start in range(0, len(domain), batch):
            prompts = domain.batch(start, start + batch)
            rows, keys = np.arange(len(prompts))[:, None], task.stripe_keys(prompts)
            _, cache = model.run_with_cache(torch.from_numpy(prompts))
            for layer in range(cfg.n_layers):
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double().numpy()
                stripe = pattern[rows, :, queries, keys].transpose(0, 2, 1)  # [batch, head, q]
                previous = pattern[:, :, np.arange(1, seq), np.arange(seq - 1)]
                sums[layer, :, 0] += stripe.mean(-1).sum(0)
                sums[layer, :, 1] += stripe[:, :, -1].sum(0)
                sums[layer, :, 2] += previous.mean(-1).sum(0)
    means = sums / len(domain)
    scores = [HeadScore(HeadRef(layer, h), *map(float, means[layer, h]))
              for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    return sorted(scores, key=lambda s: -s.decision)
