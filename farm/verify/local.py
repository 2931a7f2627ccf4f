"""Run planned property queries locally, judge every verdict exactly, fold into results.

Three steps, each usable on its own so a Ray actor and reducer can call them:

* `LocalFarm.solve`: planned queries -> solver `Record`s, on N warm `SolverPool`s
  (one thread each: solving happens in the solver child processes, so the
  threads only wait on pipes and the GIL stays free for planning), skipping
  every query the Parquet cache already answered definitively.
* `judge`: one query and its record -> an `Outcome`. UNSAT proves the claim;
  SAT is a counterexample only after exact replay (the exact margins for
  constant inputs, η pushed through the exact final norm and lm_head for
  robustness); a model that does not replay, a solver disagreement, or an
  UNSAT the exact evaluator refutes is an ERROR, never a verdict.
* `fold`: outcomes -> one `PropertyResult` per (property, task), whose status is
  VERIFIED only when every query was proved.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal, Protocol

from tqdm import tqdm

from encoders.cache import Record, ResultCache
from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    RADIUS,
    ROBUSTNESS,
    Finding,
    Fixed,
    Perturbed,
    PlannedQuery,
    Planner,
)
from encoders.solvers import RaceHistory, SolverDisagreement, SolverPool, SolverUnavailable
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit, load_circuit, require_fits, require_zero_ablation
from farm.model.controlled import FlipScreen
from farm.model.exact import ExactModel, band_norm
from farm.tasks.registry import get_task

Status = Literal["VERIFIED", "FAILED", "UNKNOWN", "ERROR"]
OutcomeKind = Literal["proved", "counterexample", "unknown", "error", "inconclusive"]
SOLVERS = ("z3", "cvc5")
DEFINITIVE = ("sat", "unsat")
DEFAULT_JOBS = 2  # the machine has 2 cores; every pool runs one process per solver
UNDECIDED_PRECISION = Fraction(1, 8)  # relative: a radius search ending at an unknown
CHUNK = 8  # queries per hand-off to a pool: neighbours in domain order share prompt
# prefixes, which a pool's z3 process then reduces once (encoders.z3_prefixes)


# --------------------------------------------------------------------------- solving


class Farm(Protocol):
    """What the robustness and radius searches ask of a farm: answers by query hash
    (`LocalFarm` here; `farm.verify.jobs.RayFarm` on a cluster)."""

    def solve(self, queries: Iterable[PlannedQuery], cache: ResultCache | None = None,
              progress: str | None = None, total: int | None = None,
              timeout: float | None = None, model: ExactModel | None = None
              ) -> dict[str, Record]: ...


class LocalFarm:
    """N warm solver pools answering planned queries, with backpressure and a cache."""

    def __init__(self, mode: str = "race", timeout: float = 60.0,
                 jobs: int = DEFAULT_JOBS) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.mode, self.timeout = mode, timeout
        history = RaceHistory()  # the pools learn each kind's usual winner together
        self.pools = [SolverPool(mode, timeout, history=history) for _ in range(jobs)]
        self.solved = 0  # queries sent to a solver over this farm's life (cache misses)
        self.answers: dict[str, Record] = {}  # definitive answers of this farm's life, by hash

    def solve(self, queries: Iterable[PlannedQuery], cache: ResultCache | None = None,
              progress: str | None = None, total: int | None = None,
              timeout: float | None = None, model: ExactModel | None = None
              ) -> dict[str, Record]:
        """Records by query hash; planning (iterating `queries`) overlaps with solving.

        Each distinct text is solved once, over the farm's life (another property
        may ask the same text) and the cache's. A cached sat/unsat answer is
        reused only if it replays on `model` (`reusable`; without `model`, only
        those of constant inputs); a cached unknown is retried (it may have been a
        short timeout), and an error (solver disagreement, crash) is never cached.
        Interrupted (Ctrl-C), it stops at once and still caches every answer it
        has, so a rerun resumes.
        """
        results: dict[str, Record] = {}
        fresh: list[Record] = []
        todo: queue.Queue[list[PlannedQuery] | None] = queue.Queue(maxsize=2 * len(self.pools))
        size = CHUNK if total is None else max(1, min(CHUNK, total // (2 * len(self.pools))))
        lock = threading.Lock()
        stopping = threading.Event()
        bar = tqdm(total=total, desc=progress, unit="q", disable=progress is None,
                   leave=False, dynamic_ncols=True)

        def work(pool: SolverPool) -> None:
            while (chunk := todo.get()) is not None:
                for q in chunk:
                    if stopping.is_set():
                        return
                    try:
                        rec = _solve_one(pool, q, timeout)
                    except SolverUnavailable as err:  # no host to restart: an error
                        rec = _error_record(q, f"{type(err).__name__}: {err}", {})
                    with lock:
                        results[q.hash] = rec
                        fresh.append(rec)
                        self.solved += 1
                    bar.update()

        threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in self.pools]
        for t in threads:
            t.start()
        seen: set[str] = set()
        chunk: list[PlannedQuery] = []
        try:
            for q in queries:
                if q.hash in seen:
                    bar.update()
                    continue
                seen.add(q.hash)
                hit = self.answers.get(q.hash)
                if hit is None and cache is not None:
                    stored = cache.get(q.hash)
                    hit = stored if reusable(q, stored, model) else None
                if hit is not None:
                    with lock:
                        results[q.hash] = hit
                    bar.update()
                else:
                    chunk.append(q)
                    if len(chunk) == size:
                        todo.put(chunk)
                        chunk = []
            if chunk:
                todo.put(chunk)
            for _ in threads:
                todo.put(None)
            for t in threads:
                t.join()
        except BaseException:  # interrupted: no new query; those in flight die with the pools
            stopping.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    todo.get_nowait()
            for _ in threads:
                todo.put_nowait(None)
            raise
        finally:
            bar.close()
            with lock:
                done = list(fresh)
            self.answers.update((r.query_hash, r) for r in done if r.status in DEFINITIVE)
            if cache is not None:
                cache.put(r for r in done if r.status != "error")
                cache.flush()
        return results

    def close(self) -> None:
        for p in self.pools:
            p.close()

    def __enter__(self) -> LocalFarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _solve_one(pool: SolverPool, q: PlannedQuery, timeout: float | None = None) -> Record:
    """A solver answer as a record; a disagreement or a failing pool becomes an error record."""
    try:
        return Record.from_result(q.hash, q.property, q.task, q.subject,
                                  pool.solve(q.text, q.model_vars, timeout, q.kind))
    except SolverDisagreement as err:
        times = {v.solver: v.seconds for v in err.verdicts}
        return _error_record(q, str(err), times)
    except SolverUnavailable:
        raise  # the pool, not the query: its host decides (see SolverUnavailable)
    except Exception as err:  # noqa: BLE001 - a broken pool must not pass for an answer
        return _error_record(q, f"{type(err).__name__}: {err}", {})


def _error_record(q: PlannedQuery, reason: str, times: Mapping[str, float]) -> Record:
    return Record(q.hash, q.property, q.task, q.subject, "error", None, times.get("z3"),
                  times.get("cvc5"), {}, reason, datetime.now(UTC))


# --------------------------------------------------------------------------- judging

# Why a SAT verdict can contradict exact evaluation: a wrong encoding, or guided
# branches read from a trace file of other weights or another circuit, whose guards
# fail at the true point and so leave the solver free.
_CONTRADICTION = ("an encoder bug, or branches from a trace that does not belong to this "
                  "model and circuit")


@dataclass(frozen=True)
class Outcome:
    """What one verdict means for its property, after exact replay."""

    kind: OutcomeKind
    detail: dict[str, Any] = field(default_factory=dict)


def judge(q: PlannedQuery, rec: Record, model: ExactModel) -> Outcome:
    """Turn one solver record into a proof, a replayed counterexample, unknown, or error.

    "inconclusive" only comes from a first robustness query whose η left the
    final norm's branch without changing the decision, or left the ε-ball for
    the larger ball around the query's short centre: the caller must ask that
    input again (fully encoded, around r_E(x); `fold` counts an unanswered one
    as unknown).
    """
    if rec.status in ("error", "unknown"):
        return Outcome(rec.status, {"subject": q.subject, "reason": rec.reason})
    if rec.status == "unsat":
        if q.holds_exactly is False:
            return Outcome("error", {"subject": q.subject, "reason":
                                     "UNSAT, but exact evaluation refutes the claim: the "
                                     "encoding is unsound"})
        return Outcome("proved")
    lacking = [v for v in q.model_vars if v not in rec.model]
    if lacking:  # nothing to replay: a solver's (or a stored) model that is incomplete
        return Outcome("error", {"subject": q.subject, "reason": "SAT, but the model lacks "
                                 f"{len(lacking)} of its variables (first {lacking[0]})"})
    solver_margins = tuple(rec.model.get(v) for v in q.margin_vars)
    if isinstance(q.replay, Fixed):
        margins, detail = q.replay.margins, fixed_detail(q)
    else:
        margins, branch, detail = _replay_eta(q, q.replay, rec.model, model)
        if detail.get("beyond_epsilon"):
            return Outcome("inconclusive", {**detail, "reason": "η lies in the query's ball "
                                            "but outside the ε-ball around r_E(x)"})
        if margins and q.replay.branch is not None and branch != q.replay.branch:
            if not q.claim.holds(margins):
                return Outcome("counterexample", detail)
            return Outcome("inconclusive", {**detail, "reason": "η leaves the final norm's "
                                            "branch without changing the decision"})
    if solver_margins != margins:
        shown = target_margins(q.task, q.prompts, solver_margins)  # as `detail` states them
        return Outcome("error", {**detail, "solver_margins": [str(m) for m in shown],
                                 "reason": "SAT model's margins differ from exact replay: "
                                           + _CONTRADICTION})
    if q.claim.holds(margins):
        return Outcome("error", {**detail, "reason": "SAT, but exact replay satisfies the "
                                                     "claim: " + _CONTRADICTION})
    return Outcome("counterexample", detail)


def reusable(q: PlannedQuery, rec: Record | None, model: ExactModel | None) -> bool:
    """Whether a stored answer may stand for solving `q` again: only a sat or unsat that
    `judge` does not call an error (a sat model that replays, an unsat exact evaluation
    does not refute). Anything else is asked again, so a bad answer on disk is never
    trusted and never lasts. A perturbed replay needs `model`; without it, ask again."""
    if rec is None or rec.status not in DEFINITIVE:
        return False
    if isinstance(q.replay, Perturbed) and model is None:
        return False
    return judge(q, rec, model).kind != "error"  # type: ignore[arg-type]  # Fixed: unused


def fixed_detail(q: PlannedQuery) -> dict[str, Any]:
    """A constant-input query's counterexample as reported: its subject, prompts and exact
    margins (and edge), all known when planned, so a checker rebuilds it without a solver."""
    assert isinstance(q.replay, Fixed)
    detail = {"subject": q.subject, "prompts": [list(p) for p in q.prompts],
              "exact_margins": [str(m) for m in target_margins(q.task, q.prompts,
                                                                q.replay.margins)]}
    if q.edge is not None:
        detail["edge"] = list(q.edge)
    return detail


def _replay_eta(q: PlannedQuery, p: Perturbed, solver_model: Mapping[str, Fraction],
                model: ExactModel) -> tuple[tuple[Fraction, ...], tuple | None, dict[str, Any]]:
    """`replay_eta` of the solver's point: η is that point less r_E(x) (the solver's
    offsets are from the query's centre). A point outside the query's ball replays to no
    margins, which no solver margin matches."""
    offsets = [solver_model[v] for v in p.eta_vars]
    eta = [c + e - r for c, e, r in zip(p.centre, offsets, p.residual, strict=True)]
    if max(abs(e) for e in offsets) > p.ball:
        return (), None, {**_eta_detail(q.subject, q.prompts, p.epsilon, eta),
                          "reason": "η outside the query's ball"}
    return replay_eta(model, q.task, q.subject, q.prompts, p.residual, p.epsilon, eta)


def _eta_detail(subject: str, prompts: Sequence[Sequence[int]], epsilon: Fraction,
                eta: Sequence[Fraction]) -> dict[str, Any]:
    return {"subject": subject, "prompts": [list(x) for x in prompts], "epsilon": str(epsilon),
            "eta": [str(e) for e in eta], "eta_float": [float(e) for e in eta]}


def replay_eta(model: ExactModel, task: str, subject: str, prompts: Sequence[Sequence[int]],
               residual: Sequence[Fraction], epsilon: Fraction, eta: Sequence[Fraction]
               ) -> tuple[tuple[Fraction, ...], tuple | None, dict[str, Any]]:
    """The exact margin logit[c0] − logit[c1] at r_E(x) + η (final norm, lm_head in
    Fractions), the norm's branch, and the counterexample detail as reported; shared by
    `judge` and the certificate checker, so what one states the other rebuilds.

    An η outside the ε-ball replays to no margins, and says so (`beyond_epsilon`).
    """
    detail = _eta_detail(subject, prompts, epsilon, eta)
    if max(abs(e) for e in eta) > epsilon:
        return (), None, {**detail, "beyond_epsilon": True}
    r: Sequence[Fraction] = [a + e for a, e in zip(residual, eta, strict=True)]
    branch = None
    if model.norm_final is not None:
        r, branch = band_norm(r, *model.norm_final, model.cfg.half_low, model.cfg.half_high)
    logits = model.lm_head(r)
    c0, c1 = get_task(task).candidates
    margin = logits[c0] - logits[c1]
    (shown,) = target_margins(task, prompts[:1], (margin,))
    detail |= {"exact_margin": str(shown), "exact_margin_float": float(shown)}
    return (margin,), branch, detail


def target_margins(task_name: str, prompts: Sequence[Sequence[int]],
                   margins: Sequence[Fraction | None]) -> list[Fraction | None]:
    """Margins as SPEC and `farm replay` state them, logit[target] − logit[alternate] per
    run (negative: the run decides wrongly); the planner's are logit[c0] − logit[c1]. A
    margin the solver's model lacks stays None."""
    task = get_task(task_name)
    return [m if m is None or task.target(tuple(p)) == task.candidates[0] else -m
            for p, m in zip(prompts, margins, strict=True)]


