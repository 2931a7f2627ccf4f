"""Scaling benchmarks of the Ray farm.

`farm bench scale` (`units_benchmark`): a domain of 10^5 inputs or more decided by
units on 1 and 2 unit actors against `farm verify`'s in-process screen route on the
same job, per-unit costs measured (deciding, the ledger's write, the driver's
scheduling), a projection to 10, 100 and 1000 nodes from them, and a PNG of
throughput against actors.

`scripts/bench_scale.py` (`main`): solver queries, 1 vs 2 solver actors, Ray's
per-query overhead.

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
import dataclasses
import itertools
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib
import ray

from actors.reducer import reducer_actor
from actors.solver import solver_actor
from actors.units import ledger_actor, run_units, start_unit_actors
from encoders.properties import PlannedQuery, Planner
from encoders.solvers import MODES, SolverPool
from farm.atomic import write_text_atomic
from farm.discovery.acdc import extract
from farm.model.checkpoint import Checkpoint, load_checkpoint
from farm.model.circuit import Circuit, load_circuit
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, train
from farm.tasks.registry import get_task
from farm.units.fold import DECISION_PROPERTIES, fold_units
from farm.units.ledger import Ledger, UnitShardResult
from farm.units.unit import circuit_hash, split
from farm.units.verdict import decide_unit
from farm.verify.evaluate import Evaluator
from farm.verify.jobs import ShardReport, dispatch, shards
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


# --------------------------------------------------------------------------- units

NODES = (10, 100, 1000)
ACTORS_PER_NODE = 2  # a node like this one: 2 cores, one unit actor each


def verify_seconds(ckpt: Checkpoint, circuit: Circuit, task: str) -> tuple[float, list]:
    """`farm verify --properties fe ci` in process (its screen route, start-up excluded)."""
    t0 = time.perf_counter()
    evaluator = Evaluator(ckpt, circuit, get_task(task), progress=False)
    results = [getattr(evaluator, p)() for p in DECISION_PROPERTIES]
    return time.perf_counter() - t0, results


def units_seconds(ckpt: Checkpoint, circuit: Circuit, task: str, unit_size: int,
                  actors: int) -> tuple[float, float, list, list[ShardReport]]:
    """(start-up, decide and fold) seconds of the same job by units on `actors` unit actors
    and a fresh ledger; the results and the shards' reports. Start-up (the actors' processes,
    evaluators and screens; the ledger's process) is timed apart, as farm verify's process
    start-up is not in its time either."""
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        pool, ledger = start_unit_actors(ckpt, {task: circuit}, actors), ledger_actor(root)
        ray.get([w.ping.remote() for w in pool.workers] + [ledger.state.remote()])
        started = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            run = run_units(pool, {task: circuit}, root, unit_size, ledger=ledger)
            evaluator = Evaluator(ckpt, circuit, get_task(task), progress=False)
            results = fold_units(evaluator, run.verdicts[task])
            seconds = time.perf_counter() - t0
        finally:
            pool.kill()
    return started, seconds, results, run.reports


_EVALUATOR: Evaluator | None = None  # a control process's own, built once


def _control_init(config: GPTConfig, weights: dict, circuit: Circuit, task: str) -> None:
    global _EVALUATOR
    _EVALUATOR = Evaluator(Checkpoint(config, weights), circuit, get_task(task), progress=False)
    _EVALUATOR.screen(circuit)


def _control_decide(unit: Any) -> str:
    assert _EVALUATOR is not None
    return decide_unit(_EVALUATOR, unit).digest


def control_seconds(ckpt: Checkpoint, circuit: Circuit, task: str, unit_size: int,
                    processes: int) -> float:
    """The Ray-free control: the same units on `processes` plain processes (spawned and
    warm before the clock starts): how much parallelism the machine offers right now."""
    units = split(task, circuit_hash(circuit), len(get_task(task).domain()), unit_size)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, context, _control_init,
                             (ckpt.config, dict(ckpt.weights), circuit, task)) as pool:
        list(pool.map(time.sleep, [0.2] * processes))  # every process started and warm
        t0 = time.perf_counter()
        list(pool.map(_control_decide, units))
        return time.perf_counter() - t0


def scheduling_seconds(ckpt: Checkpoint, circuit: Circuit, task: str) -> float:
    """Seconds per unit when units are one input each (`task`: a small domain): the
    driver's scheduling, the actor round trip and the ledger's write, with next to no
    deciding; 2 actors."""
    size = len(get_task(task).domain())
    _, seconds, _, _ = units_seconds(ckpt, circuit, task, 1, 2)
    return seconds / size


def ledger_seconds(ckpt: Checkpoint, circuit: Circuit, task: str, unit_size: int,
                   n: int = 200) -> tuple[float, int]:
    """Seconds per `Ledger.accept` of one unit's verdict (a part file, fsynced), and the
    verdict's size in bytes as it travels."""
    evaluator = Evaluator(ckpt, circuit, get_task(task), progress=False)
    unit = split(task, circuit_hash(circuit), len(evaluator.domain), unit_size)[0]
    verdict = decide_unit(evaluator, unit)
    size = len(json.dumps(verdict.to_json()))
    with tempfile.TemporaryDirectory() as root:
        ledger = Ledger(root)
        t0 = time.perf_counter()
        for i in range(n):  # distinct units, so each is a new part file
            v = dataclasses.replace(verdict, unit=dataclasses.replace(
                unit, start=unit.start + i, stop=unit.stop + i))
            ledger.accept(UnitShardResult(ShardReport(i, (v.unit.key,), 0.0, "a", "n"), (v,)))
        return (time.perf_counter() - t0) / n, size


