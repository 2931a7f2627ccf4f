"""Benchmark: the Max-of-K brute force in one process against the farm's actors.

    .venv/bin/python scripts/bench_maxk_farm.py CHECKPOINT [--task max_of_k] [--actors 2]
        [--units 64] [--skip-local]

In one process and one run (so that load hits both alike): `brute_force` in this
process, then an embedded Ray with `--actors` CPUs, the actors started (timed apart),
and `brute_force_on_ray` over a fresh journal. Prints both times, their ratio, the
counts (which must agree), the peak memory (this process's, plus each actor's), the
per-unit cost, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from actors.maxk import brute_force_on_ray, start_actors
from farm.model.checkpoint import load_checkpoint
from farm.proofs.maxk.brute import brute_force
from farm.tasks.registry import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--task", default="max_of_k")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--skip-local", action="store_true",
                        help="only the farm run (K = 5: the one-process run is minutes)")
    args = parser.parse_args()
    ckpt, task = load_checkpoint(args.checkpoint), get_task(args.task)
    print(f"load average before: {os.getloadavg()}")
    if not args.skip_local:
        local = brute_force(ckpt.config, ckpt.weights, task)
        print(f"one process: {local.correct:,} / {local.total:,} (ties {local.ties}, wrong "
              f"{local.wrong:,}) in {local.seconds:.2f} s")
    began = time.perf_counter()
    ray.init(address="local", num_cpus=args.actors, include_dashboard=False,
             log_to_driver=False)
    pool = start_actors(ckpt, task, args.actors)
    started = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        run = brute_force_on_ray(pool, ckpt, task, Path(tmp) / "journal.jsonl", args.units,
                                 progress=False)
    farm = run.bound
    print(f"farm, {args.actors} actors: {farm.correct:,} / {farm.total:,} (ties {farm.ties}, "
          f"wrong {farm.wrong:,}) in {farm.seconds:.2f} s once started (Ray and actors "
          f"started in {started:.2f} s before); {run.units} units, "
          f"{farm.seconds * args.actors / run.units:.3f} actor-seconds per unit; peak memory "
          f"≤ {run.peak_rss / 2 ** 30:.2f} GiB (driver and actors summed)")
    if not args.skip_local:
        assert (farm.correct, farm.ties, farm.wrong) == (local.correct, local.ties, local.wrong)
        print(f"ratio farm / one process: {farm.seconds / local.seconds:.2f} (warm), "
              f"{(farm.seconds + started) / local.seconds:.2f} (with Ray's start)")
    print(f"load average after: {os.getloadavg()}")
    ray.shutdown()


if __name__ == "__main__":
    main()
