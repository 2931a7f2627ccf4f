"""Real Z3 and cvc5 in warm processes: exact models, timeouts, races, cross-checks."""

import os
import signal
import threading
import time
from fractions import Fraction as F

import pytest

from encoders.smtlib import HEADER, Affine, Query, eq, ge, gt, le, lt, or_
from encoders.solvers import SolverDisagreement, SolverPool


@pytest.fixture(scope="module")
def race():
    with SolverPool("race", timeout=10) as pool:
        yield pool


@pytest.fixture(scope="module")
def both():
    with SolverPool("both", timeout=10) as pool:
        yield pool


def _sat_query() -> Query:
    q = Query()
    x, y = q.real("x", model=True), q.real("y", model=True)
    q.add(le(x * 5, F(22, 5)), ge(x, F(1, 7)), lt(x + y * 3, F(-2, 9)), gt(y, -10))
    return q


def _unsat_query() -> Query:
    q = Query()
    x = q.real("x")
    q.add(gt(x, F(1, 3)), lt(x * 3, 1))
    return q


def _pigeonhole(n: int) -> str:
    """n+1 reals in n integer holes, pairwise distinct: unsat, and hard for both solvers."""
    q = Query()
    xs = [q.real(f"p{i}") for i in range(n + 1)]
    q.add(*(or_(*(eq(x, h) for h in range(n))) for x in xs))
    q.add(*(or_(lt(a, b), gt(a, b)) for i, a in enumerate(xs) for b in xs[:i]))
    return q.text()


@pytest.mark.parametrize("mode", ["z3", "cvc5"])
def test_each_solver_sat_with_exact_model_and_unsat(mode):
    with SolverPool(mode, timeout=10) as pool:
        q = _sat_query()
        r = pool.solve(q.text(), q.model_vars)
        assert (r.status, r.winner) == ("sat", mode)
        x, y = r.model["x"], r.model["y"]
        assert isinstance(x, F) and x * 5 <= F(22, 5) and x >= F(1, 7)
        assert x + 3 * y < F(-2, 9) and y > -10
        assert pool.solve(_unsat_query().text()).status == "unsat"


def test_non_dyadic_constant_is_not_rounded(both):
    # 4.4 as a float is 4.40000000000000035527...: strictly above 22/5
    q = Query()
    x = q.real("x", model=True)
    q.add(ge(x, F(4.4)), le(x, F(22, 5)))
    assert both.solve(q.text()).status == "unsat"
    q = Query()
    x = q.real("x", model=True)
    q.add(gt(x, F(22, 5)), lt(x, F(4.4)))
    r = both.solve(q.text(), q.model_vars)
    assert r.status == "sat" and all(F(22, 5) < v.model["x"] < F(4.4) for v in r.verdicts)


def test_scaled_definitions_read_back_exact_values(both):
    """Chained definitions (each naming an integer multiple of its value) leave the
    model variable at its exact rational value in both solvers."""
    q = Query()
    x = q.real("x", model=True)
    q.add(eq(x, F(1, 3)))
    h = q.define("h", x * F(1, 100) + F(22, 5))
    g = q.define("g", h * F(3, 7) - F(5, 11))
    m = q.define("m", g * F(2, 9), model=True)
    assert g.coeffs == {"g": F(1, 7700)} and m.coeffs == {"m": 1}
    r = both.solve(q.text(), q.model_vars)
    expected = ((F(1, 300) + F(22, 5)) * F(3, 7) - F(5, 11)) * F(2, 9)
    assert r.status == "sat"
    assert all(v.model["m"] == expected and v.model["x"] == F(1, 3) for v in r.verdicts)


def test_timeout_is_unknown_never_unsat(race):
    r = race.solve(_pigeonhole(9), timeout=0.3)
    assert r.status == "unknown" and r.winner is None
    assert {v.reason for v in r.verdicts} == {"timeout"}
    assert race.solve(_unsat_query().text()).status == "unsat"


def test_race_has_a_winner_and_times(race):
    q = _sat_query()
    r = race.solve(q.text(), q.model_vars)
    assert r.status == "sat" and r.winner in ("z3", "cvc5") and r.model.keys() == {"x", "y"}
    assert r.seconds(r.winner) > 0


