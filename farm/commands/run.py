"""`farm run job.yaml`: the whole pipeline on Ray, train → extract → verify → certificate.

Without RAY_ADDRESS it starts an embedded Ray instance sized to this machine
(every core a `solver` slot); under `ray job submit` it joins that cluster. The
driver plans queries (encoders.properties) and dispatches shards; solver actors
answer them; the reducer persists, judges and folds (farm.verify.local). First
robustness queries judged inconclusive get a second, fully encoded round, as
in `farm verify`. Guided queries take their branches from the exact traces the
trainer actor recorded (OUT/traces/TASK.parquet), as `farm verify --trace` does.
Rerunning a job with the same `out` resumes: the checkpoint and circuits it
made for the same spec are reused (every query hash depends on them), and
answered queries are read back, not solved. The result is sealed in a signed
certificate (farm.trust.certificate), Lean-checked on a node offering the `lean`
resource.

A job with a family task (any task but the default two) takes the unit path instead
(`units_job`): the domain is cut into units, decided on unit actors by the sound
screen, persisted per unit in OUT/units and folded here, and the certificate is one
by units (`farm.trust.units`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import AuthenticationError
from tqdm import tqdm

from actors.lean import remote_lean_check
from actors.reducer import Group, reducer_actor
from actors.solver import solver_actor
from actors.trainer import trainer_actor
from actors.units import Robustness, UnitRun, run_units, start_unit_actors
from encoders.properties import EDGE_NECESSITY, ROBUSTNESS, Finding, PlannedQuery, Planner
from farm.atomic import write_text_atomic
from farm.commands import output_dir, positive_int
from farm.commands.verify import format_details, format_table, positive_fraction
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit, load_circuit, save_circuit
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.tracing import TraceReader, write_traces
from farm.model.train import TrainConfig
from farm.tasks.registry import get_task
from farm.trust.certificate import issue, load_verify_results
from farm.trust.lean_export import lake_path
from farm.trust.signing import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    generate_keypair,
    load_private_key,
)
from farm.trust.units import has_units, issue_units, load_unit_results
from farm.units.evidence import TaskEvidence
from farm.units.evidence import evidence as units_evidence
from farm.units.fold import UNIT_PROPERTIES, fold_units
from farm.verify.evaluate import Evaluator
from farm.verify.jobs import (
    JobSpec,
    JobStats,
    RayFarm,
    ShardReport,
    by_units,
    dispatch,
    job_stats,
    load_job_spec,
    shards,
    stats_lines,
)
from farm.verify.local import (
    PropertyResult,
    VerifyOptions,
    certified_radii,
    first_round_count,
    flip_screen,
    plan_property,
    resolve_circuit,
)

TRAINED_FOR = "trained_for.json"  # in OUT: the training spec of OUT/checkpoint, and its hash


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        description="Run the job spec end to end on Ray: train or load the checkpoint, extract "
                    "or load one circuit per task, plan every property query, solve them on "
                    "solver actors (custom resource 'solver') with bounded in-flight shards, "
                    "persist each answer as it arrives (OUT/cache), judge and fold. Guided "
                    "queries take their branches from the exact trace of each task's circuit, "
                    "recorded by the trainer actor to OUT/traces/TASK.parquet. Writes "
                    "OUT/result.json and the signed OUT/certificate.dsse.json (key: the spec's "
                    "signing_key, or OUT/keys/farm_ed25519.pem made on first use). Without "
                    "RAY_ADDRESS an embedded Ray instance is started (offering the 'lean' "
                    "resource when lake is on PATH); rerunning resumes: it reuses the checkpoint "
                    "and circuits it made for the same spec, and every answer already "
                    "persisted. A job with a family task (e.g. quote_close:len=8) is decided by "
                    "units on actors instead (unit_size inputs each, robustness by the "
                    "screen's ball bound and the actor's solvers for the rest, persisted "
                    "per unit in OUT/units) and certified by units. Exit "
                    "status 0 only if "
                    "every property is VERIFIED.")
    p.add_argument("job", help="job spec (YAML or JSON), e.g. job.yaml")
    p.add_argument("--out", type=output_dir,
                   help="output directory (overrides the spec's 'out')")
    p.add_argument("--epsilon", metavar="EPS",
                   help="robustness radius in the ∞-norm on the final residual, an exact "
                        "decimal or n/d (overrides the spec's 'epsilon', default 0.01)")
    p.add_argument("--num-cpus", type=positive_int,
                   help="embedded Ray only: CPU and solver slots (default: this machine's cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def connect(num_cpus: int | None = None) -> None:
    """Join RAY_ADDRESS's cluster, or start an embedded instance with one solver slot per core."""
    if ray.is_initialized():
        return
    if address := os.environ.get("RAY_ADDRESS"):
        try:
            ray.init(log_to_driver=False)
        except (AuthenticationError, ConnectionError) as err:
            if not refused_authentication(err):
                raise
            raise FarmError(
                f"the Ray cluster at {address} refused this client: it uses token "
                "authentication, so set RAY_AUTH_MODE=token and give this machine the "
                "cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)"
            ) from None
        return
    cpus = num_cpus or os.cpu_count() or 1
    lean = {"lean": 1} if lake_path() else {}
    ray.init(address="local", num_cpus=cpus, resources={"solver": cpus, **lean},
             include_dashboard=False, log_to_driver=False)