# --------------------------------------------------------------------------- folding


@dataclass
class RadiusResult:
    """Largest certified ℓ∞ radius per input, by bisection to an absolute precision."""

    precision: str
    upper: str
    per_input: list[dict[str, Any]]  # {input, prompt, certified, not_certified_at, note}

    @property
    def minimum(self) -> Fraction:
        return min(Fraction(r["certified"]) for r in self.per_input)


@dataclass(frozen=True)
class QueryRecord:
    """One planned query instance and its solver verdict: one sidecar row.

    Instances, not distinct hashes: two inputs may plan the same text, and the
    property counts are per instance.
    """

    property: str
    task: str
    subject: str
    query_hash: str
    verdict: str  # sat | unsat | unknown | error
    winner: str | None
    z3_seconds: float | None
    cvc5_seconds: float | None
    reason: str

    @classmethod
    def of(cls, query: PlannedQuery, record: Record) -> QueryRecord:
        return cls(query.property, query.task, query.subject, query.hash, record.status,
                   record.winner, record.z3_seconds, record.cvc5_seconds, record.reason)

    @classmethod
    def from_json(cls, data: Any, where: str) -> QueryRecord:
        names = [f.name for f in fields(cls)]
        if not isinstance(data, Mapping) or not set(names) - {"reason"} <= set(data):
            raise FarmError(f"{where}: a query record needs the fields {', '.join(names)}")
        record = cls(**{n: data.get(n, "") if n == "reason" else data[n] for n in names})
        texts = ("property", "task", "subject", "query_hash", "verdict", "reason")
        times = (record.z3_seconds, record.cvc5_seconds)
        if not (all(isinstance(getattr(record, n), str) for n in texts)
                and isinstance(record.winner, str | None)
                and all(t is None or type(t) in (int, float) for t in times)):
            raise FarmError(f"{where}: a query record's {', '.join(texts)} must be text, its "
                            "winner text or null, its times numbers or null")
        return record


