"""`farm train`: train a verifiable GPT to full accuracy with a margin, save a checkpoint."""

from __future__ import annotations

import argparse
import time

from farm.commands import (
    TASK_HELP,
    output_dir,
    positive_float,
    positive_int,
    refuse_to_replace_checkpoint,
    task_spec,
)
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.gpt import ATTN_VARIANTS, NORM_VARIANTS, GPTConfig
from farm.model.train import TrainConfig, train
from farm.screen.sweep import training_pass
from farm.tasks.registry import DEFAULT_TASKS, get_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        description="Train full-batch on the exhaustive domain of the tasks until every row "
                    "is decided correctly with candidate margin at least --margin, then save "
                    "model.safetensors + config.json. Deterministic for a seed; uses CUDA when "
                    "present.")
    p.add_argument("--out", required=True, type=output_dir, help="checkpoint directory to write")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), type=task_spec,
                   help=f"tasks trained jointly (one length), each {TASK_HELP} "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed: the same seed trains the same weights on CPU (default 0)")
    p.add_argument("--heads", type=positive_int, default=1,
                   help="attention heads per layer (default 1, the paper size)")
    p.add_argument("--layers", type=positive_int, default=2, help="transformer blocks (default 2)")
    p.add_argument("--width", type=positive_int, default=16,
                   help="residual width d_model, a multiple of --heads (default 16)")
    p.add_argument("--mlp", type=mlp_width, default=64,
                   help="MLP width d_mlp; 0 makes attention-only blocks, as in the Max-of-K and "
                        "induction-head models (default 64)")
    p.add_argument("--norm", choices=NORM_VARIANTS, default="signed_l1_band_norm",
                   help="normalisation: the piecewise-linear Signed L1 BandNorm (verifiable), "
                        "none, or a standard one for the surrogate path (default %(default)s)")
    p.add_argument("--attn", choices=ATTN_VARIANTS, default="sparsemax",
                   help="attention weights: sparsemax (verifiable) or softmax (default "
                        "%(default)s)")
    p.add_argument("--activation", choices=("leaky_relu", "gelu"), default="leaky_relu",
                   help="MLP activation: leaky_relu (verifiable) or gelu (default %(default)s)")
    p.add_argument("--no-attn-bias", dest="attn_bias", action="store_false",
                   help="attention projections W_q, W_k, W_v, W_o without biases (frozen at "
                        "zero, as in the Max-of-K model)")
    p.add_argument("--no-unembed-bias", dest="lm_head_bias", action="store_false",
                   help="unembedding without a bias (frozen at zero)")
    p.add_argument("--margin", type=positive_float, default=1.0,
                   help="stop once the minimum candidate margin reaches this (default 1.0)")
    p.add_argument("--max-steps", type=positive_int, default=4000,
                   help="stop after this many full-batch steps (default 4000); short of the "
                        "margin, the checkpoint is still saved and the exit status is 1")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--force", action="store_true",
                   help="replace a checkpoint already in --out (circuits, verify results and "
                        "certificates made from it then name a checkpoint that is gone)")
    p.set_defaults(func=run)


def mlp_width(text: str) -> int:
    """argparse type of d_mlp: a width, or 0 for attention-only blocks."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected 0 (attention-only) or a width")
    return value


def run(args: argparse.Namespace) -> int:
    refuse_to_replace_checkpoint(args.out, args.force)
    model_cfg = GPTConfig(n_layers=args.layers, n_heads=args.heads, d_model=args.width,
                          d_mlp=args.mlp, seq_len=get_task(args.tasks[0]).seq_len,
                          vocab_size=get_task(args.tasks[0]).vocab_size,
                          norm_variant=args.norm, attn_variant=args.attn,
                          activation=args.activation, attn_bias=args.attn_bias,
                          lm_head_bias=args.lm_head_bias)
    cfg = TrainConfig(tasks=tuple(args.tasks), seed=args.seed, max_steps=args.max_steps,
                      margin_goal=args.margin, hinge=1.5 * args.margin, device=args.device)
    start = time.perf_counter()
    screen = training_pass(model_cfg, cfg)
    result = train(model_cfg, cfg, full_pass=screen)
    seconds = time.perf_counter() - start
    ckpt = Checkpoint.from_model(result.model)
    sha = save_checkpoint(ckpt, args.out)
    reached = result.min_margin >= args.margin
    print(f"trained {result.model.num_parameters()} parameters in {result.steps} steps "
          f"({seconds:.1f} s): accuracy {result.accuracy:.0%}, "
          f"min margin {result.min_margin:.4f} "
          f"({'float32' if screen is None else 'exact, at least: the screen'})")
    print(f"checkpoint {args.out}  sha256 {sha}")
    if not reached:
        print(f"warning: margin goal {args.margin} not reached in {args.max_steps} steps")
        return 1
    return 0