def refused_authentication(err: BaseException | None) -> bool:
    """Whether Ray's error, or one it was raised from, is the cluster refusing our token
    (Ray wraps the GCS client's AuthenticationError into another error's text)."""
    while err is not None:
        if isinstance(err, AuthenticationError) or "AuthenticationError" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


@dataclass
class JobResult:
    spec: JobSpec
    checkpoint: Checkpoint
    circuits: dict[str, Circuit]
    results: list[PropertyResult]
    stats: JobStats
    seconds: float
    units: list[TaskEvidence] | None = None  # family tasks: decided by units
    unit_run: UnitRun | None = None

    def to_json(self) -> dict[str, Any]:
        return {"job": asdict(self.spec), "checkpoint_sha256": self.checkpoint.sha256,
                "circuits": {t: c.to_json_dict() for t, c in self.circuits.items()},
                "results": [r.to_json() for r in self.results], "stats": self.stats.to_json(),
                "wall_seconds": self.seconds} | (
            {} if self.units is None else {"units": [e.to_json() for e in self.units]})

    def units_line(self) -> str:
        """Family tasks: how many inputs and units, where and how fast."""
        assert self.unit_run is not None and self.units is not None
        inputs = sum(e.size for e in self.units)
        units = sum(len(e.verdicts) for e in self.units)
        s = self.stats.seconds
        line = (f"{inputs:,} inputs in {units} units decided on {self.spec.solver_actors} unit "
                f"actor(s) in {s:.1f} s ({inputs / s if s else 0:,.0f} inputs/s), "
                f"{self.unit_run.reused} units read back from disk")
        if len(self.stats.solved_by_node) > 1:
            line += "; units per node: " + ", ".join(
                f"{node} {n}" for node, n in sorted(self.stats.solved_by_node.items()))
        return line


def trace_path(out: Path, task: str) -> Path:
    """Where a job keeps the exact branch trace of a task's circuit: planned from, auditable."""
    return out / "traces" / f"{task}.parquet"


Given = tuple[Checkpoint | None, dict[str, Circuit]]  # what the spec names, loaded


def given_inputs(spec: JobSpec) -> Given:
    """The files the spec names (checkpoint, circuits, signing key) read and checked before
    Ray starts or OUT is made, so that a missing or broken one is refused with nothing
    left behind. Circuits named for a checkpoint still to be trained are read now and
    fitted to it once it is trained."""
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise FarmError(f"out {out} exists and is not a directory")
    if spec.signing_key:
        load_private_key(spec.signing_key)
    ckpt = None if spec.checkpoint == "train" else load_checkpoint(spec.checkpoint)
    circuits = {}
    if isinstance(spec.circuits, dict):
        for task in spec.tasks:
            path = spec.circuits[task]
            if ckpt is not None:
                circuits[task] = resolve_circuit(path, ckpt, task)
            elif path != "full":
                load_circuit(path)
    return ckpt, circuits