def _children(pid: int) -> str:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return f.read().strip()


def test_race_loser_without_an_interrupt_is_stopped_and_stays_warm(race):
    """cvc5 cannot be interrupted: its query runs in a fork of the warm process, and
    losing the race kills the fork, not the process (no respawn, no import)."""
    cvc5 = next(w for w in race._workers if w.name == "cvc5")
    pid = cvc5.proc.pid
    q = _sat_query()
    r = race._solve_each([q.text() if w.name == "z3" else _pigeonhole(9)
                          for w in race._workers], q.model_vars, 10)
    assert (r.status, r.winner) == ("sat", "z3") and r.seconds("cvc5") is None
    assert cvc5.proc.pid == pid and _children(pid) == ""  # the fork is gone, reaped
    both_answer = race._solve_each([_unsat_query().text()] * 2, (), 10)
    assert both_answer.status == "unsat" and cvc5.proc.pid == pid


def test_both_mode_records_agreement(both):
    r = both.solve(_unsat_query().text())
    assert r.status == "unsat" and sorted(v.solver for v in r.verdicts) == ["cvc5", "z3"]
    assert all(v.status == "unsat" for v in r.verdicts)


def test_disagreement_is_an_error(both):
    sat, unsat = _sat_query().text(), _unsat_query().text()
    with pytest.raises(SolverDisagreement) as e:
        both._solve_each([sat, unsat], (), 10)
    assert {v.status for v in e.value.verdicts} == {"sat", "unsat"}


def test_errors_and_crashes_are_unknown_and_the_process_replaced():
    with SolverPool("z3", timeout=20) as pool:
        r = pool.solve("(assert (> undeclared 0))(check-sat)")
        assert r.status == "unknown" and r.reason.startswith("z3: error")
        pid = pool._workers[0].proc.pid
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        r = pool.solve(_pigeonhole(10))
        assert r.status == "unknown" and "crashed" in r.reason
        idle = pool._workers[0].proc
        os.kill(idle.pid, signal.SIGKILL)  # dies while idle, before the next query
        idle.join()
        assert pool.solve(_unsat_query().text()).status == "unsat"
        procs = [w.proc for w in pool._workers]
    assert not any(p.is_alive() for p in procs)


def _chained(prefix_value: F, bound: F) -> tuple[str, tuple[str, ...]]:
    """A two-section query: a shared definition chain, then a claim about its end."""
    q = Query()
    q.section("prefix")
    x = q.define("x", Affine(const=prefix_value))
    y = q.define("y", x * 3 + 1)
    q.section("last")
    m = q.define("m", y - bound, model=True)
    q.add(gt(m, 0))
    return q.text(), q.model_vars


def test_z3_reuses_a_shared_prefix_and_answers_as_on_the_whole_text():
    """The prefix cache changes only speed: unsat stays unsat, sat comes with the model
    of the whole text, and each distinct prefix is reduced once per process."""
    import z3

    from encoders.solvers import _z3_backend
    from encoders.z3_prefixes import Z3Prefixes

    solve, _ = _z3_backend()
    prefixes = Z3Prefixes(z3)
    texts = [_chained(F(1, 3), bound) for bound in (F(1), F(5), F(3))]  # y = 2
    for text, _ in texts:
        assert prefixes.goal(text) is not None
    assert len(prefixes.states) == 1  # one prefix, reduced once
    assert [solve(t, v, 10) for t, v in texts] == [
        ("sat", {"m": F(1)}, ""), ("unsat", {}, ""), ("unsat", {}, "")]
    assert solve(*_chained(F(2), F(5)), 10) == ("sat", {"m": F(2)}, "")  # y = 7: new prefix
    with SolverPool("both", timeout=10) as pool:  # cvc5 reads the same text whole
        for text, model_vars in texts:
            pool.solve(text, model_vars)  # a disagreement would raise


