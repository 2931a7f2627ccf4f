"""Benchmark: the certified-radius search (`farm verify --radius`) on a few inputs.

    .venv/bin/python scripts/bench_radius.py CHECKPOINT CIRCUIT TASK [--inputs 0-3,40-43]
        [--timeout 10] [--jobs 2] [--solver race]

Runs `farm.verify.local.certified_radii` in process, as `--radius` does, on the
chosen inputs of TASK's domain, and prints the wall time, the number of
queries solved and one line per input (radius, where it stopped, why).
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

from encoders.properties import Planner
from encoders.solvers import MODES
from farm.model.checkpoint import load_checkpoint
from farm.model.exact import ExactModel
from farm.tasks.registry import get_task
from farm.verify.local import LocalFarm, VerifyOptions, certified_radii, resolve_circuit


def _indices(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("circuit")
    p.add_argument("task")
    p.add_argument("--inputs", default="0-3,40-43", help="domain indices, e.g. 0-3,40-43")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per query per solver")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--solver", default="race", choices=MODES)
    args = p.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    circuit = resolve_circuit(args.circuit, ckpt, args.task)
    planner = Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task(args.task),
                      inputs=_indices(args.inputs))
    options = VerifyOptions(radius=True, radius_timeout=args.timeout, progress=False)
    with LocalFarm(args.solver, args.timeout, args.jobs) as farm:
        start = time.perf_counter()
        result = certified_radii(planner, farm, None, options)
        seconds = time.perf_counter() - start
        solved = farm.solved
    print(f"{args.task}: {len(planner.prompts)} inputs, {solved} queries solved, "
          f"{seconds:.1f} s, minimum radius {float(result.minimum):.4f}")
    for r in result.per_input:
        upper = r["not_certified_at"]
        print(f"  {r['prompt']}: certified {r['certified_float']:.4f}, not at "
              f"{'-' if upper is None else f'{float(Fraction(upper)):.4f}'} {r['note']}")


if __name__ == "__main__":
    main()
