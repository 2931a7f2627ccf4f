"""Process start-up of `farm` commands: this checkout against another, alternating.

    .venv/bin/python scripts/bench_startup.py --base /path/to/other/checkout \\
        --checkpoint CKPT --circuit CIRCUIT.json [--task quote_close] [--rounds 5]

Each round runs every command once under each checkout (the same .venv; PYTHONPATH
picks the tree), so load on a shared machine hits both alike. Reports the median wall,
user and sys seconds of `/usr/bin/time` (user+sys, the CPU the process and its solver
workers spent, is the less noisy figure), and for the commands that start no worker
the import time `python -X importtime` sums.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def timed(tree: Path, argv: list[str]) -> tuple[float, float, float]:
    """(wall, user, sys) seconds of `farm argv` run from `tree`."""
    env = os.environ | {"PYTHONPATH": str(tree)}  # with cwd: `-m` imports this tree's farm
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S", sys.executable, "-m", "farm.cli",
                           *argv], cwd=tree, env=env, capture_output=True, text=True, check=True)
    wall, user, system = map(float, proc.stderr.strip().splitlines()[-1].split())
    return wall, user, system


def import_seconds(tree: Path, argv: list[str]) -> float:
    """Seconds `python -X importtime` counts for every import of `farm argv`."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "farm.cli", *argv],
                          cwd=tree, env=env, capture_output=True, text=True, check=True)
    return sum(int(line.split("|")[0].split(":")[1]) for line in proc.stderr.splitlines()
               if line.startswith("import time:") and "self [us]" not in line) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the checkout to compare with")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--circuit", required=True)
    parser.add_argument("--task", default="quote_close")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    commands = {
        "farm --help": ["--help"],
        "farm verify --help": ["verify", "--help"],
        "farm verify (whole)": ["verify", "--checkpoint", str(Path(args.checkpoint).resolve()),
                                "--circuit", str(Path(args.circuit).resolve()),
                                "--task", args.task, "--quiet"],
    }
    trees = {"base": args.base.resolve(), "this": HERE}
    times: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    imports: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for command, argv in commands.items():
            for name, tree in trees.items():
                times.setdefault((command, name), []).append(timed(tree, argv))
                if "whole" not in command:
                    imports.setdefault((command, name), []).append(import_seconds(tree, argv))
    print(f"{'command':<22}{'tree':<6}{'wall s':>8}{'user s':>8}{'sys s':>7}{'user+sys':>10}"
          f"{'imports s':>11}")
    for (command, name), rows in times.items():
        wall, user, system = (statistics.median(column) for column in zip(*rows, strict=True))
        cpu = statistics.median(u + s for _, u, s in rows)
        imported = (f"{statistics.median(imports[command, name]):>11.2f}"
                    if (command, name) in imports else f"{'-':>11}")
        print(f"{command:<22}{name:<6}{wall:>8.2f}{user:>8.2f}{system:>7.2f}{cpu:>10.2f}"
              f"{imported}")


if __name__ == "__main__":
    main()