def prepare(spec: JobSpec, out: Path, log: Any, given: Given
            ) -> tuple[Checkpoint, dict[str, Circuit]]:
    """Checkpoint, circuits and exact traces, made on the trainer actor where the spec
    does not name them (`given`).

    A rerun of the job reuses what an earlier run trained and extracted for the
    same spec: resuming needs the same weights (every query hash depends on
    them), and training again elsewhere, on another CPU or a GPU, need not
    reproduce them bit for bit.
    """
    trainer = None

    def actor() -> Any:
        nonlocal trainer
        trainer = trainer or trainer_actor()
        return trainer

    ckpt = given[0] if given[0] is not None else trained(spec, out, actor, log)
    circuits = dict(given[1])
    for task in spec.tasks:
        if spec.circuits == "extract":
            circuits[task] = extracted(ckpt, task, out, actor, log)
        elif task not in circuits:
            circuits[task] = resolve_circuit(spec.circuits[task], ckpt, task)
        log(f"{task}: circuit with {len(circuits[task].edges)} edges")
    if by_units(spec.tasks):  # decided by the screen on the unit actors: no solver plans
        if trainer is not None:
            ray.kill(trainer)
        return ckpt, circuits
    tracer = actor()
    tables = ray.get([tracer.trace.remote(ckpt.config, dict(ckpt.weights), circuits[t],
                                          get_task(t).domain()) for t in spec.tasks])
    for task, table in zip(spec.tasks, tables, strict=True):
        write_traces(table, trace_path(out, task))
    ray.kill(tracer)  # frees its CPU (or GPU) for the solvers
    return ckpt, circuits


def trained(spec: JobSpec, out: Path, actor: Callable[[], Any], log: Any) -> Checkpoint:
    """OUT/checkpoint, trained to the job's spec unless an earlier run already did."""
    path, stamp = out / "checkpoint", out / TRAINED_FOR
    wanted = {"tasks": list(spec.tasks), "train": spec.train}
    try:
        earlier = json.loads(stamp.read_text(encoding="utf-8"))
        if isinstance(earlier, dict) and {k: earlier.get(k) for k in wanted} == wanted:
            ckpt = load_checkpoint(path)
            if ckpt.sha256 == earlier.get("sha256"):
                log(f"reusing {path} (sha256 {ckpt.sha256[:16]}…), trained earlier for this job")
                return ckpt
    except (OSError, ValueError, FarmError):
        pass  # nothing (usable) to reuse: train
    config, weights, info = ray.get(actor().train.remote(
        GPTConfig(**{"seq_len": get_task(spec.tasks[0]).seq_len, **spec.train.get("model", {})}),
        TrainConfig(tasks=spec.tasks, **{k: v for k, v in spec.train.items() if k != "model"})))
    ckpt = Checkpoint(config, weights)
    if info["accuracy"] < 1.0:
        raise FarmError(f"training reached only {info['accuracy']:.0%} accuracy")
    save_checkpoint(ckpt, path)
    write_text_atomic(stamp, json.dumps(wanted | {"sha256": ckpt.sha256}) + "\n")
    log(f"trained {ckpt.num_parameters()} parameters in {info['steps']} steps, min margin "
        f"{info['min_margin_float32']:.4f} (float32) -> {path}")
    return ckpt


def extracted(ckpt: Checkpoint, task: str, out: Path, actor: Callable[[], Any], log: Any
              ) -> Circuit:
    """OUT/circuits/TASK/circuit.json, extracted by ACDC unless an earlier run of the job
    already extracted it from these weights."""
    path = out / "circuits" / task / "circuit.json"
    try:
        circuit = load_circuit(path)
        if circuit.task == task and circuit.metadata.get("checkpoint_sha256") == ckpt.sha256:
            log(f"{task}: reusing {path}, extracted earlier from this checkpoint")
            return circuit
    except FarmError:
        pass  # none yet, or unreadable: extract
    found = ray.get(actor().extract.remote(ckpt.config, dict(ckpt.weights), task))
    save_circuit(found.circuit, path)
    return found.circuit


def first_tier(spec: JobSpec, planners: dict[str, Planner],
               findings: dict[Group, list[Finding]], bar: tqdm) -> Iterator[PlannedQuery]:
    """Every property of every task, planned lazily; the progress total is known up front
    (only edges no input witnesses, and robustness's second round, change it later)."""
    options = VerifyOptions(epsilon=spec.epsilon, progress=False)
    expected = {(prop, task): first_round_count(planner, prop, options)
                for task, planner in planners.items() for prop in spec.properties}
    bar.total += sum(expected.values())
    bar.refresh()
    for task, planner in planners.items():
        for prop in spec.properties:
            source, findings[prop, task], total = plan_property(planner, prop, options)
            bar.total += total - expected[prop, task]
            yield from source


