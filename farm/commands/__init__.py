"""One module per `farm` subcommand (see `farm.cli`), and the argument types they share.

The top layer: may import everything below it (`actors`, `farm.trust`, `farm.verify`, ...);
each command is a thin call of a typed library function a notebook could make too.
"""

from __future__ import annotations

import argparse
import math
import os
from fractions import Fraction
from pathlib import Path

from farm.errors import FarmError
from farm.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from farm.tasks.registry import canonical, task_help

TASK_HELP = (f"a task spec, family or family:k=v,... (e.g. quote_close:len=10,fillers=8); "
             f"families and their defaults: {task_help()}")


def task_spec(text: str) -> str:
    """argparse type of a task: its canonical name, or the reason it is no task."""
    try:
        return canonical(text)
    except FarmError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_file(text: str) -> str:
    """argparse type of an output file: refused at once if it cannot be written, so
    that a long job never ends on a path it cannot write (its folder is made)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    _creatable(path.parent, text)
    return text


def output_dir(text: str) -> str:
    """argparse type of an output directory: an existing one or one that can be made."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    _creatable(path, text)
    return text


def _creatable(folder: Path, text: str) -> None:
    """The nearest existing ancestor of `folder` must be a writable directory."""
    probe = folder.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {probe} is not writable")


def refuse_to_replace_checkpoint(out: str, force: bool) -> None:
    """A checkpoint is what circuits, results and certificates name by hash: replacing one
    in place is asked for (--force), never done in passing."""
    held = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if (Path(out) / name).exists()]
    if held and not force:
        raise FarmError(f"{out} already holds a checkpoint ({', '.join(held)}); choose "
                        "another --out, or --force to replace it")


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a whole number of at least 1")
    return value


def count_or_zero(text: str) -> int:
    """argparse type of a count where 0 means "all of them"."""
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected 0 (all) or a positive count")
    return value


def positive_float(text: str) -> float:
    """argparse type of a finite positive quantity (seconds, a margin)."""
    value = _number(float, text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text}: expected a finite number above 0")
    return value


def nonnegative_fraction(text: str) -> Fraction:
    """argparse type of an exact radius: a decimal or n/d read as a rational, at least 0."""
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number of at least 0")
    return value


def _number(kind: type, text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