def test_z3_parses_a_repeated_assertion_once_while_its_symbols_keep_their_sorts():
    """A last section's assertion seen before is not parsed again, unless a symbol it
    names is now declared with another sort: then its term is the new one."""
    import z3

    from encoders.z3_prefixes import Z3Prefixes

    def text(sort: str, *asserts: str) -> str:
        return (f"{HEADER}; section p0\n(declare-fun c () Real)\n(assert (= c 1))\n"
                f"; section last\n(declare-fun a () {sort})\n(declare-fun b () {sort})\n"
                + "".join(f"(assert {a})\n" for a in asserts) + "(check-sat)\n")

    def answer(goal: list) -> z3.CheckSatResult:
        s = z3.Solver()
        s.add(goal)
        return s.check()

    prefixes = Z3Prefixes(z3)
    assert answer(prefixes.goal(text("Real", "(= a b)", "(< a c)"))) == z3.sat
    shared = prefixes.lines.asts["(assert (= a b))"][0]
    assert answer(prefixes.goal(text("Real", "(= a b)", "(< a c)", "(> b c)"))) == z3.unsat
    assert prefixes.lines.asts["(assert (= a b))"][0] == shared  # parsed once
    assert len(prefixes.lines.asts) == 4  # the prefix section's line and the last's three
    assert answer(prefixes.goal(text("Bool", "(= a b)", "a", "(not b)"))) == z3.unsat
    term = z3.BoolRef(prefixes.lines.asts["(assert (= a b))"][0], z3.main_ctx())
    assert term.arg(0).sort() == z3.BoolSort()  # parsed again, with the Bool a and b
    assert len(prefixes.lines.asts) == 3  # the Real lines were dropped

    small = Z3Prefixes(z3, line_limit=2)  # a query with more lines than the table keeps
    assert answer(small.goal(text("Real", "(= a b)", "(< a c)", "(> b c)"))) == z3.unsat
    assert list(small.lines.asts) == ["(assert (< a c))", "(assert (> b c))"]


def _sectioned(head: str, prefix: str, last: str) -> str:
    return f"{head}; section p0\n{prefix}; section last\n{last}(check-sat)\n"


_BOOLS = "".join(f"(declare-fun {v} () Bool)\n" for v in "abc")
_QUOTED_REALS = "".join(f"(declare-fun |{v}| () Real)\n" for v in "abc")
_X = "(declare-fun x () Real)\n"


@pytest.mark.parametrize(("first", "second", "expected"), [
    # a definition in the header changes what a repeated line means
    (_sectioned(f"{HEADER}(define-fun c () Real 1.0)\n", f"{_X}(assert (= x c))\n",
                "(assert (> x 0))\n"),
     _sectioned(f"{HEADER}(define-fun c () Real (- 1.0))\n", f"{_X}(assert (= x c))\n",
                "(assert (< x 0))\n"), "sat"),
    # a quoted symbol is the plain one: Bool before, Real now
    (_sectioned(HEADER, f"{_X}(assert (= x 1))\n", f"{_BOOLS}(assert (distinct a b c))\n"),
     _sectioned(HEADER, f"{_X}(assert (= x 1))\n",
                f"{_QUOTED_REALS}(assert (distinct a b c))\n"), "sat"),
    # a line naming a symbol this text never declares: not a valid text
    (_sectioned(HEADER, f"{_X}(assert (= x 3))\n",
                "(declare-fun b () Bool)\n(assert (= b (> x 2)))\n(assert (not b))\n"),
     _sectioned(HEADER, f"{_X}(assert (= x 3))\n", "(assert (= b (> x 2)))\n(assert (not b))\n"),
     "error"),
    # a symbol used before its declaration, and one declared twice: not valid texts
    (_sectioned(HEADER, f"{_X}(assert (= x 3))\n", "(assert (> x 0))\n"),
     _sectioned(HEADER, f"{_X}(assert (= x 3))\n",
                "(assert (= y x))\n(declare-fun y () Real)\n(assert (< y 0))\n"), "error"),
    (_sectioned(HEADER, f"{_X}(assert (= x 3))\n", "(assert (> x 0))\n"),
     _sectioned(HEADER, f"{_X}(assert (= x 3))\n", f"{_X}(assert (< x 0))\n"), "error"),
])
def test_texts_not_written_by_query_are_solved_whole(first, second, expected):
    """z3's process reuses parsed lines only on `Query`'s texts (its header, plain symbols
    declared before use): another text after the first is answered as it reads whole,
    never unsat from a line parsed for the first."""
    import z3

    from encoders.solvers import _z3_backend

    solve, _ = _z3_backend()
    solve(first, (), 10)
    if expected == "error":
        with pytest.raises(z3.Z3Exception):  # a solver pool records this as unknown
            solve(second, (), 10)
    else:
        assert solve(second, (), 10)[0] == expected


