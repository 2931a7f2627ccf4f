"""Scaling benchmark of the Ray farm: 1 vs 2 solver actors, Ray's per-query overhead.

The same planned queries (functional equivalence and content invariance of one
task's ACDC circuit) go through the real job path (`farm.verify.jobs.shards` →
`dispatch` → solver actors → reducer) with 1 and then 2 actors, alternating
so that the load other processes put on a shared machine hits both alike; the
clock runs only while shards are solved, after every actor's pool is warm.
Ray's overhead per query is the time through one actor minus the time of the
same `SolverPool.solve` called directly, on the same queries, interleaved.
A Ray-free control (LocalFarm, 1 vs 2
pools) shows how much parallelism the machine offers at that moment.
Optionally the 1 vs 2 comparison is repeated on a `ray.cluster_utils.Cluster`
with one solver slot per simulated worker node.

    python scripts/bench_scale.py --out runs/bench-scale [--mode z3] [--cluster]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import ray

from actors.reducer import reducer_actor
from actors.solver import solver_actor
from encoders.properties import PlannedQuery, Planner
from encoders.solvers import MODES, SolverPool
from farm.discovery.acdc import extract
from farm.model.checkpoint import Checkpoint, load_checkpoint
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, train
from farm.tasks.registry import get_task
from farm.verify.jobs import dispatch, shards
from farm.verify.local import LocalFarm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def plan(ckpt: Checkpoint, task: str, n: int) -> tuple[dict[str, list[PlannedQuery]], dict]:
    """`n` FE and `n` CI queries of the task's ACDC circuit, and the planning rate."""
    circuit = extract(ckpt.to_model(), task).circuit
    planner = Planner(ExactModel(ckpt.config, ckpt.weights), circuit, get_task(task))
    out, rates = {}, {}
    for name, source in (("functional_equivalence", planner.functional_equivalence()),
                         ("content_invariance", planner.content_invariance())):
        t0 = time.perf_counter()
        out[name] = list(itertools.islice(source, n))
        rates[name] = {"plan_seconds_per_query": (time.perf_counter() - t0) / n,
                       "text_kb": statistics.mean(len(q.text) for q in out[name]) / 1e3}
    return out, {"edges": len(circuit.edges), **rates}


def job_seconds(queries: list[PlannedQuery], ckpt: Checkpoint, actors: int, mode: str,
                shard_size: int) -> float:
    """Wall time of the solve phase of one job on `actors` warm solver actors."""
    with tempfile.TemporaryDirectory() as cache:
        reducer = reducer_actor(cache, ckpt.config, dict(ckpt.weights))
        solvers = [solver_actor(mode, 120) for _ in range(actors)]
        try:
            ray.get([s.ping.remote() for s in solvers])
            warm = queries[0]
            ray.get([s.solve_direct.remote(warm.text, warm.model_vars) for s in solvers])
            t0 = time.perf_counter()
            work = shards(queries, shard_size, lambda b: ray.get(reducer.expect.remote(b)))
            reports = dispatch(work, solvers, reducer, in_flight=2)
            seconds = time.perf_counter() - t0
        finally:
            for a in (*solvers, reducer):
                ray.kill(a)
    assert sum(len(r.solved) for r in reports) == len(queries)
    return seconds


def overhead(queries: list[PlannedQuery], mode: str) -> dict[str, float]:
    """Median per-query time through one actor minus direct on the same pool type.

    The actor's `solve_direct` skips the reducer, so this is Ray's task round
    trip plus moving the query text, nothing of the farm's own bookkeeping.
    """
    actor = solver_actor(mode, 120)
    direct: list[float] = []
    through: list[float] = []
    try:
        with SolverPool(mode, 120) as pool:
            ray.get(actor.solve_direct.remote(queries[0].text, queries[0].model_vars))
            pool.solve(queries[0].text, queries[0].model_vars)
            for q in queries:
                t0 = time.perf_counter()
                pool.solve(q.text, q.model_vars)
                direct.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ray.get(actor.solve_direct.remote(q.text, q.model_vars))
                through.append(time.perf_counter() - t0)
    finally:
        ray.kill(actor)
    diffs = [b - a for a, b in zip(direct, through, strict=True)]
    return {"direct_median_s": statistics.median(direct),
            "actor_median_s": statistics.median(through),
            "overhead_median_ms": 1e3 * statistics.median(diffs),
            "overhead_mean_ms": 1e3 * statistics.mean(diffs)}


def local_seconds(queries: list[PlannedQuery], mode: str, pools: int) -> float:
    """The Ray-free control: `farm.verify.local.LocalFarm` with `pools` warm pools (threads)."""
    with LocalFarm(mode, 120, jobs=pools) as farm:
        farm.solve(queries[:pools])  # start and warm every pool's solver processes
        t0 = time.perf_counter()
        farm.solve(queries)
        return time.perf_counter() - t0


