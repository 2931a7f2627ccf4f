"""Benchmark: issue 3's two targets, end to end, on a warm local farm.

    .venv/bin/python scripts/bench_properties.py CHECKPOINT CIRCUITS_DIR
        [--what fe|all] [--solver z3|cvc5|race] [--jobs 2]

CIRCUITS_DIR holds TASK/circuit.json for both tasks (as `farm extract` writes
them). `--what fe` times functional equivalence per task (exact runs, planning,
solving, judging) and prints queries per second; `--what all` times all four
properties per task as `farm verify` runs them (edge necessity with its flip
screen), and prints the wall time of both tasks together. The farm's solver
processes are started and warm before the clock starts; each task gets a new
planner, so nothing planned or exact is carried over (z3's tables of parsed
lines and prefixes are, as in one `farm verify` of several properties).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from encoders.properties import PROPERTIES, Planner
from encoders.solvers import MODES
from farm.model.checkpoint import load_checkpoint
from farm.model.circuit import load_circuit
from farm.model.exact import ExactModel
from farm.tasks.registry import DEFAULT_TASKS, get_task
from farm.verify.local import LocalFarm, VerifyOptions, flip_screen, verify_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("circuits", help="directory with TASK/circuit.json for each task")
    p.add_argument("--what", choices=("fe", "all"), default="all")
    p.add_argument("--solver", choices=MODES, default=None,
                   help="default: z3 for --what fe, race for --what all")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    model = ExactModel(ckpt.config, ckpt.weights)
    solver = args.solver or ("z3" if args.what == "fe" else "race")
    props = ([PROPERTIES["fe"]] if args.what == "fe" else list(PROPERTIES.values()))
    with LocalFarm(solver, jobs=args.jobs) as farm:
        for pool in farm.pools:  # started and warm before the clock starts
            pool.solve("(set-logic QF_LRA)\n(check-sat)\n")
        total = 0.0
        for task in DEFAULT_TASKS:
            circuit = load_circuit(Path(args.circuits) / task / "circuit.json")
            start = time.perf_counter()
            screen = flip_screen(ckpt, circuit, task) if args.what == "all" else None
            planner = Planner(model, circuit, get_task(task), likely_flips=screen)
            results = verify_task(planner, props, farm, options=VerifyOptions(progress=False))
            seconds = time.perf_counter() - start
            total += seconds
            parts = ", ".join(f"{r.property} {r.status} {r.seconds:.2f} s" for r in results)
            rate = (f" ({len(planner.prompts) / seconds:.1f} q/s)" if args.what == "fe"
                    else "")
            print(f"{task} ({len(circuit.edges)} edges): {seconds:.2f} s{rate}: {parts}")
        print(f"both tasks, {solver}, {args.jobs} pools: {total:.2f} s")


if __name__ == "__main__":
    main()
