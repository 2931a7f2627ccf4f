"""`farm bench solvers`: time Z3, cvc5 and the race on every property's queries.

Writes DIR/solver_times.csv (one row per query and solver mode), DIR/summary.json
(per task, property and mode: count, total, median, p90 and max seconds, race
wins; plus the end-to-end throughput and wall times the targets in
docs/BENCHMARKS.md speak of) and DIR/solvers.png.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from encoders.properties import FUNCTIONAL_EQUIVALENCE, PlannedQuery, Planner
from encoders.solvers import BACKENDS, SolverPool
from farm.atomic import write_text_atomic
from farm.commands import (
    TASK_HELP,
    bench_maxk,
    bench_scale,
    count_or_zero,
    output_dir,
    positive_float,
    positive_int,
    task_spec,
)
from farm.commands.verify import parse_properties, positive_fraction
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.model.exact import ExactModel
from farm.tasks.registry import DEFAULT_TASKS, get_task
from farm.verify.local import (
    DEFAULT_JOBS,
    LocalFarm,
    VerifyOptions,
    plan_property,
    resolve_circuit,
    verify_task,
)

MODES = (*BACKENDS, "race")


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        description="Benchmarks whose figures docs/BENCHMARKS.md records: `farm bench "
                    "solvers` times z3, cvc5 and the race per property and end to end; `farm "
                    "bench maxk` runs the Max-of-K certified-accuracy study; `farm bench scale` "
                    "decides a large domain by units on 1 and 2 actors against farm verify.")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = kinds.add_parser(
        "solvers", help="time z3, cvc5 and race on each property's queries",
        description="Plan every property's queries for each task, solve each query with z3 "
                    "alone, cvc5 alone and the race (one warm pool, sequential, so times are "
                    "per query; --sample N: N evenly spaced queries of each task and "
                    "property), then measure end-to-end throughput of functional "
                    "equivalence (plan + render + solve on --jobs pools) and the wall time "
                    "of all properties, always on every query. Writes solver_times.csv, "
                    "summary.json, solvers.png.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--circuit", action="append", default=[],
                   help="TASK=circuit.json (repeatable); tasks without one use the full "
                        "circuit")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), type=task_spec,
                   help=f"tasks to benchmark, each {TASK_HELP} (default: %(default)s)")
    p.add_argument("--properties", nargs="+", default=["all"], metavar="PROPERTY",
                   help="as for farm verify (default: all)")
    p.add_argument("--epsilon", default="0.01",
                   help="robustness radius, an exact decimal (default: %(default)s)")
    p.add_argument("--limit", type=count_or_zero, default=0,
                   help="use only the first N inputs of each task's domain (0: all of it)")
    p.add_argument("--sample", type=count_or_zero, default=0,
                   help="time each solver mode on N evenly spaced queries of each task and "
                        "property (0: all of them; cvc5 alone takes about 0.4 s per "
                        "functional-equivalence query of the paper-size model, so timing "
                        "all of them takes minutes)")
    p.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS,
                   help="solver pools working in parallel (default: %(default)s)")
    p.add_argument("--solver", default="race", choices=MODES,
                   help="solver mode of the end-to-end runs (default race; on a 2-core "
                        "machine the race spends one core on the loser, z3 alone does not)")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds per query per solver (default: %(default)s)")
    p.add_argument("--out", required=True, type=output_dir, help="output directory")
    p.set_defaults(func=run)
    bench_maxk.register(kinds)
    bench_scale.register(kinds)


def _circuit_specs(items: list[str], tasks: list[str]) -> dict[str, str]:
    specs = {t: "full" for t in tasks}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or task not in specs:
            raise FarmError(f"--circuit {item!r}: expected TASK=circuit.json with TASK one of "
                            f"{', '.join(tasks)}")
        specs[task] = path
    return specs


def _plan_all(planner: Planner, properties: list[str], options: VerifyOptions
              ) -> list[PlannedQuery]:
    """The first-round queries `farm verify` would ask."""
    return [q for prop in properties for q in plan_property(planner, prop, options)[0]]


def _sample(queries: list[PlannedQuery], n: int) -> list[PlannedQuery]:
    """`n` evenly spaced queries of each (task, property), in order; all of them if n is 0."""
    if n <= 0:
        return queries
    groups: dict[tuple[str, str], list[PlannedQuery]] = {}
    for q in queries:
        groups.setdefault((q.task, q.property), []).append(q)
    return [q for g in groups.values()
            for q in (g if len(g) <= n else [g[i * len(g) // n] for i in range(n)])]


def _time_mode(mode: str, queries: list[PlannedQuery], timeout: float) -> list[dict[str, Any]]:
    """Each query on one warm pool, in turn: the wall time of `solve` per query."""
    rows = []
    with SolverPool(mode, timeout) as pool:
        pool.solve("(set-logic QF_LRA)\n(check-sat)\n")  # warm: imports done, not timed
        for q in tqdm(queries, desc=f"timing {mode}", unit="q", leave=False,
                      dynamic_ncols=True):
            t0 = time.perf_counter()
            r = pool.solve(q.text, q.model_vars)
            rows.append({"task": q.task, "property": q.property, "subject": q.subject,
                         "hash": q.hash, "mode": mode, "status": r.status,
                         "winner": r.winner or "", "seconds": time.perf_counter() - t0})
    return rows


def _stats(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"n": len(ordered), "total": sum(ordered), "median": statistics.median(ordered),
            "p90": ordered[math.ceil(0.9 * (len(ordered) - 1))], "max": ordered[-1]}


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["property"], r["mode"]), []).append(r)
    out = []
    for (task, prop, mode), rs in groups.items():
        wins = Counter(r["winner"] for r in rs if r["winner"])
        out.append({"task": task, "property": prop, "mode": mode,
                    **_stats([r["seconds"] for r in rs]),
                    "statuses": dict(Counter(r["status"] for r in rs)),
                    "wins": {s: wins[s] for s in BACKENDS}})
    return out


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    props = list(dict.fromkeys(r["property"] for r in rows))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(MODES)
    for k, mode in enumerate(MODES):
        data = [[r["seconds"] * 1000 for r in rows if r["property"] == p and r["mode"] == mode]
                or [float("nan")] for p in props]
        ax.boxplot(data, positions=[i + (k - 1) * width for i in range(len(props))],
                   widths=width * 0.9, patch_artist=True, showfliers=True,
                   boxprops={"facecolor": f"C{k}", "alpha": 0.6}, flierprops={"markersize": 2})
        ax.plot([], [], color=f"C{k}", lw=6, alpha=0.6, label=mode)
    ax.set_xticks(range(len(props)), [p.replace("_", "\n") for p in props])
    ax.set_yscale("log")
    ax.set_ylabel("ms per query (warm pool)")
    ax.set_title("per-query solve time")
    ax.legend()
    wins = Counter(r["winner"] for r in rows if r["mode"] == "race" and r["winner"])
    bx.bar(list(BACKENDS), [wins[s] for s in BACKENDS], color=["C0", "C1"])
    bx.set_title("race wins")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    properties = parse_properties(args.properties)
    options = VerifyOptions(epsilon=positive_fraction(args.epsilon, "--epsilon"),
                            progress=False)
    ckpt = load_checkpoint(args.checkpoint)
    model = ExactModel(ckpt.config, ckpt.weights)
    specs = _circuit_specs(args.circuit, args.tasks)
    circuits = {t: resolve_circuit(spec, ckpt, t) for t, spec in specs.items()}

    inputs = range(args.limit) if args.limit else None
    planners = {t: Planner(model, c, get_task(t), inputs=inputs) for t, c in circuits.items()}
    planned = [q for t in args.tasks for q in _plan_all(planners[t], properties, options)]
    queries = _sample(planned, args.sample)
    rows = [r for mode in MODES for r in _time_mode(mode, queries, args.timeout)]
    print(f"timed {len(queries)} of {len(planned)} queries × {len(MODES)} modes")

    # end to end, as `farm verify` runs: warm pools, then plan + render + solve + judge
    t0 = time.perf_counter()
    with LocalFarm(args.solver, args.timeout, args.jobs) as farm:
        for pool in farm.pools:
            pool.solve("(set-logic QF_LRA)\n(check-sat)\n")
        startup = time.perf_counter() - t0
        end_to_end: dict[str, Any] = {"pool_startup_seconds": startup}
        for t, c in circuits.items():
            t1 = time.perf_counter()
            fe = verify_task(Planner(model, c, get_task(t), inputs=inputs),
                             [FUNCTIONAL_EQUIVALENCE], farm,
                             None, options)[0]
            seconds = time.perf_counter() - t1
            end_to_end[f"{t} functional_equivalence"] = {
                "queries": fe.queries, "seconds": seconds, "queries_per_second":
                fe.queries / seconds, "status": fe.status}
        farm.answers.clear()  # the FE runs above must not answer these: solve every text
        t1, solved = time.perf_counter(), farm.solved
        statuses = {}
        for t, c in circuits.items():
            for r in verify_task(Planner(model, c, get_task(t), inputs=inputs), properties,
                                 farm, None, options):
                statuses[f"{t} {r.property}"] = r.status
        end_to_end["all properties, all tasks"] = {"seconds": time.perf_counter() - t1,
                                                    "solved": farm.solved - solved,
                                                    "statuses": statuses}

    summary = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "python": platform.python_version()},
               "checkpoint_sha256": ckpt.sha256,
               "circuits": {t: {"spec": specs[t], "edges": len(c.edges)}
                            for t, c in circuits.items()},
               "epsilon": str(options.epsilon), "jobs": args.jobs,
               "end_to_end_solver": args.solver,
               "inputs_per_task": args.limit or "all",
               "timed_per_task_and_property": args.sample or "all",
               "per_mode": _summary(rows), "end_to_end": end_to_end}
    csv_text = io.StringIO()
    writer = csv.DictWriter(csv_text, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "solver_times.csv", csv_text.getvalue())
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    _plot(rows, out / "solvers.png")

    print(f"{'task':<13}{'property':<24}{'mode':<6}{'n':>5}{'median ms':>11}{'p90 ms':>9}"
          f"{'max ms':>9}{'total s':>9}")
    for s in summary["per_mode"]:
        print(f"{s['task']:<13}{s['property']:<24}{s['mode']:<6}{s['n']:>5}"
              f"{s['median'] * 1e3:>11.1f}{s['p90'] * 1e3:>9.1f}{s['max'] * 1e3:>9.1f}"
              f"{s['total']:>9.2f}")
    print(json.dumps(end_to_end, indent=1))
    print(f"wrote {out / 'solver_times.csv'}, {out / 'summary.json'}, {out / 'solvers.png'}")
    return 0
