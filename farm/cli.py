"""The `farm` command line: one subcommand per module in `farm.commands`.

A command module exposes `register(subparsers)`, which adds its parser and sets
`func`, a callable taking the parsed arguments and returning an exit status.
Adding a command means adding one module and one name to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from farm.errors import FarmError

COMMANDS = ("train", "weights", "replay", "screen", "keygen", "extract", "circuit", "verify",
            "bench", "run", "certify", "check", "induction")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farm",
        description="Verification farm for transformer circuits: train a solver-friendly "
                    "transformer, extract circuits, prove circuit claims with Z3 and cvc5, "
                    "and sign the evidence.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"farm.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
