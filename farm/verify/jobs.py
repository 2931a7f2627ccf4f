"""Jobs: what to verify (a YAML spec), planned into shards, dispatched with backpressure.

A job is train → extract → plan → solve → judge/fold. Planning, solving a shard
and folding are the Ray-free library steps of `farm.verify.local` and
`encoders.properties`; this module adds only what a cluster needs on top:

* shards: planned queries grouped `shard_size` at a time, each one task for
  whichever solver actor is free, so slow queries never stall a whole partition;
* dispatch: at most `in_flight` shards per actor (`ray.wait`, not ActorPool),
  so planning on the driver runs ahead of the solvers by a bounded amount and an
  actor that dies costs at most its own shards, which are put back in the queue;
* resume: queries are named by hash and the reducer persists every answer as it
  arrives, so a resubmitted job sends only the unanswered hashes to a solver.

Soundness: a shard lost with its actor is solved again; nothing it was working
on is ever reported, so only an answer that reached the reducer counts.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from itertools import islice
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import ray
import yaml
from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError, RayError

from encoders.cache import Record
from encoders.properties import PROPERTIES, ROBUSTNESS, PlannedQuery
from encoders.solvers import MODES, SolverPool
from farm.errors import FarmError
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig
from farm.tasks.registry import DEFAULT_TASKS, canonical, get_task
from farm.verify.local import _solve_one

PROPERTY_NAMES = tuple(PROPERTIES.values())
W = TypeVar("W")  # a shard of work, as `dispatch` hands it to an actor
PING_RETRY_SECONDS = 0.5  # how often to ask an actor Ray is restarting whether it is back


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class JobSpec:
    """What to verify and how to spread it; every field has a YAML key of the same name.

    checkpoint: a checkpoint directory, or "train" (train one with `train` options);
    circuits: {task: circuit.json}, or "extract" (ACDC per task on the checkpoint).
    """

    name: str = "job"
    checkpoint: str = "train"
    train: dict[str, Any] = field(default_factory=dict)  # farm.model.train.TrainConfig fields
    tasks: tuple[str, ...] = ("quote_close", "bracket_type")
    circuits: str | dict[str, str] = "extract"
    properties: tuple[str, ...] = PROPERTY_NAMES
    epsilon: Fraction = Fraction(1, 100)
    # robustness: also each input's largest certified radius, as `farm verify --radius`
    radius: bool = False
    radius_max: Fraction = Fraction(1)  # the search's upper bound
    radius_precision: Fraction = Fraction(1, 1000)  # absolute
    radius_timeout: float = 10.0  # seconds per radius query
    radius_solver: str = "cvc5"  # on solver actors of its own, once the properties are done
    solver: str = "race"
    timeout: float = 60.0  # seconds per query; a timeout is UNKNOWN
    shard_size: int = 8
    solver_actors: int = 2
    in_flight: int = 2  # shards queued per actor: one solving, one ready to start
    unit_size: int = 16384  # family tasks: inputs per unit (farm.units), decided on an actor
    out: str = "runs/job"
    signing_key: str | None = None  # Ed25519 private key (PEM); default: OUT/keys, made once


def by_units(tasks: Sequence[str]) -> bool:
    """Whether a job's inputs are decided by units (`farm.units`) on the actors: any task
    other than the default two (whose jobs keep one solver query per instance, as their
    certificates record)."""
    return any(t not in DEFAULT_TASKS for t in tasks)


def load_job_spec(path: str | Path) -> JobSpec:
    """Read and check a YAML (or JSON) job spec; paths in it are relative to the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FarmError(f"job spec {path} does not exist") from None
    except yaml.YAMLError as err:
        raise FarmError(f"job spec {path} is not valid YAML: {err}") from None
    return job_spec_from_dict({} if data is None else data, path.parent, str(path))