def scaling(queries: dict[str, list[PlannedQuery]], ckpt: Checkpoint, mode: str,
            shard_size: int, repeats: int, log: Callable[[str], None],
            control: bool) -> dict[str, Any]:
    """Throughput with 1 and 2 actors per query family, runs alternated `repeats` times.

    With `control`, each round also times LocalFarm with 1 and 2 pools: how much
    two-way parallelism the (shared) machine offers at that moment without Ray.
    """
    out: dict[str, Any] = {}
    for name, qs in queries.items():
        times: dict[str, list[float]] = {}
        for _ in range(repeats):
            for n in (1, 2):
                for kind in ("ray", "local") if control else ("ray",):
                    seconds = (job_seconds(qs, ckpt, n, mode, shard_size) if kind == "ray"
                               else local_seconds(qs, mode, n))
                    times.setdefault(f"{kind}{n}", []).append(seconds)
                    log(f"  {name}: {kind} {n} {seconds:.2f} s")
        best = {k: min(t) for k, t in times.items()}
        out[name] = {"queries": len(qs), "seconds": times,
                     "throughput_qps": {k: len(qs) / s for k, s in best.items()},
                     "speedup": best["ray1"] / best["ray2"],
                     "efficiency": best["ray1"] / best["ray2"] / 2}
        if control:
            out[name]["local_speedup"] = best["local1"] / best["local2"]
            out[name]["ray_vs_local_1"] = best["local1"] / best["ray1"]
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    rows = [(setting, name, r) for setting, by_name in results["scaling"].items()
            for name, r in by_name.items()]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for k, actors in enumerate((1, 2)):
        ax.bar([i + (k - 0.5) * width for i in range(len(rows))],
               [r["throughput_qps"][f"ray{actors}"] for _, _, r in rows], width,
               label=f"{actors} solver actor{'s' if actors > 1 else ''}")
    for i, (_, _, r) in enumerate(rows):
        ax.text(i, max(r["throughput_qps"].values()) * 1.02, f"×{r['speedup']:.2f}",
                ha="center")
    ax.set_xticks(range(len(rows)),
                  [f"{s}\n{n.replace('_', ' ')}" for s, n, _ in rows], fontsize=8)
    ax.set_ylabel("queries / s")
    ax.set_title(f"Ray farm scaling, solver mode {results['mode']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory (default: train one, seed 0)")
    p.add_argument("--task", default="quote_close")
    p.add_argument("--queries", type=int, default=32, help="per query family")
    p.add_argument("--mode", choices=MODES, default="z3")
    p.add_argument("--shard-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cluster", action="store_true",
                   help="also on a simulated cluster: head + 2 one-slot worker nodes")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = (load_checkpoint(args.checkpoint) if args.checkpoint else
            Checkpoint.from_model(train(GPTConfig(), TrainConfig(seed=0), progress=False).model))
    queries, planning = plan(ckpt, args.task, args.queries)
    print(f"planned {args.queries} FE + {args.queries} CI queries: {planning}")
    results: dict[str, Any] = {
        "mode": args.mode, "task": args.task, "shard_size": args.shard_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg()},
        "planning": planning, "scaling": {}}
    ray.init(address="local", num_cpus=2, resources={"solver": 2}, include_dashboard=False,
             log_to_driver=False)
    try:
        results["overhead"] = {n: overhead(qs[:48], args.mode) for n, qs in queries.items()}
        print(f"ray overhead per query: {results['overhead']}")
        print("local ray, 2 CPUs, 2 solver slots:")
        results["scaling"]["local"] = scaling(queries, ckpt, args.mode, args.shard_size,
                                              args.repeats, print, control=True)
    finally:
        ray.shutdown()
    if args.cluster:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 1, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1, resources={"solver": 1})
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            cluster.wait_for_nodes()
            print("simulated cluster, head + 2 worker nodes of 1 solver slot:")
            results["scaling"]["cluster"] = scaling(queries, ckpt, args.mode, args.shard_size,
                                                    args.repeats, print, control=False)
        finally:
            ray.shutdown()
            cluster.shutdown()
    results["machine"]["load_average_at_end"] = os.getloadavg()
    (out / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "scale.png")
    for setting, by_name in results["scaling"].items():
        for name, r in by_name.items():
            q = r["throughput_qps"]
            control = (f"; without Ray 1 pool {q['local1']:.2f}, 2 pools {q['local2']:.2f} q/s "
                       f"(×{r['local_speedup']:.2f})" if "local1" in q else "")
            print(f"{setting:<8}{name:<24}1 actor {q['ray1']:6.2f} q/s, 2 actors "
                  f"{q['ray2']:6.2f} q/s: ×{r['speedup']:.2f} (efficiency "
                  f"{r['efficiency']:.0%}){control}")
    print(f"wrote {out / 'scale.json'}, {out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
