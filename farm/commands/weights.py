"""`farm weights`: exchange checkpoints with the upstream tools' smt_weights.json (SPEC §5)
and with TransformerLens state dicts of attention-only models."""

from __future__ import annotations

import argparse

from farm.commands import output_dir, output_file, refuse_to_replace_checkpoint
from farm.model.checkpoint import (
    export_smt_weights,
    import_smt_weights,
    load_checkpoint,
    save_checkpoint,
)
from farm.model.gpt import ATTN_VARIANTS
from farm.model.transformer_lens import (
    export_transformer_lens,
    import_transformer_lens,
    is_state_dict_file,
)

FORMATS = ("a file named .safetensors, .pt or .pth is a TransformerLens state dict of an "
           "attention-only model without norms (embed.W_E, pos_embed.W_pos, blocks.L.attn."
           "W_Q/W_K/W_V/W_O and biases, unembed.W_U/b_U); any other is smt_weights.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights",
        description="Convert between a farm checkpoint (model.safetensors + config.json) and "
                    "the upstream tools' smt_weights.json or a TransformerLens state dict, bit "
                    "for bit: a weight that float32 cannot carry exactly is refused, never "
                    f"rounded. The file name picks the format: {FORMATS}.")
    sub = p.add_subparsers(dest="weights_command", required=True, metavar="SUBCOMMAND")
    imp = sub.add_parser("import", help="smt_weights.json or state dict -> checkpoint directory",
                         description="Read an upstream smt_weights.json or a TransformerLens "
                                     "state dict and write it as a checkpoint directory every "
                                     f"other command takes; {FORMATS}.")
    imp.add_argument("smt_weights", metavar="FILE", help="smt_weights.json, or a .safetensors/"
                     ".pt/.pth TransformerLens state dict")
    imp.add_argument("--attn", choices=ATTN_VARIANTS, default="softmax",
                     help="the attention a state dict's model computes (TransformerLens: "
                          "softmax, the default)")
    imp.add_argument("--out", required=True, type=output_dir, help="checkpoint directory")
    imp.add_argument("--force", action="store_true", help="replace a checkpoint in --out")
    imp.set_defaults(func=run_import)
    exp = sub.add_parser("export", help="checkpoint directory -> smt_weights.json or state dict",
                         description="Write a checkpoint as upstream smt_weights.json or as a "
                                     f"TransformerLens state dict; {FORMATS}.")
    exp.add_argument("--checkpoint", required=True, help="checkpoint directory")
    exp.add_argument("--out", required=True, type=output_file,
                     help="smt_weights.json, or a .safetensors/.pt/.pth state dict, to write")
    exp.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    refuse_to_replace_checkpoint(args.out, args.force)
    if is_state_dict_file(args.smt_weights):
        ckpt = import_transformer_lens(args.smt_weights, args.attn)
    else:
        ckpt = import_smt_weights(args.smt_weights)
    sha = save_checkpoint(ckpt, args.out)
    print(f"imported {ckpt.num_parameters()} parameters from {args.smt_weights}: "
          f"checkpoint {args.out}  sha256 {sha}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    if is_state_dict_file(args.out):
        export_transformer_lens(ckpt, args.out)
    else:
        export_smt_weights(ckpt, args.out)
    print(f"exported checkpoint {ckpt.sha256[:16]}… ({ckpt.num_parameters()} parameters) "
          f"to {args.out}")
    return 0
