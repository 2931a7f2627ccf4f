"""Benchmark: `farm distill` (CEGIS over the motif DSL) on trained circuits, one row each.

    .venv/bin/python scripts/bench_distill.py \
        --run runs/l6/checkpoint runs/l6/quote_close/circuit.json quote_close \
        --run runs/d6/checkpoint runs/d6/bracket_depth/circuit.json bracket_depth

For each (checkpoint, circuit, task) prints a Markdown table row: the domain size, the
program found (proved on the whole domain, or not), its size in DSL nodes, candidates
checked against the circuit, counterexamples used, programs the searches enumerated,
and the wall time of the whole loop (search, screen, exact fallback, replay, and the
run of the printed source on every input). With --each-edge-removed, a row for the
circuit without each of its edges in turn: what the circuit computes once that edge
is gone. OpenBLAS runs single-threaded, as in bench_screen.py (the screen's products
are tiny).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

from farm.distill import distill
from farm.model.checkpoint import load_checkpoint
from farm.model.circuit import Circuit, load_circuit
from farm.tasks.registry import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs=3, action="append", required=True,
                        metavar=("CHECKPOINT", "CIRCUIT", "TASK"),
                        help="a checkpoint, its circuit.json (or 'full': the model) and task")
    parser.add_argument("--max-size", type=int, default=10)
    parser.add_argument("--each-edge-removed", action="store_true",
                        help="distill each circuit without each of its edges instead")
    args = parser.parse_args()
    print("| task | circuit | inputs | program | size | proved | candidates | counterexamples "
          "| enumerated | by screen / exact | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ckpt_dir, circuit_file, spec in args.run:
        task, ckpt = get_task(spec), load_checkpoint(ckpt_dir)
        circuit = (Circuit.full(ckpt.config.n_layers, ckpt.config.n_heads, "block", task.name,
                                attention_only=ckpt.config.attention_only)
                   if circuit_file == "full" else load_circuit(circuit_file))
        variants = [(f"{len(circuit.edges)} edges", circuit)]
        if args.each_edge_removed:
            variants = [(f"without {a} -> {b}", circuit.without((a, b)))
                        for a, b in circuit.ordered_edges()]
        for name, variant in variants:
            result = distill(ckpt, variant, task, args.max_size)
            final = result.checks[-1]
            print(f"| {task.name} | {name} | {len(task.domain()):,} | `{result.program}` | "
                  f"{result.program.size} | {'yes' if result.proved else 'no'} | "
                  f"{len(result.checks)} | {len(result.examples)} | {result.enumerated:,} | "
                  f"{final.by_screen:,} / {final.by_exact:,} | {result.seconds:.2f} s |",
                  flush=True)

if __name__ == "__main__":
    main()
