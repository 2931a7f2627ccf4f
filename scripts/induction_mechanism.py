"""Which mechanism an induction model uses: K-composition (a previous-token head in layer 0
whose output the induction head's keys read) or Q-composition (layer 0 finding the
query token's earlier occurrence, layer 1's query reading where that was).

For each layer-0 head, over the whole domain (float32 torch forwards):
- its previous-token weight at the positions before the second copy, where the induction
  keys are (`farm induction heads` averages over every position instead);
- its weight from each stripe query to that query's token's earlier occurrence;
- the decision's accuracy with the head's result zeroed at the positions before the
  second copy (what K-composition needs), at the stripe queries (what Q-composition
  needs), and everywhere.

    .venv/bin/python scripts/induction_mechanism.py CHECKPOINT TASK
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from farm.model.checkpoint import load_checkpoint
from farm.tasks.induction import Induction
from farm.tasks.registry import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("task")
    args = parser.parse_args()
    checkpoint, task = load_checkpoint(args.checkpoint), get_task(args.task)
    assert isinstance(task, Induction), f"{task.name} is not an induction task"
    model = checkpoint.to_model().eval()
    prompts = task.domain().batch(0, len(task.domain()))
    tokens, targets = torch.from_numpy(prompts), task.targets(prompts)
    queries = list(task.stripe_queries)
    before = list(range(1, queries[0]))  # positions of the first part (keys live here)
    rows, keys = np.arange(len(prompts))[:, None], task.stripe_keys(prompts)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    pattern = cache["blocks.0.attn.hook_pattern"].double().numpy()  # [n, head, q, k]

    def accuracy(head: int, positions: list[int]) -> float:
        def zero(module: torch.nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, positions, head] = 0
            return out

        hook = model.blocks[0].attn.hook_z.register_forward_hook(zero)
        try:
            with torch.no_grad():
                decided = model(tokens)[:, -1].argmax(-1).numpy()
        finally:
            hook.remove()
        return float((decided == targets).mean())

    print(f"{task.name}: {len(prompts):,} prompts, stripe queries {queries}, keys at "
          f"{sorted(set(keys.ravel().tolist()))}")
    for head in range(checkpoint.config.n_heads):
        previous = pattern[:, head, before[1:], before[:-1]].mean()
        earlier = pattern[rows, head, queries, keys - 1].mean()
        print(f"L0H{head}: previous-token weight at positions {before[1]}..{before[-1]} "
              f"{previous:.3f}; from the stripe queries to their token's earlier occurrence "
              f"{earlier:.3f}; decision accuracy with its result zeroed at positions "
              f"{before[0]}..{before[-1]} {accuracy(head, before):.4f}, at the stripe queries "
              f"{accuracy(head, queries):.4f}, everywhere "
              f"{accuracy(head, list(range(task.seq_len))):.4f}")


if __name__ == "__main__":
    main()
