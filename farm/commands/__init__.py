"""One module per `farm` subcommand (see `farm.cli`), and the argument types they share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


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