def projection(per_unit: float, overhead: float, ledger: float, unit_size: int
               ) -> list[dict[str, Any]]:
    """Inputs per second on N nodes of ACTORS_PER_NODE actors: the least of the actors'
    compute rate, the ledger's write rate and the driver's scheduling rate (one unit per
    round trip as measured with 2 actors here; dispatch keeps `in_flight` shards per
    actor, so this is a floor on what a faster driver loop would give)."""
    out = []
    for nodes in NODES:
        compute = nodes * ACTORS_PER_NODE * unit_size / per_unit
        ceilings = {"compute": compute, "ledger": unit_size / ledger,
                    "scheduling": unit_size / overhead}
        bound = min(ceilings, key=ceilings.__getitem__)
        out.append({"nodes": nodes, "actors": nodes * ACTORS_PER_NODE,
                    "inputs_per_s": ceilings[bound], "bound_by": bound,
                    "ceilings": ceilings,
                    "seconds_for_4194304": 4194304 / ceilings[bound]})
    return out


def units_benchmark(ckpt: Checkpoint, circuit: Circuit, task: str, unit_size: int,
                    repeats: int, log: Callable[[str], None],
                    scheduling_task: str) -> dict[str, Any]:
    """farm verify vs units on 1 and 2 actors, alternated `repeats` times (best kept), the
    per-unit costs and the projection. Every run's results must agree. Each round also
    times the Ray-free control on 1 and 2 processes."""
    size = len(get_task(task).domain())
    times: dict[str, list[float]] = {"verify": [], "units1": [], "units2": [],
                                     "control1": [], "control2": []}
    start_up: dict[str, list[float]] = {"units1": [], "units2": []}
    inside: list[float] = []  # seconds per unit inside the actor, 1 actor
    reference = None
    for r in range(repeats):
        seconds, results = verify_seconds(ckpt, circuit, task)
        times["verify"].append(seconds)
        reference = reference or [(x.status, x.failing, x.routes) for x in results]
        log(f"  round {r + 1}: farm verify {seconds:.2f} s")
        for n in (1, 2):
            started, seconds, results, reports = units_seconds(ckpt, circuit, task,
                                                               unit_size, n)
            assert [(x.status, x.failing, x.routes) for x in results] == reference
            times[f"units{n}"].append(seconds)
            start_up[f"units{n}"].append(started)
            if n == 1:
                inside += [rep.seconds for rep in reports]
            log(f"  round {r + 1}: units on {n} actor(s) {seconds:.2f} s "
                f"(+{started:.2f} s actor start-up)")
            times[f"control{n}"].append(control_seconds(ckpt, circuit, task, unit_size, n))
            log(f"  round {r + 1}: without Ray, {n} process(es) {times[f'control{n}'][-1]:.2f} s")
    best = {k: min(v) for k, v in times.items()}
    units = -(-size // unit_size)
    per_unit = statistics.median(inside)
    overhead = scheduling_seconds(ckpt, circuit, scheduling_task)
    ledger, verdict_bytes = ledger_seconds(ckpt, circuit, task, unit_size)
    return {
        "task": task, "inputs": size, "unit_size": unit_size, "units": units,
        "seconds": times, "best_seconds": best, "actor_start_up_seconds": start_up,
        "throughput_inputs_per_s": {k: size / v for k, v in best.items()},
        "speedup_1_to_2": best["units1"] / best["units2"],
        "control_speedup_1_to_2": best["control1"] / best["control2"],
        "units1_over_verify": best["units1"] / best["verify"],
        "units2_over_verify": best["units2"] / best["verify"],
        "per_unit": {"decide_seconds": per_unit, "scheduling_seconds": overhead,
                     "ledger_accept_seconds": ledger, "verdict_bytes": verdict_bytes},
        "projection": projection(per_unit, overhead, ledger, unit_size),
        "results": reference,
    }


def plot_units(found: dict[str, Any], path: Path) -> None:
    """Measured inputs/s on 1 and 2 actors, farm verify's level, and the projection."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    rate = found["throughput_inputs_per_s"]
    ax.plot([1, 2], [rate["units1"], rate["units2"]], "o-", label="measured: units on actors")
    ax.axhline(rate["verify"], color="grey", ls="--", label="measured: farm verify (1 process)")
    proj = found["projection"]
    ax.plot([p["actors"] for p in proj], [p["inputs_per_s"] for p in proj], "s:",
            label=f"projected ({ACTORS_PER_NODE} actors per node)")
    for p in proj:
        ax.annotate(f"{p['nodes']} nodes\n({p['bound_by']})", (p["actors"], p["inputs_per_s"]),
                    textcoords="offset points", xytext=(-18, -24), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("unit actors")
    ax.set_ylabel("inputs decided / s")
    ax.set_title(f"{found['task']}: {found['inputs']:,} inputs, units of {found['unit_size']:,}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "scale", help="units on 1 and 2 actors vs farm verify, and a projection",
        description="Decide every input of a task's domain (functional equivalence and "
                    "content invariance) by farm verify's in-process screen route, and by "
                    "units on 1 and then 2 unit actors of an embedded Ray (2 CPUs), "
                    "alternating, best of --repeats; measure the per-unit costs (deciding "
                    "inside an actor, the driver and ledger per unit, one ledger write, the "
                    "verdict's bytes) and project to 10, 100 and 1000 nodes. Writes "
                    "scale_units.json and scale_units.png.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--circuit", required=True,
                   help="circuit.json (its task may be another of the same family)")
    p.add_argument("--task", default="quote_close:len=10,fillers=5",
                   help="the job's task (default: %(default)s, 156,250 inputs)")
    p.add_argument("--unit-size", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scheduling-task", default="quote_close:len=10,fillers=2",
                   help="a small domain of the same model, decided in units of one input to "
                        "measure the scheduling round trip per unit (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run_units_bench)


def run_units_bench(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    task = get_task(args.task).name
    circuit = dataclasses.replace(load_circuit(args.circuit), task=task, metadata={})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = {"start": os.getloadavg()}
    ray.init(address="local", num_cpus=2, resources={"solver": 2}, include_dashboard=False,
             log_to_driver=False)
    try:
        found = units_benchmark(ckpt, circuit, task, args.unit_size, args.repeats, print,
                                get_task(args.scheduling_task).name)
    finally:
        ray.shutdown()
    load["end"] = os.getloadavg()
    found["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average": load}
    write_text_atomic(out / "scale_units.json", json.dumps(found, indent=1) + "\n")
    plot_units(found, out / "scale_units.png")
    rate, best = found["throughput_inputs_per_s"], found["best_seconds"]
    print(f"{task}: {found['inputs']:,} inputs, {found['units']} units of {args.unit_size:,}")
    print(f"  farm verify      {best['verify']:7.2f} s  {rate['verify']:9,.0f} inputs/s")
    for n in (1, 2):
        print(f"  units, {n} actor{'s' if n > 1 else ' '} {best[f'units{n}']:7.2f} s  "
              f"{rate[f'units{n}']:9,.0f} inputs/s")
    print(f"  without Ray    {best['control1']:7.2f} s on 1 process, {best['control2']:.2f} s on "
          f"2: x{found['control_speedup_1_to_2']:.2f} (the parallelism the machine offered)")
    print(f"  actors 1 -> 2: x{found['speedup_1_to_2']:.2f}; units on 1 actor / farm verify: "
          f"{found['units1_over_verify']:.2f}, on 2: {found['units2_over_verify']:.2f}")
    pu = found["per_unit"]
    print(f"  per unit: decide {pu['decide_seconds']:.3f} s, scheduling round trip "
          f"{1e3 * pu['scheduling_seconds']:.1f} ms, ledger write "
          f"{1e3 * pu['ledger_accept_seconds']:.1f} ms, verdict {pu['verdict_bytes']} bytes")
    for p in found["projection"]:
        print(f"  {p['nodes']:>5} nodes: {p['inputs_per_s']:>13,.0f} inputs/s "
              f"(bound by {p['bound_by']}), 4,194,304 inputs in "
              f"{p['seconds_for_4194304']:.2f} s")
    print(f"wrote {out / 'scale_units.json'}, {out / 'scale_units.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory (default: train one, seed 0)")
    p.add_argument("--task", default="quote_close")
    p.add_argument("--queries", type=int, default=32, help="per query family")
    p.add_argument("--mode", choices=MODES, default="z3")
    p.add_argument("--shard-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scheduling-task", default="quote_close:len=10,fillers=2",
                   help="a small domain of the same model, decided in units of one input to "
                        "measure the scheduling round trip per unit (default: %(default)s)")
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
