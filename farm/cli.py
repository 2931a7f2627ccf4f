"""The `farm` command line: one subcommand per module in `farm.commands`.

A command module exposes `register(subparsers)`, which adds its parser and sets
`func`, a callable taking the parsed arguments and returning an exit status. Command
modules import what their command needs (torch, Ray, the solvers, ...), so a process
imports only the module of the command it runs: every other command is listed by the
name and one-line help `COMMANDS` holds, which is all `farm --help` shows of it.
Adding a command means adding one module and one entry to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from farm.errors import FarmError

COMMANDS = {  # name -> the line `farm --help` lists; the rest of its help is its module's
    "train": "train a verifiable GPT on the tasks and save a checkpoint",
    "weights": "import or export smt_weights.json or a TransformerLens state dict",
    "replay": "exact-rational replay of the whole domain: pass counts and margins",
    "screen": "decide a task's inputs by sound interval evaluation, no solver",
    "keygen": "create an Ed25519 signing key pair",
    "extract": "discover a task's circuit with ACDC over a threshold sweep",
    "circuit": "inspect and export circuit.json files",
    "verify": "decide functional equivalence, edge necessity, content invariance and "
              "robustness of a circuit: sound screen, exact arithmetic, Z3 and cvc5",
    "bench": "benchmarks of the verification pipeline",
    "run": "run a verification job (YAML spec) on Ray: train, extract, verify, sign",
    "certify": "sign a certificate for a checkpoint and its verify results",
    "check": "verify a certificate's signature and re-check every predicate",
    "induction": "induction-head certificates: find the head, certify, check, plot",
    "distill": "recover a small Python program the circuit provably computes",
    "maxk": "Max-of-K certified accuracy: the brute force as resumable units on Ray",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The `farm` parser, with the full parser of the command `argv` names (its first
    word that is not an option: `farm` itself takes none but -h) and every other
    command as its name and help alone."""
    parser = argparse.ArgumentParser(
        prog="farm",
        description="Verification farm for transformer circuits: train a solver-friendly "
                    "transformer, extract circuits, prove circuit claims with Z3 and cvc5, "
                    "and sign the evidence.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = next((word for word in argv if not word.startswith("-")), None)
    for name, line in COMMANDS.items():
        if name == named:
            importlib.import_module(f"farm.commands.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=line)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FarmError as err:
        print(f"farm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was persisted stays, whole; a rerun resumes
        print(f"farm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `farm … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    except OSError as err:  # a file the command reads or writes: name it, no traceback
        if err.filename is None:
            raise  # not a file (a lost connection, say): as it is
        print(f"farm {args.command}: error: {err.strerror or err}: {err.filename}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
