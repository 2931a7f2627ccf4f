"""Z3 and cvc5 behind one call, each in a warm child process, raced or cross-checked.

Both solvers parse the same SMT-LIB2 text (see `encoders.smtlib`), so a backend
is only a parse-check-read-model adapter registered in `BACKENDS`. Each runs
in its own spawned process that imports its solver once and then serves
queries over a pipe: a process per query would cost more than most queries.
A race loser is stopped in place: z3 through its interrupt (from a control
thread), cvc5, which has no interrupt in its Python API, by killing the fork of
the warm process its query runs in. A process that ignores its time limit is
killed and replaced by a warm standby.

Soundness rules, enforced here: a timeout, crash or exception is "unknown",
never "unsat"; a sat/unsat disagreement raises `SolverDisagreement`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from typing import Literal

from encoders.z3_prefixes import Z3Prefixes

__all__ = ["BACKENDS", "MODES", "RaceHistory", "RaceResult", "SolverDisagreement", "SolverPool",
           "SolverUnavailable", "Status",
           "Verdict"]

Status = Literal["sat", "unsat", "unknown"]
Model = dict[str, Fraction]
SolveFn = Callable[[str, Sequence[str], float], tuple[Status, Model, str]]
Backend = tuple[SolveFn, Callable[[], None] | None]  # (solve, interrupt or None)


@dataclass(frozen=True)
class Verdict:
    """One solver's answer to one query; `model` is exact and set only when sat."""

    status: Status
    solver: str
    seconds: float
    model: Model = field(default_factory=dict)
    reason: str = ""  # why unknown: "timeout", "crashed: ...", the solver's own reason


@dataclass(frozen=True)
class RaceResult:
    """The pool's answer: the deciding verdict plus every solver's verdict, for audit.

    `winner` is the solver whose definitive answer was taken (None if none was
    definitive); a loser stopped before it answered has no verdict.
    """

    status: Status
    winner: str | None
    verdicts: tuple[Verdict, ...]

    @property
    def model(self) -> Model:
        return next((v.model for v in self.verdicts if v.solver == self.winner), {})

    @property
    def reason(self) -> str:
        return "; ".join(f"{v.solver}: {v.reason}" for v in self.verdicts if v.reason)

    def seconds(self, solver: str) -> float | None:
        """Wall time `solver` took, or None if it did not answer."""
        return next((v.seconds for v in self.verdicts if v.solver == solver), None)


class SolverUnavailable(RuntimeError):
    """A solver process could not be started: the pool is broken, the query unanswered.

    Not an answer of any kind: the pool's host decides what to do (a local farm
    records an error; a Ray solver actor exits, so that Ray restarts it and its
    shard goes to another actor)."""


class SolverDisagreement(RuntimeError):
    """One solver said sat and another unsat: a solver or encoding bug, never resolved here."""

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        super().__init__("solvers disagree: " + ", ".join(
            f"{v.solver}={v.status}" for v in verdicts))
        self.verdicts = tuple(verdicts)


# --- backends: run inside the child process; each factory imports its solver once ---


def _z3_backend() -> Backend:
    import z3

    # Our queries define most variables by equalities chained from constants (the
    # prompt's embedding). Propagating those values and eliminating the equations
    # before search cuts a full-circuit query from ~20 s to under 1 s; the
    # default strategy runs simplex over the whole chain of big rationals.
    strategy = z3.Then("simplify", "propagate-values", "solve-eqs", "ctx-simplify", "smt")
    prefixes = Z3Prefixes(z3)

    def solve(text: str, model_vars: Sequence[str], timeout: float) -> tuple[Status, Model, str]:
        deadline = time.perf_counter() + timeout
        s = strategy.solver()
        try:
            goal = prefixes.goal(text)
        except z3.Z3Exception as e:  # the whole text below still decides the query ...
            if "cancel" in str(e).lower():
                raise  # ... unless it was stopped
            goal = None
        if goal is not None:
            s.set("timeout", max(1, int((deadline - time.perf_counter()) * 1000)))
            s.add(goal)
            r = s.check()
            if r != z3.sat:  # a sat model is read from the whole text below
                return ("unsat", {}, "") if r == z3.unsat else (
                    "unknown", {}, _unknown_reason(s.reason_unknown()))
            s = strategy.solver()
        s.set("timeout", max(1, int((deadline - time.perf_counter()) * 1000)))
        s.from_string(text)
        r = s.check()
        if r == z3.sat:
            m = s.model()
            vals = (m.eval(z3.Real(v), model_completion=True) for v in model_vars)
            model = {v: Fraction(x.numerator_as_long(), x.denominator_as_long())
                     for v, x in zip(model_vars, vals, strict=True)}
            return "sat", model, ""
        if r == z3.unsat:
            return "unsat", {}, ""
        return "unknown", {}, _unknown_reason(s.reason_unknown())

    return solve, z3.main_ctx().interrupt