@dataclass
class PropertyResult:
    property: str
    task: str
    status: Status
    queries: int
    unsat: int
    sat: int
    unknown: int
    errors: int
    escalated: int  # first robustness queries judged inconclusive, asked again
    cached: int
    counterexamples: list[dict[str, Any]]
    problems: list[dict[str, Any]]  # unknown and error details
    wins: dict[str, int]
    solver_seconds: dict[str, float]
    seconds: float  # wall time: planning, solving and judging
    epsilon: str | None = None  # robustness: the ball's radius ε it speaks of, exactly
    radius: RadiusResult | None = None
    query_records: list[QueryRecord] = field(default_factory=list)  # the audit trail, per query
    # instances (inputs; edges for edge necessity) decided by each route: screen, exact,
    # solver (`farm.verify.evaluate`); those failing, of which `counterexamples` lists some
    routes: dict[str, int] = field(default_factory=dict)
    failing: int = 0
    witnesses: list[dict[str, Any]] = field(default_factory=list)  # edge necessity's, evaluated
    cubes: list[dict[str, Any]] = field(default_factory=list)  # the cube route's, each with
    # its verdict and query hash (`farm.verify.conquer`)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.radius is not None:
            out["radius"]["minimum"] = str(self.radius.minimum)
            out["radius"]["minimum_float"] = float(self.radius.minimum)
        return out