def test_a_forked_query_that_crashes_or_raises_is_unknown_and_says_why():
    """The fork a cvc5 query runs in may die without answering: that is a crash, not an
    interrupt, and an exception is an error; neither is ever sat or unsat."""
    from encoders.solvers import _forked

    def crash(text, model_vars, timeout):
        os._exit(3)

    def fail(text, model_vars, timeout):
        raise ValueError("bad query")

    status, model, reason = _forked(crash)[0]("", (), 1.0)
    assert (status, model) == ("unknown", {}) and reason.startswith("crashed")
    assert _forked(fail)[0]("", (), 1.0)[:3] == ("unknown", {}, "error: ValueError: bad query")


def test_race_starts_the_usual_winner_alone_and_still_races_when_it_is_late():
    """After LEARN races of a kind that z3 won, z3 starts alone; cvc5 joins only when z3
    is late (here: a query z3 finds hard)."""
    from encoders.solvers import LEARN

    with SolverPool("race", timeout=20) as pool:
        easy = _unsat_query().text()
        for _ in range(LEARN):
            pool._solve_each([easy, _pigeonhole(9)], (), 20, kind="k")  # cvc5 stuck: z3 wins
        staggered = pool.solve(easy, kind="k")
        assert (staggered.status, staggered.winner) == ("unsat", "z3")
        assert [v.solver for v in staggered.verdicts] == ["z3"]  # cvc5 never started
        late = pool._solve_each([_pigeonhole(9), easy], (), 20, kind="k")
        assert (late.status, late.winner) == ("unsat", "cvc5")  # joined after z3's usual time


def test_the_faster_solver_leads_and_runs_alone_for_a_while():
    """The lead is the solver with the lower median time, however close; it runs alone
    for at least MIN_ALONE however fast it usually is, and never beyond a quarter of
    the time limit."""
    from encoders.solvers import LEARN, MIN_ALONE

    with SolverPool("race", timeout=20) as pool:
        for k in range(LEARN):
            pool.history.record("k", {"z3": 0.003 if k else 0.0001, "cvc5": 0.002})
        lead, alone, timed = pool._lead("k", 20)
        assert lead is not None and lead.name == "cvc5" and not timed
        assert alone == MIN_ALONE
        assert pool._lead("k", 0.4)[1] == 0.1


def test_a_solver_stopped_before_it_answers_never_leads_that_kind():
    """A loser stopped before answering has no time, only a bound: it counts as
    infinite, so the winner leads however its own times grow; where no one has
    answered alone, everyone races."""
    import math

    from encoders.solvers import LEARN

    with SolverPool("race", timeout=20) as pool:
        for _ in range(LEARN):
            pool.history.record("k", {"z3": 0.01, "cvc5": math.inf})
        for _ in range(LEARN):  # z3 alone, slower now than cvc5 was when stopped
            pool.history.record("k", {"z3": 0.5})
        lead, _, _ = pool._lead("k", 20)
        assert lead is not None and lead.name == "z3"
        for _ in range(LEARN):
            pool.history.record("k", {"z3": math.inf})
        assert pool._lead("k", 20) == (None, 0.0, frozenset())


def test_a_loser_runs_on_to_be_timed_only_while_it_may_be_close():
    """In the races that learn a kind, a loser may run as long again as the winner took,
    unless it was already stopped unanswered in one of the kind's recent races: then
    it is far behind, and running it on would only slow the winner."""
    import math

    with SolverPool("race", timeout=20) as pool:
        assert pool._lead("k", 20)[2] == frozenset({"z3", "cvc5"})
        pool.history.record("k", {"z3": 0.01, "cvc5": math.inf})
        assert pool._lead("k", 20) == (None, 0.0, frozenset({"z3"}))
        assert pool._lead("other", 20)[2] == frozenset({"z3", "cvc5"})  # per kind