def escalated(planners: dict[str, Planner], items: list[tuple[str, str, int, Fraction]]
              ) -> Iterator[PlannedQuery]:
    """First robustness queries judged inconclusive, asked again fully encoded around
    r_E(x) itself."""
    for prop, task, index, epsilon in items:
        yield planners[task].robustness_query(index, epsilon, prop, "full")


def run_job(spec: JobSpec, progress: bool = True, log: Any = print,
            given: Given | None = None) -> JobResult:
    """The pipeline on the connected Ray cluster; answers persist in OUT/cache as they arrive.
    `given`: `given_inputs(spec)`, if the caller read them already (before starting Ray)."""
    start = time.perf_counter()
    given = given_inputs(spec) if given is None else given
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, circuits = prepare(spec, out, log, given)
    if by_units(spec.tasks):
        return units_job(spec, ckpt, circuits, progress, log, start)
    config, weights = ckpt.config, dict(ckpt.weights)
    model = ExactModel(config, weights)
    reducer = reducer_actor(str(out / "cache"), config, weights)
    for line in ray.get(reducer.cache_warnings.remote()):  # damaged parts, set aside
        log(f"warning: {line}")
    solvers = [solver_actor(spec.solver, spec.timeout)
               for _ in range(spec.solver_actors)]
    slots = ray.cluster_resources().get("solver", 0)
    if slots < spec.solver_actors:
        log(f"warning: the cluster offers {slots:g} 'solver' slots for {spec.solver_actors} "
            "solver actors; the rest wait for nodes")
    findings: dict[Group, list[Finding]] = {}
    bar = tqdm(total=0, desc=spec.name, unit="q", disable=not progress, dynamic_ncols=True)
    planners = {t: Planner(model, circuits[t], get_task(t),
                           traces=TraceReader(trace_path(out, t), ckpt.sha256),
                           likely_flips=flip_screen(ckpt, circuits[t], t))
                for t in spec.tasks}
    t0 = time.perf_counter()
    reports: list[ShardReport] = []
    try:
        work = first_tier(spec, planners, findings, bar)
        while True:  # a second round only for inconclusive first robustness queries
            reports += dispatch(
                shards(work, spec.shard_size,
                       lambda batch: ray.get(reducer.expect.remote(batch)), bar.update),
                solvers, reducer, spec.in_flight,
                on_done=lambda shard, report: bar.update(len(shard.queries)))
            if not (more := ray.get(reducer.escalations.remote())):
                break
            bar.total += len(more)
            work = escalated(planners, more)
        # the verdicts, folded before the radius search asks undecided texts again
        results = ray.get(reducer.finish.remote(findings))
        radii, searched = {}, 0
        if spec.radius:  # the properties' solvers make way for the radius search's own
            for actor in solvers:
                ray.kill(actor)
            solvers = [solver_actor(spec.radius_solver, spec.radius_timeout)
                       for _ in range(spec.solver_actors)]

            def planned(n: int) -> None:
                bar.total += n
                bar.refresh()

            farm = RayFarm(solvers, reducer, spec.shard_size, spec.in_flight,
                           on_planned=planned, on_answered=bar.update)
            options = VerifyOptions(epsilon=spec.epsilon, progress=False, radius=True,
                                    radius_upper=spec.radius_max,
                                    radius_precision=spec.radius_precision,
                                    radius_timeout=spec.radius_timeout)
            radii = {t: certified_radii(p, farm, None, options) for t, p in planners.items()}
            searched, reports = farm.asked, reports + farm.reports
        solve_seconds = time.perf_counter() - t0
        for r in results:
            if r.property == ROBUSTNESS:
                r.radius = radii.get(r.task)
        fresh = ray.get(reducer.fresh_records.remote())
        if discarded := ray.get(reducer.discarded_warning.remote()):
            log(f"warning: {discarded}")
    finally:
        bar.close()
        for actor in (*solvers, reducer):
            ray.kill(actor)
    stats = job_stats(fresh, sum(r.queries for r in results) + searched, solve_seconds,
                      spec.solver_actors, reports)
    return JobResult(spec, ckpt, circuits, results, stats, time.perf_counter() - start)