def job_spec_from_dict(data: Any, base: Path = Path("."), where: str = "job") -> JobSpec:
    """A checked spec, or a FarmError naming the first wrong field: every field's type is
    checked here, training and model options too, so that nothing wrong reaches Ray."""
    if not isinstance(data, dict):
        raise FarmError(f"{where}: expected a mapping of job fields")
    _refuse_unknown(data, {f.name for f in fields(JobSpec)}, where, "field")
    data = _canonical_tasks(data, where)
    _check_types(data, JobSpec, where)
    spec = JobSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    exact = {}
    for name in ("epsilon", "radius_max", "radius_precision"):
        try:  # the decimal as written, never its float
            exact[name] = Fraction(str(getattr(spec, name)))
        except (ValueError, ZeroDivisionError):
            raise FarmError(f"{where}: {name} {getattr(spec, name)!r} is not a number") from None
    props = tuple(PROPERTIES.get(p, p) for p in spec.properties)
    checks = [
        (bool(spec.tasks), "tasks must name at least one task"),
        (bool(props), "properties must name at least one property"),
        (all(p in PROPERTY_NAMES for p in props),
         f"properties must be among {list(PROPERTY_NAMES)} (or {list(PROPERTIES)})"),
        (spec.solver in MODES, f"solver must be one of {list(MODES)}"),
        (spec.radius_solver in MODES, f"radius_solver must be one of {list(MODES)}"),
        *[(v > 0, f"{name} must be positive") for name, v in exact.items()],
        (spec.timeout > 0, "timeout must be positive"),
        (spec.radius_timeout > 0, "radius_timeout must be positive"),
        (not spec.radius or ROBUSTNESS in props, "radius needs the robustness property"),
        (ROBUSTNESS not in props or all(len(get_task(t).candidates) == 2 for t in spec.tasks),
         "robustness on farm run's units needs tasks of two candidates (the SMT encodings "
         "decide those): use farm verify for the others"),
        (not spec.radius or not by_units(spec.tasks),
         "radius of a family task (not one of the default tasks) is not on farm run's unit "
         "path: use farm verify --radius"),
        (min(spec.shard_size, spec.solver_actors, spec.in_flight, spec.unit_size) >= 1,
         "shard_size, solver_actors, in_flight and unit_size must be at least 1"),
        (spec.circuits == "extract" or isinstance(spec.circuits, dict),
         'circuits must be "extract" or a mapping task -> circuit.json (or "full")'),
    ]
    for ok, message in checks:
        if not ok:
            raise FarmError(f"{where}: {message}")
    _check_train_options(spec.train, where)

    def resolve(p: str) -> str:
        return str(base / p)

    def resolve_circuit(p: str) -> str:
        return p if p == "full" else resolve(p)

    circuits = spec.circuits
    if isinstance(circuits, dict):
        missing = [t for t in spec.tasks if t not in circuits]
        if missing:
            raise FarmError(f"{where}: circuits has no entry for task(s) {', '.join(missing)}")
        circuits = {t: resolve_circuit(p) for t, p in circuits.items()}
    checkpoint = spec.checkpoint if spec.checkpoint == "train" else resolve(spec.checkpoint)
    key = spec.signing_key and resolve(spec.signing_key)
    return replace(spec, **exact, properties=props, circuits=circuits,
                   checkpoint=checkpoint, out=resolve(spec.out), signing_key=key)