def _cvc5_backend() -> Backend:
    import cvc5

    def solve(text: str, model_vars: Sequence[str], timeout: float) -> tuple[Status, Model, str]:
        tm = cvc5.TermManager()
        s, sm = cvc5.Solver(tm), cvc5.SymbolManager(tm)
        s.setOption("tlimit-per", str(max(1, int(timeout * 1000))))
        s.setOption("produce-models", "true")  # z3 always has them; do not depend on the text
        parser = cvc5.InputParser(s, sm)
        parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, text, "query")
        while not (cmd := parser.nextCommand()).isNull():
            if cmd.getCommandName() != "check-sat":  # we call checkSat to get a Result
                cmd.invoke(s, sm)
        r = s.checkSat()
        if r.isSat():
            terms = {str(t): t for t in sm.getDeclaredTerms()}
            return "sat", {v: s.getValue(terms[v]).getRealValue() for v in model_vars}, ""
        if r.isUnsat():
            return "unsat", {}, ""
        return "unknown", {}, _unknown_reason(str(r.getUnknownExplanation()))

    return solve, None


def _unknown_reason(raw: str) -> str:
    """Name a solver's own time limit "timeout", as the pool names its hard limit."""
    return "timeout" if any(w in raw.lower() for w in ("timeout", "canceled")) else raw


BACKENDS: dict[str, Callable[[], Backend]] = {"z3": _z3_backend, "cvc5": _cvc5_backend}
UNINTERRUPTIBLE = frozenset({"cvc5"})  # backends whose interrupt is None: `_forked`
MODES = (*BACKENDS, "race", "both")
LEARN = 4  # races of a kind the pool remembers (and must have seen) to pick a lead
MIN_ALONE = 0.25  # seconds a lead runs alone at least, however fast it usually is
EXPLORE = 32  # one race in EXPLORE of each kind starts every solver at once
LOSER_EXTRA = 1.0  # in such a race a loser may run this many times the winner's time more


def _forked(solve: SolveFn) -> Backend:
    """`solve` run in a fork of this warm process per query, so that killing the fork
    stops a solver that has no interrupt, and the warm process lives on.

    Forking a process that has already imported its solver costs milliseconds;
    a fresh process (the alternative after a kill) costs a spawn and an import,
    hundreds of milliseconds on a busy machine: per lost race, that was most of
    the race's time. The fork shares the server's process group, so killing the
    group (`_stop`) never leaves it running.
    """
    lock = threading.Lock()
    running, stopped = [0], [False]  # the fork's pid while it runs; whether `stop` killed it

    def run(text: str, model_vars: Sequence[str], timeout: float) -> tuple:
        read, write = os.pipe()
        with lock:  # a `stop` cannot fall between the fork and the pid being known
            stopped[0] = False
            pid = os.fork()
            if pid == 0:  # the fork: answer through the pipe and vanish, whatever happens
                try:
                    os.close(read)
                    t0 = time.perf_counter()
                    try:
                        answer = solve(text, model_vars, timeout)
                    except Exception as e:
                        answer = ("unknown", {}, f"error: {type(e).__name__}: {e}")
                    with os.fdopen(write, "wb") as out:  # with the solver's own time
                        pickle.dump((*answer, time.perf_counter() - t0), out)
                finally:
                    os._exit(0)
            running[0] = pid
        os.close(write)
        with os.fdopen(read, "rb") as answer_pipe:
            data = answer_pipe.read()
        with lock:  # reaped under the lock, so `stop` never signals a reused pid
            running[0] = 0
            _, status = os.waitpid(pid, 0)
        if data:
            return pickle.loads(data)
        if stopped[0]:
            return "unknown", {}, "interrupted"
        return "unknown", {}, f"crashed: wait status {status}"

    def stop() -> None:
        with lock:
            if running[0]:
                stopped[0] = True
                os.kill(running[0], signal.SIGKILL)

    return run, stop