def units_job(spec: JobSpec, ckpt: Checkpoint, circuits: dict[str, Circuit], progress: bool,
              log: Any, start: float) -> JobResult:
    """Family tasks: every input decided by units on the unit actors (the screen, exact
    where it is not decisive; robustness by the ball bound, the actor's solvers for the
    rest; edge necessity's witnesses searched by the units too), verdicts persisted per
    unit in OUT/units/CHECKPOINT (robustness: a folder per ε under it; edge necessity:
    one more, so that every unit in it searched for every edge still unwitnessed), then
    folded here."""
    ledger = Path(spec.out) / "units" / ckpt.sha256[:16]
    robustness = None
    if ROBUSTNESS in spec.properties:
        robustness = Robustness(spec.epsilon, spec.solver, spec.timeout)
        ledger /= f"eps-{spec.epsilon.numerator}-{spec.epsilon.denominator}"
    search = EDGE_NECESSITY in spec.properties
    if search:
        ledger /= "witnesses"
    actors = start_unit_actors(ckpt, circuits, spec.solver_actors, robustness)
    bar = tqdm(total=0, desc=spec.name, unit="in", unit_scale=True, disable=not progress,
               dynamic_ncols=True)

    def planned(n: int) -> None:
        bar.total = n
        bar.refresh()

    t0 = time.perf_counter()
    try:
        run = run_units(actors, circuits, ledger, spec.unit_size, in_flight=spec.in_flight,
                        on_planned=planned, search=search,
                        on_done=lambda shard, report: bar.update(sum(map(len, shard.units))))
    finally:
        bar.close()
        actors.kill()
    seconds = time.perf_counter() - t0
    for line in run.warnings:
        log(f"warning: {line}")
    results, evidence = [], []
    for task, verdicts in run.verdicts.items():
        evaluator = Evaluator(ckpt, circuits[task], get_task(task), progress=progress)
        results += fold_units(evaluator, verdicts, [
            p for p in spec.properties if p in (*UNIT_PROPERTIES, EDGE_NECESSITY)])
        evidence.append(units_evidence(task, circuits[task], verdicts))
    stats = job_stats([], 0, seconds, spec.solver_actors, run.reports)
    return JobResult(spec, ckpt, circuits, results, stats, time.perf_counter() - start,
                     evidence, run)


def run(args: argparse.Namespace) -> int:
    spec = load_job_spec(args.job)
    if args.out:
        spec = replace(spec, out=args.out)
    if args.epsilon:
        spec = replace(spec, epsilon=positive_fraction(args.epsilon, "--epsilon"))
    given = given_inputs(spec)  # refused here: no Ray, no OUT
    connect(args.num_cpus)
    log = tqdm.write
    result = run_job(spec, progress=not args.quiet, log=log, given=given)
    out = Path(spec.out)
    write_text_atomic(out / "result.json",
                      json.dumps(result.to_json(), indent=1, default=str) + "\n")
    certificate, public_key = certify(spec, out)
    print(f"{spec.name}: checkpoint {result.checkpoint.sha256[:16]}…, solver {spec.solver}, "
          f"epsilon {spec.epsilon}, {result.seconds:.1f} s")
    print(format_table(result.results, solver_time=True))
    if details := format_details(result.results):
        print(details)
    print(stats_lines(result.stats) if result.units is None else result.units_line())
    print(f"wrote {out / 'result.json'} and {certificate}; check it with\n"
          f"  farm check {certificate} --pubkey {public_key}")
    return 0 if all(r.status == "VERIFIED" for r in result.results) else 1


def certify(spec: JobSpec, out: Path) -> tuple[Path, Path]:
    """Sign the job's result.json as a certificate, the way `farm certify` does."""
    key = Path(spec.signing_key) if spec.signing_key else out / "keys" / PRIVATE_KEY_NAME
    public_key = key.with_name(PUBLIC_KEY_NAME)
    if not spec.signing_key and not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        generate_keypair(key, public_key)
    checkpoint = out / "checkpoint" if spec.checkpoint == "train" else Path(spec.checkpoint)
    certificate = out / "certificate.dsse.json"
    if has_units(out / "result.json"):
        found = load_unit_results([out / "result.json"])
        issue_units(checkpoint, found.evidence, found.results, key, certificate)
        return certificate, public_key
    work = load_verify_results([out / "result.json"])
    issue(checkpoint, work.circuits, work.results, work.records, key, certificate,
          tasks=spec.tasks, lean=remote_lean_check)
    return certificate, public_key