def _canonical_tasks(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Tasks (and circuits' keys) by canonical name: each written as a spec string or a
    mapping {family: {parameter: value}}, and refused by name if it is no task."""
    def name(spec: Any) -> Any:
        if not isinstance(spec, str | dict):
            return spec  # the type check names it
        try:
            return canonical(spec)
        except FarmError as err:
            raise FarmError(f"{where}: tasks: {err}") from None

    data = dict(data)
    if isinstance(data.get("tasks"), list):
        data["tasks"] = [name(t) for t in data["tasks"]]
    if isinstance(data.get("circuits"), dict):
        data["circuits"] = {name(t): p for t, p in data["circuits"].items()}
    return data


def _check_train_options(train: dict[str, Any], where: str) -> None:
    """Refuse unknown or mistyped training options, and model options no model can be
    built from, now, not in the trainer actor after Ray has started."""
    _refuse_unknown(train, {f.name for f in fields(TrainConfig)} - {"tasks"} | {"model"},
                    where, "train option")
    _check_types({k: v for k, v in train.items() if k != "model"}, TrainConfig, where, "train.")
    model = train.get("model", {})
    if not isinstance(model, dict):
        raise FarmError(f"{where}: train.model must be a mapping of model options")
    _refuse_unknown(model, {f.name for f in fields(GPTConfig)}, where, "train.model option")
    _check_types(model, GPTConfig, where, "train.model.")
    try:
        GPTConfig(**model)
    except FarmError as err:
        raise FarmError(f"{where}: train.model: {err}") from None


def _refuse_unknown(data: dict[Any, Any], known: set[str], where: str, what: str) -> None:
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise FarmError(f"{where}: unknown {what}(s) {', '.join(unknown)}; expected some of "
                        f"{', '.join(sorted(known))}")


def _check_types(data: dict[str, Any], cls: type, where: str, prefix: str = "") -> None:
    """Refuse, naming the field, a value whose type is not the one `cls` declares for it
    (a dataclass; every key one of its fields). YAML gives whatever it parses, and a
    wrong type found later is a traceback, in a Ray worker at worst."""
    hints = get_type_hints(cls)
    for name, value in data.items():
        if not _fits(value, hints[name]):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise FarmError(f"{where}: {prefix}{name} must be {_describe(hints[name])}, "
                            f"got {shown}")


def _fits(value: Any, kind: Any) -> bool:
    """Whether a parsed YAML value may stand for a field declared `kind`. A list stands for
    a tuple; an int for a float; a Fraction is written as a number or a string ("1/100"),
    parsed exactly later; bool is never a number."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return True
    if origin in (Union, UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    if kind is Fraction:
        return type(value) in (int, float, str)
    if kind in (int, bool, type(None)):
        return type(value) is kind
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    """A declared type as the user writes it in YAML."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return "a mapping" if args[1] is Any else (
            f"a mapping of {_describe(args[0])} to {_describe(args[1])}")
    return {str: "text", int: "a whole number", float: "a finite number", bool: "true or false",
            Fraction: 'a number (0.01 or "1/100")', type(None): "null"}.get(kind, str(kind))


# --------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """One unit of dispatch: a few planned queries for one actor."""

    index: int
    queries: tuple[PlannedQuery, ...]


@dataclass(frozen=True)
class ShardReport:
    """What the reducer hands back once a shard's answers are on disk."""

    index: int
    solved: tuple[str, ...]  # query hashes sent to a solver
    seconds: float  # wall time of the shard inside the actor
    actor: str  # actor id@node id (prefixes)
    node: str  # the Ray node id prefix it ran on: where a cluster's work went


@dataclass(frozen=True)
class ShardResult:
    """A solved shard on its way from a solver actor to the reducer."""

    report: ShardReport
    records: tuple[Record, ...]


def shards(queries: Iterable[PlannedQuery], shard_size: int,
           expect: Callable[[list[PlannedQuery]], Collection[str]],
           skipped: Callable[[int], None] = lambda n: None) -> Iterator[Shard]:
    """Shards of the queries still to solve, `shard_size` planned queries at a time.

    Lazy, so planning overlaps solving. `expect` registers a batch (text
    stripped) with the reducer and answers the hashes it has no answer for;
    `skipped` hears how many of a batch were already answered, or repeat a
    text the batch sends already.
    """
    index, source = 0, iter(queries)
    while batch := list(islice(source, shard_size)):
        wanted = set(expect([without_text(q) for q in batch]))
        skipped(len(batch) - len(wanted))
        todo: dict[str, PlannedQuery] = {}  # one query per text (CI asks FE's texts again)
        for q in batch:
            if q.hash in wanted:
                todo.setdefault(q.hash, q)
        if todo:
            yield Shard(index, tuple(todo.values()))
            index += 1


def solve_shard(pool: SolverPool, shard: Shard) -> list[Record]:
    """Every query of a shard through one warm pool (a disagreement is an error record)."""
    return [_solve_one(pool, q) for q in shard.queries]


def without_text(q: PlannedQuery) -> PlannedQuery:
    """The query as the judge needs it: the text is the solver's business (and the bulk)."""
    return replace(q, text="")


# --------------------------------------------------------------------------- dispatch


def dispatch(work: Iterable[W], actors: Sequence[Any], reducer: Any, in_flight: int = 2,
             on_done: Callable[[W, ShardReport], None] = lambda s, r: None
             ) -> list[ShardReport]:
    """Run every shard on some actor's `solve` and hand each answer to the reducer.

    A shard is any value an actor's `solve` takes and whose answer the reducer's
    `accept` persists and turns into a `ShardReport`: planned queries for solver
    actors (`Shard`), or units for unit actors (`farm.units`).

    At most `in_flight` shards run per actor, and at most as many answers wait
    for the reducer, so neither planning nor solving runs away from the disk.
    An answer travels actor → reducer as an object reference (never through
    the driver), so an actor starts its next shard at once. A shard counts
    as done only when the reducer has persisted it. An actor gets work only once
    its `ping` has answered, so actors still waiting for a `solver` slot (more
    actors than the cluster has slots) hold no shards. A shard whose actor died
    (or whose node was lost with its answer) goes back to the front of the
    queue, and the actor is pinged again: while Ray restarts it the ping says
    "unavailable" and is retried every `PING_RETRY_SECONDS`; the actor is
    dropped only once Ray reports it dead for good. Only when no actor is alive
    or restarting does the job fail.
    """
    source = iter(work)
    queue: deque[W] = deque()
    running: dict[ray.ObjectRef, tuple[W, Any]] = {}
    persisting: dict[ray.ObjectRef, tuple[W, ray.ObjectRef, Any]] = {}
    load: Counter[int] = Counter()
    healthy: dict[int, Any] = {}
    pings: dict[ray.ObjectRef, Any] = {a.ping.remote(): a for a in actors}
    restarting: list[tuple[float, Any]] = []  # (when to ping again, actor)
    reports: list[ShardReport] = []
    exhausted = False

    def lost(shard: W, actor: Any) -> None:
        queue.appendleft(shard)  # idempotent by hash: solve it again elsewhere
        if healthy.pop(id(actor), None) is not None:
            pings[actor.ping.remote()] = actor

    while True:
        now = time.monotonic()
        for due, actor in [r for r in restarting if r[0] <= now]:
            restarting.remove((due, actor))
            pings[actor.ping.remote()] = actor
        for actor in list(healthy.values()):
            while load[id(actor)] < in_flight and len(persisting) < in_flight * len(actors):
                if not queue and not exhausted:
                    nxt = next(source, None)
                    exhausted = nxt is None
                    if nxt is not None:
                        queue.append(nxt)
                if not queue:
                    break
                shard = queue.popleft()
                running[actor.solve.remote(shard)] = (shard, actor)
                load[id(actor)] += 1
        if not running and not persisting and not queue and exhausted:
            return reports
        if not running and not persisting and not pings and not restarting:
            raise FarmError("every solver actor has died; rerun the job to resume from "
                            "the answers already persisted")
        if not (waiting := [*running, *persisting, *pings]):
            time.sleep(PING_RETRY_SECONDS)  # nothing in flight but a restart
            continue
        ready, _ = ray.wait(waiting, num_returns=1,
                            timeout=PING_RETRY_SECONDS if restarting else None)
        if not ready:
            continue  # a restarting actor's next ping may be due
        [ref] = ready
        if ref in pings:
            actor = pings.pop(ref)
            try:
                ray.get(ref)
                healthy[id(actor)] = actor
            except ActorUnavailableError:  # Ray is restarting it: ask again shortly
                restarting.append((time.monotonic() + PING_RETRY_SECONDS, actor))
            except RayActorError:
                pass  # restarts exhausted: the actor is gone for good
        elif ref in running:
            shard, actor = running.pop(ref)
            load[id(actor)] -= 1
            persisting[reducer.accept.remote(ref)] = (shard, ref, actor)
        else:
            shard, solved, actor = persisting.pop(ref)
            try:
                report = ray.get(ref)
            except RayError:
                if _solver_side(solved):
                    lost(shard, actor)
                    continue
                raise  # the reducer itself failed: nothing can be persisted
            reports.append(report)
            on_done(shard, report)


class RayFarm:
    """`LocalFarm.solve` over solver actors and the job's reducer, for the searches that
    ask their next queries from the answers to the last (`farm.verify.local.certified_radii`).

    Answers persist as every other answer of the job does, so a rerun resumes the
    search too. The actors solve with the time limit they were started with.
    """

    def __init__(self, actors: Sequence[Any], reducer: Any, shard_size: int, in_flight: int,
                 on_planned: Callable[[int], None] = lambda n: None,
                 on_answered: Callable[[int], None] = lambda n: None) -> None:
        self.actors, self.reducer = actors, reducer
        self.shard_size, self.in_flight = shard_size, in_flight
        self.on_planned, self.on_answered = on_planned, on_answered
        self.asked = 0  # queries planned over the farm's life, answered or not before
        self.reports: list[ShardReport] = []  # every shard it solved, for the job's stats

    def solve(self, queries: Iterable[PlannedQuery], cache: Any = None,
              progress: str | None = None, total: int | None = None,
              timeout: float | None = None, model: Any = None) -> dict[str, Record]:
        """Records by hash. `cache`, `progress`, `timeout` and `model` are ignored: the
        job's cache (whose answers the reducer replays on its own model), its progress bar
        and the actors' own time limit apply. A text this job already answered unknown or
        error is asked again."""
        asked: list[str] = []

        def register(batch: list[PlannedQuery]) -> list[str]:
            asked.extend(q.hash for q in batch)
            self.asked += len(batch)
            return ray.get(self.reducer.expect.remote(batch, retry_undecided=True))

        self.on_planned(total or 0)
        self.reports += dispatch(
            shards(queries, self.shard_size, register, self.on_answered), self.actors,
            self.reducer, self.in_flight,
            on_done=lambda shard, report: self.on_answered(len(shard.queries)))
        return ray.get(self.reducer.answers.remote(list(dict.fromkeys(asked))))


def _solver_side(solved: ray.ObjectRef) -> bool:
    """Whether a failed hand-over was the solver's fault (actor died, answer lost)."""
    try:
        ray.get(solved)
    except (RayActorError, ObjectLostError):
        return True
    return False


# --------------------------------------------------------------------------- summary


@dataclass
class JobStats:
    """Throughput and solver behaviour of one run, from the answers it produced itself."""

    queries: int  # distinct queries in the job
    solved: int  # sent to a solver in this run
    reused: int  # answered from the results cache, or the same text as another query
    seconds: float  # wall time of the solve phase
    solver_actors: int
    wins: dict[str, int]
    timeouts: int
    unknowns: int
    slowest: list[dict[str, Any]]  # the slowest queries solved in this run
    solved_by_node: dict[str, int]  # queries sent to a solver, per Ray node id prefix

    @property
    def throughput(self) -> float:
        return self.solved / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return out | {"throughput_qps": self.throughput}


def job_stats(fresh: Sequence[Record], total: int, seconds: float, actors: int,
              reports: Sequence[ShardReport] = (), slowest: int = 5) -> JobStats:
    def cost(r: Record) -> float:
        return max(r.z3_seconds or 0.0, r.cvc5_seconds or 0.0)

    top = sorted(fresh, key=cost, reverse=True)[:slowest]
    return JobStats(
        total, len(fresh), total - len(fresh), seconds, actors,
        dict(Counter(r.winner for r in fresh if r.winner)),
        sum("timeout" in r.reason for r in fresh if r.status == "unknown"),
        sum(r.status == "unknown" for r in fresh),
        [{"property": r.property, "task": r.task, "subject": r.subject, "status": r.status,
          "winner": r.winner, "seconds": round(cost(r), 4), "hash": r.query_hash[:16]}
         for r in top],
        solved_by_node(reports))


def solved_by_node(reports: Sequence[ShardReport]) -> dict[str, int]:
    """Queries sent to a solver per Ray node: where a cluster's work went."""
    counts: Counter[str] = Counter()
    for r in reports:
        counts[r.node] += len(r.solved)
    return dict(counts)


def stats_lines(stats: JobStats) -> str:
    """Throughput, per-solver wins and the slowest queries, printed after the result table."""
    wins = ", ".join(f"{s} {n}" for s, n in sorted(stats.wins.items())) or "none"
    lines = [f"{stats.solved} queries solved on {stats.solver_actors} solver actor(s) in "
             f"{stats.seconds:.1f} s ({stats.throughput:.2f} q/s), {stats.reused} reused "
             "(cached or identical text); "
             f"wins: {wins}; unknown {stats.unknowns} (timeouts {stats.timeouts})"]
    if len(stats.solved_by_node) > 1:
        lines.append("solved per node: " + ", ".join(
            f"{node} {n}" for node, n in sorted(stats.solved_by_node.items())))
    if stats.slowest:
        lines.append("slowest queries:")
        lines += [f"  {s['seconds']:>8.3f} s  {s['status']:<7} {s['winner'] or '-':<5} "
                  f"{s['property']} {s['task']} {s['subject']}" for s in stats.slowest]
    return "\n".join(lines)