def _serve(name: str, conn: Connection, control: Connection) -> None:
    """Child main loop: import the solver, say ready, answer (seq, stoppable, text, vars,
    timeout) with (seq, verdict) until None.

    A control thread interrupts the query numbered by a control message, if it
    is still the one in progress (a late message must not stop the next one):
    through the solver's own interrupt where it has one (it runs in C with the
    GIL released), else by killing the fork the query runs in (`_forked`). The
    interrupted query answers "unknown". A query the parent will not stop in
    place (`stoppable` false: a solver running alone) skips the fork. The
    process leads its own process group, so that a kill of the group takes any
    fork with it.
    """
    os.setpgrp()
    solve, interrupt = BACKENDS[name]()
    in_place = solve
    if interrupt is None:
        solve, interrupt = _forked(solve)
    lock, current = threading.Lock(), [0]  # the seq of the query in progress, 0 if none

    def listen() -> None:
        try:
            while (seq := control.recv()) is not None:
                with lock:
                    if seq == current[0]:
                        interrupt()
        except (EOFError, OSError):
            pass  # the parent is gone; the main loop ends too

    threading.Thread(target=listen, daemon=True).start()
    try:
        conn.send("ready")
    except OSError:
        return  # closed before it was ready: nobody to serve
    while (job := _next_job(conn)) is not None:
        seq, stoppable, *query = job
        t0 = time.perf_counter()
        with lock:
            current[0] = seq
        own: list[float] = []  # a fork's own time: the race compares solvers by it
        try:
            status, model, reason, *own = (solve if stoppable else in_place)(*query)
        except Exception as e:  # a parse or solver error is an answer too: unknown
            status, model, reason = "unknown", {}, f"error: {type(e).__name__}: {e}"
        finally:
            with lock:
                current[0] = 0
        seconds = own[0] if own else time.perf_counter() - t0
        try:
            conn.send((seq, Verdict(status, name, seconds, model, reason)))
        except OSError:
            return  # the parent is gone