Judged = tuple[PlannedQuery, Record, Outcome]


def fold(prop: str, task: str, judged: Sequence[Judged], findings: Sequence[Finding] = (),
         cached: int = 0) -> PropertyResult:
    """One property's verdict: ERROR > FAILED > UNKNOWN > VERIFIED, by the worst query.

    An inconclusive first robustness query counts only if no later query
    settled its (input, ε); otherwise it is unknown. `seconds` is left 0 for
    the driver, which alone knows the wall time.
    """
    settled = {(q.replay.index, q.replay.epsilon) for q, _, o in judged
               if isinstance(q.replay, Perturbed) and o.kind != "inconclusive"}
    kinds: Counter[str] = Counter()
    for q, _, o in judged:
        open_ = o.kind == "inconclusive" and isinstance(q.replay, Perturbed) and (
            q.replay.index, q.replay.epsilon) not in settled
        kinds["unknown" if open_ else o.kind] += 1
    records = [r for _, r, _ in judged]
    statuses = Counter(r.status for r in records)
    counterexamples = ([o.detail for _, _, o in judged if o.kind == "counterexample"]
                       + [{"subject": f.subject, "reason": f.detail} for f in findings])
    status: Status = ("ERROR" if kinds["error"] else "FAILED" if counterexamples
                      else "UNKNOWN" if kinds["unknown"] else "VERIFIED")
    wins = Counter(r.winner for r in records if r.winner)
    epsilons = {q.replay.epsilon for q, _, _ in judged if isinstance(q.replay, Perturbed)}
    return PropertyResult(
        prop, task, status, len(judged), statuses["unsat"], statuses["sat"],
        statuses["unknown"], kinds["error"], kinds["inconclusive"], cached, counterexamples,
        [o.detail for _, _, o in judged if o.kind in ("unknown", "error")],
        {s: wins[s] for s in SOLVERS},
        {s: sum(getattr(r, f"{s}_seconds") or 0.0 for r in records) for s in SOLVERS}, 0.0,
        epsilon=str(epsilons.pop()) if len(epsilons) == 1 else None,
        query_records=[QueryRecord.of(q, r) for q, r, _ in judged],
        routes={r: n for r, n in (("solver", len(judged) - kinds["inconclusive"]),
                                  ("exact", len(findings))) if n},
        failing=len(counterexamples))


