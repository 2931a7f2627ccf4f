"""Benchmark: one cube query, built and asked of each solver alone.

    .venv/bin/python scripts/bench_cube.py --checkpoint runs/demo/checkpoint \
        --circuit runs/demo/circuits/quote_close/circuit.json --task quote_close

Takes the task's class cube --cls (its opener fixed, every filler symbolic, as
`farm verify --route cube` asks first), keeps only the --symbolic positions
symbolic (the others at the cube's first token), plans its functional-equivalence
query with --hints sampled prompts settling its branches (0: none, the full case
splits) and times Z3 and cvc5 on it, each alone, with a time limit of --seconds.
Prints the cube, the query's size and planning time, and each solver's answer.
"""

from __future__ import annotations

import argparse
import time

from encoders.cube import Hints, cube_query
from encoders.properties import Claim
from encoders.solvers import BACKENDS
from farm.model.checkpoint import load_checkpoint
from farm.model.circuit import load_circuit
from farm.tasks.registry import get_task
from farm.verify.conquer import HINTS, class_cubes
from farm.verify.cube import Cube
from farm.verify.evaluate import Evaluator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--circuit", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--cls", type=int, default=0, help="which class cube (default: 0)")
    p.add_argument("--symbolic", type=lambda s: {int(x) for x in s.split(",")},
                   help="positions left symbolic, comma-separated (default: every filler)")
    p.add_argument("--hints", type=int, default=HINTS,
                   help=f"prompts whose branches settle the query (default: {HINTS})")
    p.add_argument("--seconds", type=float, default=60.0, help="each solver's time limit")
    p.add_argument("--solvers", default="z3,cvc5")
    args = p.parse_args()

    ev = Evaluator(load_checkpoint(args.checkpoint), load_circuit(args.circuit),
                   get_task(args.task), progress=False)
    cube = class_cubes(ev)[args.cls]
    if args.symbolic is not None:
        cube = Cube(tuple(ts if p in args.symbolic else ts[:1]
                          for p, ts in enumerate(cube.tokens)))
    c0, c1 = ev.task.candidates
    decision = ev.task.target(cube.prompt_at(0))
    start = time.perf_counter()
    hints = Hints.of(ev.runs(ev.circuit), cube.sample(args.hints)) if args.hints else None
    query = cube_query(ev.model, ev.circuit, cube.tokens, (c0, c1),
                       Claim("decides", 1 if decision == c0 else -1), hints)
    print(f"cube {cube}: {cube.size} inputs, {len(query.text) / 1e3:.0f} KB query planned "
          f"in {time.perf_counter() - start:.2f} s with {args.hints} hints", flush=True)
    for name in args.solvers.split(","):
        solve, _ = BACKENDS[name]()
        start = time.perf_counter()
        status, _, why = solve(query.text, query.model_vars, args.seconds)
        print(f"  {name}: {status} {why} in {time.perf_counter() - start:.2f} s", flush=True)


if __name__ == "__main__":
    main()
