"""`farm weights`: exchange checkpoints with the upstream tools' smt_weights.json (SPEC §5)."""

from __future__ import annotations

import argparse

from farm.commands import output_dir, output_file, refuse_to_replace_checkpoint
from farm.model.checkpoint import (
    export_smt_weights,
    import_smt_weights,
    load_checkpoint,
    save_checkpoint,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights",
        description="Convert between a farm checkpoint (model.safetensors + config.json) and "
                    "the upstream tools' smt_weights.json, bit for bit: a weight that JSON "
                    "cannot carry exactly as float32 is refused, never rounded.")
    sub = p.add_subparsers(dest="weights_command", required=True, metavar="SUBCOMMAND")
    imp = sub.add_parser("import", help="smt_weights.json -> checkpoint directory",
                         description="Read an upstream smt_weights.json and write it as a "
                                     "checkpoint directory every other command takes.")
    imp.add_argument("smt_weights", help="smt_weights.json")
    imp.add_argument("--out", required=True, type=output_dir, help="checkpoint directory")
    imp.add_argument("--force", action="store_true", help="replace a checkpoint in --out")
    imp.set_defaults(func=run_import)
    exp = sub.add_parser("export", help="checkpoint directory -> smt_weights.json",
                         description="Write a checkpoint as upstream smt_weights.json.")
    exp.add_argument("--checkpoint", required=True, help="checkpoint directory")
    exp.add_argument("--out", required=True, type=output_file, help="smt_weights.json to write")
    exp.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    refuse_to_replace_checkpoint(args.out, args.force)
    ckpt = import_smt_weights(args.smt_weights)
    sha = save_checkpoint(ckpt, args.out)
    print(f"imported {ckpt.num_parameters()} parameters from {args.smt_weights}: "
          f"checkpoint {args.out}  sha256 {sha}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    export_smt_weights(ckpt, args.out)
    print(f"exported checkpoint {ckpt.sha256[:16]}… ({ckpt.num_parameters()} parameters) "
          f"to {args.out}")
    return 0