# --------------------------------------------------------------------------- driving


def resolve_circuit(spec: str, ckpt: Checkpoint, task: str) -> Circuit:
    """`full` or a circuit.json, refused unless it fits this checkpoint and task."""
    cfg = ckpt.config
    if spec == "full":
        return Circuit.full(cfg.n_layers, cfg.n_heads, "block", task, cfg.attention_only)
    circuit = load_circuit(spec)
    require_zero_ablation(circuit, f"circuit {spec}")
    require_fits(circuit, cfg.n_layers, cfg.n_heads, f"circuit {spec}", "the checkpoint",
                 ckpt.sha256, attention_only=cfg.attention_only)
    if circuit.task is not None and circuit.task != task:
        raise FarmError(f"circuit {spec} was extracted for task {circuit.task}, not {task}")
    return circuit


@dataclass(frozen=True)
class VerifyOptions:
    epsilon: Fraction = Fraction(1, 100)
    pairwise: bool = False
    radius: bool = False
    radius_upper: Fraction = Fraction(1)
    radius_precision: Fraction = Fraction(1, 1000)
    radius_timeout: float | None = None  # per query of the radius search; None: the farm's
    radius_solver: str | None = None  # solver mode of the radius search; None: the farm's
    progress: bool = True
    solver_inputs: int | None = None  # screen route: robustness inputs the solvers are asked
    # about at most (those the screen leaves, in domain order); the rest stay UNKNOWN


