"""`farm verify`: prove the four circuit properties of one task with Z3 and cvc5."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from encoders.cache import ResultCache
from encoders.properties import PROPERTIES, ROBUSTNESS, Planner
from encoders.solvers import MODES
from farm.atomic import write_text_atomic
from farm.commands import (
    TASK_HELP,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    task_spec,
)
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.model.exact import ExactModel
from farm.model.tracing import TraceReader
from farm.tasks.registry import get_task
from farm.units.evidence import from_decisions
from farm.verify.conquer import LEAF, SplitPolicy, verify_by_cubes
from farm.verify.evaluate import ROUTES, Evaluator, evaluate_task
from farm.verify.local import (
    DEFAULT_JOBS,
    LocalFarm,
    PropertyResult,
    VerifyOptions,
    flip_screen,
    resolve_circuit,
    verify_task,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        description="Decide the four properties of SPEC §4 for every input of the task's "
                    "domain. By default (--route screen) concrete inputs are evaluated: a "
                    "sound interval screen decides most, exact rational arithmetic the rest, "
                    "and robustness is proved by the screen's bound over the ε-ball where it "
                    "can, by Z3/cvc5 queries elsewhere. With --route solver every input, pair "
                    "and edge is one exact QF_LRA query. Every SAT model and every "
                    "counterexample is replayed in exact arithmetic. A property is VERIFIED "
                    "only if every instance is proved; FAILED with replayed counterexamples; "
                    "UNKNOWN if any query timed out; ERROR on a solver disagreement or a model "
                    "that does not replay. The table counts the instances each route decided. "
                    "Exit status 0 only if every requested property is VERIFIED.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--circuit", required=True,
                   help="circuit.json (farm extract), or 'full' for every edge")
    p.add_argument("--task", required=True, type=task_spec, help=TASK_HELP)
    p.add_argument("--properties", nargs="+", default=["all"], metavar="PROPERTY",
                   help=f"some of {', '.join(PROPERTIES)} (or their full names), separated by "
                        "spaces or commas, or all (default: all)")
    p.add_argument("--route", choices=("screen", "solver", "cube"), default="screen",
                   help="screen: decide concrete inputs by evaluation (the sound interval "
                        "screen, exact arithmetic where it is not decisive) and robustness by "
                        "the screen's bound over the ε-ball, asking the solvers only what is "
                        "left; solver: one SMT query per input, pair and edge, as certificates "
                        "record them; cube: functional equivalence and content invariance "
                        "proved per cube of inputs (the opener fixed, fillers symbolic) by one "
                        "exact query each (branches that sampled prompts of the cube agree on "
                        "settled in advance, each under a guard the solver checks), a cube "
                        "that is not proved split along a filler "
                        "position down to cubes of --cube-leaf inputs, which the screen "
                        "decides; the other properties as the screen route (default: "
                        "%(default)s)")
    p.add_argument("--cube-quick", type=positive_float, default=10.0, metavar="SECONDS",
                   help="--route cube: time limit of a cube query; a cube not proved within "
                        "it is split, and cubes as large are split without asking "
                        "(default: %(default)s)")
    p.add_argument("--cube-leaf", type=positive_int, default=LEAF, metavar="N",
                   help="--route cube: cubes of at most N inputs go to the screen "
                        "(default: %(default)s)")
    p.add_argument("--solver-inputs", type=positive_int, metavar="N",
                   help="--route screen: ask the solvers about at most N of the robustness "
                        "inputs the screen's ball bound leaves (the first in domain order); "
                        "the rest are counted UNKNOWN (default: all of them)")
    p.add_argument("--solver", choices=MODES, default="race",
                   help="race: first definitive answer wins; both: run both and cross-check "
                        "(default: %(default)s)")
    p.add_argument("--epsilon", default="0.01",
                   help="robustness radius in the ∞-norm on the final residual, read as an "
                        "exact decimal (default: %(default)s)")
    p.add_argument("--pairwise", action="store_true",
                   help="--route solver: content invariance over every same-class pair, "
                        "instead of every member against the decision of its class's anchor "
                        "(the same queries as functional equivalence wherever the anchor "
                        "decides correctly); the screen route decides every member exactly, "
                        "which settles every pair")
    p.add_argument("--radius", action="store_true",
                   help="also find each input's largest certified robustness radius: "
                        "from --epsilon, double while the input is robust, then bisect "
                        "to --radius-precision (large balls cost the most to decide; "
                        "where the solvers cannot decide, to 1/8 of the radius found)")
    p.add_argument("--radius-max", default="1", help="search upper bound (default: 1)")
    p.add_argument("--radius-precision", default="0.001",
                   help="absolute precision of the bisection (default: %(default)s)")
    p.add_argument("--radius-timeout", type=positive_float, default=10.0,
                   help="seconds per query per solver in the radius search (default: "
                        "%(default)s). Near its radius an input's queries are the hardest to "
                        "decide; an unknown ends the search above, and the input's note "
                        "says the radius may be larger")
    p.add_argument("--radius-solver", choices=MODES, default="cvc5",
                   help="solver mode of the radius search, on pools of its own if it is "
                        "not --solver (default: %(default)s: the search's large balls are "
                        "cvc5's; on 2 cores a race gives half the CPU to a z3 that times "
                        "out, and 8 quote inputs certified smaller radii in 25%% more time)")
    p.add_argument("--encoding", choices=("guided", "full"), default="guided",
                   help="solver queries' encoding: guided: traced branches plus guards; "
                        "full: every case split (default: %(default)s)")
    p.add_argument("--trace", metavar="PATH",
                   help="branch trace of this circuit on the task's domain (Parquet, as farm "
                        "run writes to OUT/traces/TASK.parquet): guided queries take the "
                        "circuit's branches from it instead of the planner's own exact runs. "
                        "A trace of another checkpoint, another circuit or other prompts is "
                        "refused (one with no circuit recorded is of the full model); a wrong "
                        "branch record only fails its guard (ERROR, or for the final norm in "
                        "robustness a fully encoded re-ask), so it never proves a claim")
    p.add_argument("--cache", type=output_dir,
                   help="Parquet results cache directory (reruns cost nothing)")
    p.add_argument("--out", type=output_file, help="write the results as JSON here")
    p.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS,
                   help="solver pools working in parallel (default: %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds per query per solver; a timeout is UNKNOWN (default: "
                        "%(default)s). Solvers enforce it themselves, but not while parsing: "
                        "one still busy max(1 s, 10%%) past it is killed and restarted, so a "
                        "limit far below a query's parse time costs that second per query")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def positive_fraction(text: str, option: str) -> Fraction:
    """An exact positive rational from a decimal or n/d string."""
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise FarmError(f"{option} {text!r} is not a number") from None
    if value <= 0:
        raise FarmError(f"{option} must be positive, got {text}")
    return value


def parse_properties(words: Sequence[str]) -> list[str]:
    """Property names, short (fe) or full (functional_equivalence) as in a job spec, the
    words of the command line split again at commas; `all` alone for every property."""
    names = [s.strip() for w in words for s in w.split(",") if s.strip()]
    if names == ["all"]:
        return list(PROPERTIES.values())
    known = PROPERTIES | {full: full for full in PROPERTIES.values()}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise FarmError(f"unknown property {', '.join(unknown) or ' '.join(words)!r}; choose "
                        f"from {', '.join(PROPERTIES)} or all")
    return list(dict.fromkeys(known[n] for n in names))


def format_table(results: list[PropertyResult], solver_time: bool = False) -> str:
    """One row per (task, property), for people. The last column is the property's wall
    time, or with `solver_time` its solvers' summed time (a job interleaves properties
    across actors, so it has no wall time per property)."""
    width = max([13, *(len(r.task) + 1 for r in results)])  # a family's name can be long
    head = (f"{'task':<{width}}{'property':<24}{'status':<10}{'queries':>8}{'unsat':>7}{'sat':>5}"
            f"{'unknown':>8}{'cached':>7}{'z3 wins':>8}{'cvc5 wins':>10}"
            + "".join(f"{route:>11}" for route in ROUTES)
            + f"{'solver s' if solver_time else 'time s':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        seconds = sum(r.solver_seconds.values()) if solver_time else r.seconds
        lines.append(f"{r.task:<{width}}{r.property:<24}{r.status:<10}{r.queries:>8}{r.unsat:>7}"
                     f"{r.sat:>5}{r.unknown:>8}{r.cached:>7}{r.wins['z3']:>8}"
                     f"{r.wins['cvc5']:>10}"
                     + "".join(f"{r.routes.get(route, 0):>11,}" for route in ROUTES)
                     + f"{seconds:>9.2f}")
    return "\n".join(lines)


def routes_line(results: Sequence[PropertyResult]) -> str:
    """How the instances were decided, over all results: by the screen, exactly, by solvers."""
    total = Counter()
    for r in results:
        total.update(r.routes)
    return "decided by " + (", ".join(f"{route} {total[route]:,}" for route in ROUTES
                                      if total[route]) or "nothing")


def format_details(results: list[PropertyResult], limit: int = 5) -> str:
    """Counterexamples, problems and radii, a few of each."""
    lines = []
    for r in results:
        for what, items in (("counterexample", r.counterexamples), ("problem", r.problems)):
            for item in items[:limit]:
                extra = {k: v for k, v in item.items()
                         if k in ("reason", "exact_margins", "exact_margin_float", "epsilon")}
                lines.append(f"  {r.task} {r.property} {what}: {item['subject']} {extra}")
            if len(items) > limit:
                lines.append(f"  … {len(items) - limit} more {what}s in --out")
        if r.radius is not None:
            lines.append(f"  {r.task} certified radius: min {float(r.radius.minimum):.6g} over "
                         f"{len(r.radius.per_input)} inputs (bisection on [0, "
                         f"{r.radius.upper}] to ±{r.radius.precision} absolute)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    task = get_task(args.task)
    properties = parse_properties(args.properties)
    options = VerifyOptions(
        epsilon=positive_fraction(args.epsilon, "--epsilon"), pairwise=args.pairwise,
        radius=args.radius, radius_upper=positive_fraction(args.radius_max, "--radius-max"),
        radius_precision=positive_fraction(args.radius_precision, "--radius-precision"),
        radius_timeout=args.radius_timeout, radius_solver=args.radius_solver,
        progress=not args.quiet, solver_inputs=args.solver_inputs)
    ckpt = load_checkpoint(args.checkpoint)
    circuit = resolve_circuit(args.circuit, ckpt, task.name)
    traces = TraceReader(args.trace, ckpt.sha256) if args.trace else None
    cache = ResultCache(args.cache) if args.cache else None
    for line in cache.warnings if cache else ():
        print(f"farm verify: warning: {line}", file=sys.stderr)
    with contextlib.ExitStack() as opened:
        solvers = functools.cache(lambda: opened.enter_context(
            LocalFarm(args.solver, args.timeout, args.jobs)))
        if args.route == "screen":
            evaluator = Evaluator(ckpt, circuit, task, progress=options.progress,
                                  epsilon=options.epsilon if ROBUSTNESS in properties else None)
            results = evaluate_task(ckpt, circuit, task, properties, solvers, cache, options,
                                    encoding=args.encoding, traces=traces, evaluator=evaluator)
        elif args.route == "cube":
            results = verify_by_cubes(ckpt, circuit, task, properties, solvers, cache, options,
                                      SplitPolicy(args.cube_quick, args.cube_leaf),
                                      args.encoding)
        else:
            planner = Planner(ExactModel(ckpt.config, ckpt.weights), circuit, task,
                              args.encoding, traces=traces,
                              likely_flips=flip_screen(ckpt, circuit, task.name))
            results = verify_task(planner, properties, solvers(), cache, options)
    wall = time.perf_counter() - start
    edges = len(circuit.edges)
    print(f"{task.name}: circuit {args.circuit} ({edges} edge{'s' * (edges != 1)}), checkpoint "
          f"{ckpt.sha256[:16]}…, solver {args.solver}, {args.encoding} encoding"
          + (f", epsilon {options.epsilon}" if ROBUSTNESS in properties else "")
          + (f", branches from {args.trace}" if args.trace else ""))
    print(format_table(results))
    if details := format_details(results):
        print(details)
    print(f"{routes_line(results)}; {sum(r.queries for r in results)} queries in {wall:.2f} s")
    if args.out:
        report = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": ckpt.sha256,
                  "circuit": circuit.to_json_dict(), "task": task.name, "solver": args.solver,
                  "timeout": args.timeout, "route": args.route, "encoding": args.encoding,
                  "trace": args.trace,
                  "epsilon": str(options.epsilon), "wall_seconds": wall,
                  "results": [r.to_json() for r in results]}
        # certified by units; robustness only where the solvers decide what the ball bound
        # leaves (two candidates): the exact readout of other tasks is not in a unit's record
        if args.route == "screen" and (ROBUSTNESS not in properties
                                       or len(task.candidates) == 2):
            report["units"] = [from_decisions(evaluator).to_json()]
        write_text_atomic(Path(args.out), json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0 if all(r.status == "VERIFIED" for r in results) else 1