def _next_job(conn: Connection) -> tuple | None:
    """The next job, or None at the end: asked to stop, or the parent died (no traceback)."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


# --- parent side ---


class _Worker:
    """One warm child process serving one backend, with a warm standby behind it.

    A race loser is interrupted in place (see `_serve`). A child that does not
    answer the interrupt, or overruns its time limit, is killed; the standby,
    already past its solver import, takes its place at once and a new standby
    starts in the background, so a kill costs the next query nothing.
    """

    def __init__(self, ctx: mp.context.BaseContext, name: str) -> None:
        self.ctx, self.name = ctx, name
        self.proc, self.conn, self.control = self._spawn()
        self.ready = False
        self._spare = self._spawn()
        self.seq = 0  # number of the last query sent: answers and stops carry it
        self.stoppable = True  # whether that query can be stopped in place (see `submit`)
        self.started = False  # whether any of its processes ever said it was ready

    def _spawn(self) -> tuple[mp.process.BaseProcess, Connection, Connection]:
        conn, child = self.ctx.Pipe()
        control, child_control = self.ctx.Pipe()
        proc = self.ctx.Process(target=_serve, args=(self.name, child, child_control),
                                name=f"solver-{self.name}", daemon=True)
        proc.start()
        child.close()
        child_control.close()
        return proc, conn, control

    def submit(self, job: tuple[str, tuple[str, ...], float], start_timeout: float,
               stoppable: bool = True) -> None:
        """Send a query; a child found dead (killed while idle or starting) is replaced by
        its standby, and that one, if dead too (a kill of the whole process tree), by a
        fresh process.

        `stoppable=False` says the query will rarely be stopped (its solver runs
        alone): a solver without an interrupt then answers in its warm process,
        not a fork of it (milliseconds per query), and is killed if it must stop."""
        self.seq += 1
        self.stoppable = stoppable
        for attempt in range(3):  # the process, its standby, a fresh one
            if self._ready(start_timeout):
                try:
                    self.conn.send((self.seq, stoppable, *job))
                    return
                except OSError:
                    pass
            if attempt < 2:
                self.restart()
        raise SolverUnavailable(f"{self.name} solver process did not start (see its stderr)")

    def _ready(self, timeout: float) -> bool:
        if not self.proc.is_alive():
            return False  # died while idle: its "ready" may still sit in the pipe
        if not self.ready:
            try:
                self.ready = self.conn.poll(timeout) and self.conn.recv() == "ready"
            except (EOFError, OSError):
                pass  # died while importing or starting
            self.started |= self.ready
        return self.ready

    def receive(self) -> Verdict:
        """The answer to the query in progress (raises EOFError/OSError if the child died)."""
        seq, verdict = self.conn.recv()
        if seq != self.seq:  # never expected: every sent query's answer is read or killed
            self.restart()
            return Verdict("unknown", self.name, 0.0, reason=f"crashed: answer {seq} to "
                           f"query {self.seq}, process replaced")
        return verdict

    def stop_query(self, patience: float = 1.0) -> Verdict | None:
        """Stop the query in progress: interrupt it in place, or kill and swap in the standby.

        Returns the answer if one came (it may have finished before the interrupt:
        a definitive answer still counts, e.g. to reveal a disagreement)."""
        if not self.stoppable and self.name in UNINTERRUPTIBLE:
            late = self.receive() if self.conn.poll(0) else None  # answered meanwhile
            self.restart()
            return late
        try:
            self.control.send(self.seq)
            if self.conn.poll(patience):
                return self.receive()
        except (EOFError, OSError):
            pass  # died meanwhile: replace it
        self.restart()
        return None

    def restart(self) -> None:
        """Kill the child (it may be deep inside a solver call); the standby takes over."""
        _stop(self.proc, self.conn, self.control)
        self.proc, self.conn, self.control = self._spare
        self.ready = False
        self._spare = self._spawn()

    def close(self) -> None:
        for proc, conn, control in ((self.proc, self.conn, self.control), self._spare):
            try:
                conn.send(None)
                control.send(None)
                proc.join(1.0)
            except OSError:
                pass  # the child is already gone
            _stop(proc, conn, control)


def _stop(proc: mp.process.BaseProcess, conn: Connection, control: Connection) -> None:
    """Kill the child and its process group (a cvc5 fork included), then reap it."""
    if proc.is_alive():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # not yet its own group leader: the child alone
            proc.kill()
    proc.join()
    conn.close()
    control.close()


class RaceHistory:
    """Each solver's recent times on each kind of query, and how many races of the kind
    were run. Pools that share one (a local farm's) learn a kind once, not once each:
    every race run to learn it starts every solver."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # pools of one farm race in threads of their own
        self._times: dict[str, dict[str, deque[float]]] = {}
        self._races: dict[str, int] = {}

    def start(self, kind: str) -> tuple[int, dict[str, list[float]]]:
        """Count a race of `kind`; its number and each solver's recent times."""
        with self._lock:
            count = self._races[kind] = self._races.get(kind, 0) + 1
            return count, {n: list(t) for n, t in self._times.get(kind, {}).items()}

    def record(self, kind: str, seconds: Mapping[str, float]) -> None:
        """The time of each solver that ran: its own if it answered, else infinite (a
        solver stopped by a faster one's answer: how long it ran says little of how
        long it needs, and the bound must never make it the lead)."""
        with self._lock:
            times = self._times.setdefault(kind, {})
            for name, t in seconds.items():
                times.setdefault(name, deque(maxlen=LEARN)).append(t)


class SolverPool:
    """Warm solver processes answering SMT-LIB2 queries, one query at a time.

    mode: a backend name (one solver), "race" (all backends; the first sat or
    unsat wins; a loser gets a quarter of the winner's time, at most `grace`
    seconds, to finish, so a close call is cross-checked for free, and is then
    stopped) or "both" (all backends run to completion and cross-check).

    A race staggers its starts per `kind` of query once the pool knows each
    solver's time on it (`RaceHistory`): the solver with the lowest median of
    its last `LEARN` times starts alone, and the others join only if it has not
    answered within four times that median, and at least `MIN_ALONE` (or
    answered unknown). Races that start everyone (the first `LEARN` of a kind,
    then one in `EXPLORE`, to notice a change) let a loser run as long again
    as the winner took, so a close second's time is measured; a far one's
    counts as infinite (its time when stopped, a mere bound, once made cvc5
    lead functional equivalence, where z3 is ten times faster, and be killed
    for it). A solver already stopped unanswered in one of the kind's recent
    races is far behind, not close: it gets no such extra time, which on 2
    cores only slowed the winner (the first races of a kind are its coldest
    queries, run by both pools at once). A solver's time is its own: a forked
    cvc5's excludes the fork, which a lead does not pay. Choosing by wins
    instead handed close contests to whoever won the first races, on 2 cores
    often the slower solver (robustness, 2 heads, quote: the race took 3.1 s
    where cvc5 alone took 1.5 s).
    No global state: one pool per process or Ray actor; `close()` (or `with`)
    leaves no child behind. Its host must be allowed children: a
    `ProcessPoolExecutor` worker or Ray actor is, a daemonic
    `multiprocessing.Pool` worker is not.
    """

    def __init__(self, mode: str = "race", timeout: float = 60.0, grace: float = 0.05,
                 start_method: str = "spawn", start_timeout: float = 60.0,
                 history: RaceHistory | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"solver mode {mode!r} not in {MODES}")
        self.mode, self.timeout, self.grace = mode, timeout, grace
        self.start_timeout = start_timeout
        ctx = mp.get_context(start_method)
        names = list(BACKENDS) if mode in ("race", "both") else [mode]
        self._workers = [_Worker(ctx, n) for n in names]
        self.history = history or RaceHistory()

    @property
    def started(self) -> bool:
        """Whether its solver processes ever started: if they die later, something killed
        them; if never, the environment cannot run them."""
        return any(w.started for w in self._workers)

    def solve(self, text: str, model_vars: Sequence[str] = (),
              timeout: float | None = None, kind: str | None = None) -> RaceResult:
        """Decide `text`; `model_vars` are read back exactly when sat. `kind` names a
        class of similar queries (e.g. a property), for the race's staggered starts."""
        return self._solve_each([text] * len(self._workers), model_vars, timeout, kind)

    def _lead(self, kind: str | None,
              timeout: float) -> tuple[_Worker | None, float, frozenset[str]]:
        """The worker to start alone and how long it runs alone, or (None, 0, measured)
        for a race that starts everyone; `measured`: in a race run to learn the solvers'
        times, those that may finish as losers (see `_collect`): every solver not
        stopped unanswered in the kind's recent races."""
        if self.mode != "race" or kind is None:
            return None, 0.0, frozenset()
        count, times = self.history.start(kind)
        names = [w.name for w in self._workers]
        measured = frozenset(n for n in names if math.inf not in times.get(n, ()))
        if any(len(times.get(n, ())) < LEARN for n in names) or count % EXPLORE == 0:
            return None, 0.0, measured
        median = {n: statistics.median(times[n]) for n in names}
        lead = min(self._workers, key=lambda w: median[w.name])
        if median[lead.name] == math.inf:  # no one answers this kind alone: race
            return None, 0.0, measured
        return lead, min(max(4 * median[lead.name], MIN_ALONE), timeout / 4), frozenset()

    def _solve_each(self, texts: Sequence[str], model_vars: Sequence[str],
                    timeout: float | None, kind: str | None = None) -> RaceResult:
        """Send `texts[i]` to worker i (the same text, except in tests of the cross-check)."""
        timeout = self.timeout if timeout is None else timeout
        jobs = [(w, (text, tuple(model_vars), timeout))
                for w, text in zip(self._workers, texts, strict=True)]
        lead, alone, measured = self._lead(kind, timeout)
        waiting = [(w, j) for w, j in jobs if lead is not None and w is not lead]
        pending: dict[Connection, _Worker] = {}
        stoppable = self.mode == "race" and lead is None  # else it runs alone or to the end
        started = [w.name for w, _ in jobs if lead is None or w is lead]
        try:
            for w, j in jobs:
                if lead is None or w is lead:
                    w.submit(j, self.start_timeout, stoppable)
                    pending[w.conn] = w  # after submit: a restart replaces conn
            verdicts = self._collect(pending, waiting, timeout, alone, measured, started)
        except BaseException:
            for w in pending.values():  # a query left in flight would answer the next one
                w.restart()
            raise
        result = _decide(verdicts)
        if kind is not None and self.mode == "race" and result.winner is not None:
            self.history.record(kind, {n: next((v.seconds for v in verdicts if v.solver == n
                                                and v.status != "unknown"), math.inf)
                                       for n in started})
        return result

    def _collect(self, pending: dict[Connection, _Worker],
                 waiting: list[tuple[_Worker, tuple[str, tuple[str, ...], float]]],
                 timeout: float, alone: float, measured: frozenset[str] = frozenset(),
                 started: list[str] | None = None) -> list[Verdict]:
        """Wait for the started workers' verdicts, start the waiting ones if the lead is
        late or unsure (adding them to `started`), and stop or kill whoever is left once
        the race is decided. A loser among `measured` may run as long again as the
        winner took, so that a close second's time is learned."""
        t0 = time.perf_counter()
        # the solvers enforce `timeout` themselves; the hard limit is for those that overrun
        slack = max(1.0, 0.1 * timeout)
        deadline = t0 + timeout + slack
        verdicts: list[Verdict] = []
        while pending or waiting:
            until = min(deadline, t0 + alone) if waiting else deadline
            ready = wait(list(pending), max(0.0, until - time.perf_counter()))
            for conn in ready:
                w = pending.pop(conn)
                verdicts.append(self._receive(w, t0))
            decided = any(v.status != "unknown" for v in verdicts)
            if waiting and not decided and (not pending or time.perf_counter() >= t0 + alone):
                for w, j in waiting:  # the lead is late, or unsure: race
                    w.submit(j, self.start_timeout)
                    pending[w.conn] = w
                    if started is not None:
                        started.append(w.name)
                waiting = []
                deadline = time.perf_counter() + timeout + slack  # their full time limit
                continue
            if not ready:
                break
            if self.mode == "race" and decided:
                waiting = []  # never started: nothing to stop
                now = time.perf_counter()  # a loser close behind is worth a cross-check
                timed = any(w.name in measured for w in pending.values())
                deadline = min(deadline, now + (LOSER_EXTRA * (now - t0) if timed
                                                else min(self.grace, (now - t0) / 4)))
        decided = any(v.status != "unknown" for v in verdicts)
        while pending:
            _, w = pending.popitem()
            if self.mode == "race" and decided:  # lost the race: stop it, keep it warm
                late = w.stop_query()
                if late is not None and late.status != "unknown":
                    verdicts.append(late)  # finished after all: it still cross-checks
            else:  # overran its own time limit: kill it
                w.restart()
                verdicts.append(Verdict("unknown", w.name, time.perf_counter() - t0,
                                        reason="timeout"))
        return verdicts

    def _receive(self, w: _Worker, t0: float) -> Verdict:
        try:
            return w.receive()
        except (EOFError, OSError) as e:  # the child died mid-query (e.g. out of memory)
            w.proc.join(1.0)
            code = w.proc.exitcode
            w.restart()
            return Verdict("unknown", w.name, time.perf_counter() - t0,
                           reason=f"crashed: exit {code} ({type(e).__name__})")

    def close(self) -> None:
        for w in self._workers:
            w.close()

    def __enter__(self) -> SolverPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decide(verdicts: list[Verdict]) -> RaceResult:
    """First definitive verdict wins; sat against unsat is an error, never a choice."""
    definitive = [v for v in verdicts if v.status != "unknown"]
    if len({v.status for v in definitive}) > 1:
        raise SolverDisagreement(verdicts)
    if not definitive:
        return RaceResult("unknown", None, tuple(verdicts))
    return RaceResult(definitive[0].status, definitive[0].solver, tuple(verdicts))