def verify_task(planner: Planner, properties: Sequence[str], farm: LocalFarm,
                cache: ResultCache | None = None,
                options: VerifyOptions = VerifyOptions()) -> list[PropertyResult]:
    """Plan, solve, judge and fold each requested property of one (circuit, task)."""
    results = []
    for prop in properties:
        start, before = time.perf_counter(), farm.solved
        label = f"{planner.task.name} {prop}" if options.progress else None
        findings: list[Finding] = []
        if prop == ROBUSTNESS:
            judged, _ = robustness_outcomes(
                planner, dict.fromkeys(range(len(planner.prompts)), options.epsilon), farm,
                cache, ROBUSTNESS, label)
        else:
            source, findings, total = plan_property(planner, prop, options)
            queries: list[PlannedQuery] = []
            records = farm.solve(_collect(source, queries), cache, label, total,
                                 model=planner.model)
            judged = [(q, records[q.hash], judge(q, records[q.hash], planner.model))
                      for q in queries]
        distinct = len({q.hash for q, _, _ in judged})
        result = fold(prop, planner.task.name, judged, findings,
                      cached=distinct - (farm.solved - before))
        if prop == ROBUSTNESS and options.radius:
            result.radius = radius_search(planner, farm, cache, options)
        result.seconds = time.perf_counter() - start
        results.append(result)
    return results


def radius_search(planner: Planner, farm: LocalFarm, cache: ResultCache | None,
                  options: VerifyOptions) -> RadiusResult:
    """The radius search, on pools of its own when `options.radius_solver` is not the
    farm's mode (the two share their definitive answers)."""
    solver = options.radius_solver or farm.mode
    if solver == farm.mode:
        return certified_radii(planner, farm, cache, options)
    with LocalFarm(solver, farm.timeout, len(farm.pools)) as own:
        own.answers = farm.answers
        return certified_radii(planner, own, cache, options)


def _collect(source: Iterable[PlannedQuery], into: list[PlannedQuery]
             ) -> Iterable[PlannedQuery]:
    """Pass lazily planned queries on to the solvers, keeping them for the fold."""
    for q in source:
        into.append(q)
        yield q


def flip_screen(ckpt: Checkpoint, circuit: Circuit, task: str) -> FlipScreen | None:
    """The float screen ordering edge necessity's witness search over the task's domain
    (`Planner(likely_flips=...)`), or None for a checkpoint torch cannot run."""
    if ckpt.extras.get("program_heads"):
        return None
    t = get_task(task)
    return FlipScreen(ckpt.to_model(), circuit, t.domain(), t.candidates)


def plan_property(planner: Planner, prop: str, options: VerifyOptions
                  ) -> tuple[Iterable[PlannedQuery], list[Finding], int]:
    """A property's first-round queries (lazily, where possible), its findings, their count."""
    if prop == EDGE_NECESSITY:
        planned, findings = planner.edge_necessity()
        return planned, findings, len(planned)
    total = first_round_count(planner, prop, options)
    if prop == CONTENT_INVARIANCE:
        return planner.content_invariance(options.pairwise), [], total
    if prop == FUNCTIONAL_EQUIVALENCE:
        return planner.functional_equivalence(), [], total
    return planner.robustness(options.epsilon), [], total


def first_round_count(planner: Planner, prop: str, options: VerifyOptions) -> int:
    """How many first-round queries `plan_property` will plan, known before planning (edge
    necessity: one per retained edge, less those no input witnesses)."""
    if prop == EDGE_NECESSITY:
        return len(planner.circuit.edges)
    if prop == CONTENT_INVARIANCE:  # per class of m > 1 inputs: m, or m(m-1)/2 pairs
        sizes = Counter(planner.task.features(p) for p in planner.prompts).values()
        return sum(m * (m - 1) // 2 if options.pairwise else m  # m: one less if the anchor ties
                   for m in sizes if m > 1)
    if prop in (FUNCTIONAL_EQUIVALENCE, ROBUSTNESS):
        return len(planner.prompts)
    raise ValueError(f"unknown property {prop!r}")