def test_pools_that_share_a_race_history_learn_once():
    from encoders.solvers import LEARN, RaceHistory

    history = RaceHistory()
    with SolverPool("race", timeout=20, history=history) as a, \
            SolverPool("race", timeout=20, history=history) as b:
        for _ in range(LEARN):
            assert a._lead("k", 20) == (None, 0.0, frozenset({"z3", "cvc5"}))  # learning
            history.record("k", {"z3": 0.04, "cvc5": 0.02})
        lead, _, _ = b._lead("k", 20)  # b learned from a's races
        assert lead is not None and lead.name == "cvc5"


def test_a_forked_solver_is_timed_by_its_own_solve_not_the_fork():
    """A race compares solvers by their own times: a forked cvc5's verdict leaves out
    the fork, which a lead running unforked does not pay."""
    from encoders.solvers import _forked

    def slow(text, model_vars, timeout):
        time.sleep(0.05)
        return "unsat", {}, ""

    run, _ = _forked(slow)
    t0 = time.perf_counter()
    *answer, own = run("", (), 1.0)
    assert answer == ["unsat", {}, ""] and 0.05 <= own < time.perf_counter() - t0


def test_a_lead_without_an_interrupt_runs_unforked_and_is_replaced_when_it_loses():
    """cvc5, the usual winner here, starts alone in its warm process (no fork per query);
    when it is late and z3 joins and wins, its process is killed and the standby serves
    the next query."""
    from encoders.solvers import LEARN

    with SolverPool("race", timeout=20) as pool:
        easy = _unsat_query().text()
        for _ in range(LEARN):
            pool._solve_each([_pigeonhole(9), easy], (), 20, kind="k")  # z3 stuck: cvc5 wins
        cvc5 = next(w for w in pool._workers if w.name == "cvc5")
        alone = pool.solve(easy, kind="k")
        assert alone.winner == "cvc5" and [v.solver for v in alone.verdicts] == ["cvc5"]
        assert not cvc5.stoppable
        pid = cvc5.proc.pid
        late = pool._solve_each([easy, _pigeonhole(9)], (), 20, kind="k")
        assert (late.status, late.winner) == ("unsat", "z3")
        assert cvc5.proc.pid != pid and not _alive(pid)  # killed, the standby took over
        again = pool.solve(_unsat_query().text(), kind="k")
        assert again.status == "unsat"


def test_a_worker_whose_process_and_standby_were_killed_starts_a_fresh_one():
    """A kill of the whole process tree takes the standby too: the next query gets a
    freshly spawned process, not an error."""
    with SolverPool("z3", timeout=10) as pool:
        assert pool.solve(_unsat_query().text()).status == "unsat" and pool.started
        w = pool._workers[0]
        for proc in (w.proc, w._spare[0]):
            proc.kill()
            proc.join()
        assert pool.solve(_unsat_query().text()).status == "unsat"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_killing_a_cvc5_server_kills_the_fork_its_query_runs_in():
    """A server killed mid-query (hard time limit, close) takes its fork with it: no
    orphaned solver keeps a core busy."""
    with SolverPool("cvc5", timeout=30) as pool:
        w = pool._workers[0]
        w.submit((_pigeonhole(9), (), 30.0), 60)
        fork = 0
        for _ in range(200):
            if fork := int(_children(w.proc.pid) or 0):
                break
            time.sleep(0.01)
        assert fork and _alive(fork)
        w.restart()
        for _ in range(200):
            if not _alive(fork):
                break
            time.sleep(0.01)
        assert not _alive(fork)
        assert pool.solve(_unsat_query().text()).status == "unsat"  # the standby serves


def test_a_late_stop_never_interrupts_the_next_query():
    """A stop names the query it is for: one that arrives after its query finished is
    ignored, instead of killing whatever query runs next."""
    with SolverPool("cvc5", timeout=30) as pool:
        w = pool._workers[0]
        assert pool.solve(_unsat_query().text()).status == "unsat"
        w.control.send(w.seq)  # too late: that query has answered
        for _ in range(5):
            r = pool.solve(_pigeonhole(4))
            assert r.status == "unsat", r.reason