def robustness_outcomes(planner: Planner, epsilons: Mapping[int, Fraction], farm: Farm,
                        cache: ResultCache | None, prop: str = ROBUSTNESS,
                        progress: str | None = None, timeout: float | None = None
                        ) -> tuple[list[Judged], dict[int, Outcome]]:
    """Robustness of each input at its ε: as `Planner.robustness_query` chooses (guided
    where the branch cannot change in the ball, else full, around a short centre), then
    fully encoded around r_E(x) where that first query is inconclusive.

    Returns every judged query (both tiers) and each input's final outcome.
    """
    judged: list[Judged] = []
    final: dict[int, Outcome] = {}
    plans = {i: functools.partial(planner.robustness_query, i, eps, prop)
             for i, eps in epsilons.items()}
    for label in ("", " (re-asked fully)"):
        if not plans:
            break
        tier: dict[int, PlannedQuery] = {}  # planned as the solvers ask for them
        records = farm.solve((tier.setdefault(i, plan()) for i, plan in plans.items()),
                             cache, progress and f"{progress}{label}", len(plans), timeout,
                             planner.model)
        plans = {}
        for i, q in tier.items():
            outcome = judge(q, records[q.hash], planner.model)
            judged.append((q, records[q.hash], outcome))
            final[i] = outcome
            if outcome.kind == "inconclusive":
                plans[i] = functools.partial(planner.robustness_query, i, epsilons[i], prop,
                                             "full")
    return judged, final


def certified_radii(planner: Planner, farm: Farm, cache: ResultCache | None,
                    options: VerifyOptions) -> RadiusResult:
    """Each input's largest certified ℓ∞ radius on [0, upper], to an absolute precision.

    `lo` is always backed by an UNSAT query (robust at lo, hence below it);
    `hi` by a replayed counterexample, or by an unknown (then the true radius
    may be larger). The search climbs from the property's ε, doubling while
    the input stays robust, then bisects: the encoding of a large ball settles
    little of the final norm's branch, and its queries cost the most (at ε = 1
    on the paper-size model both solvers time out), so it asks one only when
    the radius is that large. An error stops that input. Where `hi` is an
    unknown, the search stops at `UNDECIDED_PRECISION` of `lo` (or the asked
    precision, if coarser): each further step near an undecidable radius costs
    a timeout, and the true radius may lie above `hi` anyway.
    """
    n = len(planner.prompts)
    lo = [Fraction(0)] * n
    hi: list[Fraction | None] = [None] * n
    undecided = [False] * n  # whether hi is an unknown (not a counterexample)
    notes = [""] * n
    active = set(range(n))
    start = min(options.epsilon, options.radius_upper)
    while active:
        steps = {i: (lo[i] + hi[i]) / 2 if hi[i] is not None
                 else min(2 * lo[i], options.radius_upper) if lo[i] else start
                 for i in sorted(active)}
        _, outcomes = robustness_outcomes(
            planner, steps, farm, cache, RADIUS,
            f"{planner.task.name} radius" if options.progress else None, options.radius_timeout)
        for i, outcome in outcomes.items():
            if outcome.kind == "proved":
                lo[i] = steps[i]
            elif outcome.kind == "counterexample":
                hi[i], undecided[i] = steps[i], False
            elif outcome.kind == "error":
                notes[i] = f"error at eps {steps[i]}: {outcome.detail.get('reason')}"
                active.discard(i)
                continue
            else:
                hi[i], undecided[i] = steps[i], True
                notes[i] = "bisection passed an unknown: the radius may be larger"
            precision = max(options.radius_precision,
                            lo[i] * UNDECIDED_PRECISION if undecided[i] else 0)
            if lo[i] == options.radius_upper or hi[i] is not None and hi[i] - lo[i] <= precision:
                active.discard(i)
    per_input = [{"input": i, "prompt": list(planner.prompts[i]), "certified": str(lo[i]),
                  "certified_float": float(lo[i]),
                  "not_certified_at": None if hi[i] is None else str(hi[i]), "note": notes[i]}
                 for i in range(n)]
    return RadiusResult(str(options.radius_precision), str(options.radius_upper), per_input)
