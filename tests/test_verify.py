"""Local verification end to end: real Z3 and cvc5, a trained model, exact replay of every SAT."""

import json
import time
from fractions import Fraction as F

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoders.cache import ResultCache
from encoders.properties import (
    CONTENT_INVARIANCE,
    EDGE_NECESSITY,
    FUNCTIONAL_EQUIVALENCE,
    PROPERTIES,
    ROBUSTNESS,
    Planner,
)
from farm.cli import main
from farm.commands.verify import parse_properties
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from farm.model.circuit import Circuit, save_circuit
from farm.model.exact import ExactModel, band_norm
from farm.model.tracing import TraceReader, record_traces
from farm.tasks.registry import get_task
from farm.verify.local import (
    LocalFarm,
    VerifyOptions,
    first_round_count,
    plan_property,
    verify_task,
)
from tests.conftest import random_model, weights_of

ALL = [FUNCTIONAL_EQUIVALENCE, EDGE_NECESSITY, CONTENT_INVARIANCE, ROBUSTNESS]
# ACDC's circuits for the `trained` model (farm extract); the subsets hold a witness per edge
QUOTE = ([("emb", "attn_0"), ("emb", "attn_1"), ("attn_0", "attn_1"), ("attn_1", "logits")],
         [0, 1, 15, 23])
BRACKET = ([("emb", "attn_0"), ("emb", "mlp_0"), ("attn_0", "mlp_0"), ("attn_0", "attn_1"),
            ("mlp_0", "attn_1"), ("emb", "logits"), ("attn_0", "logits"), ("mlp_0", "logits"),
            ("attn_1", "logits")], [0, 1, 5, 37])
QUIET = VerifyOptions(progress=False)


@pytest.fixture(scope="module")
def model(trained):
    return ExactModel(trained.model.cfg, weights_of(trained.model))


def planner(model, task, edges, inputs):
    return Planner(model, Circuit(2, 1, "block", frozenset(edges), task), get_task(task),
                   inputs=inputs)


@pytest.fixture(scope="module")
def cvc5():
    with LocalFarm("cvc5", timeout=60, jobs=2) as farm:
        yield farm


def by_property(results):
    return {r.property: r for r in results}


def test_quote_circuit_verified_and_a_cached_rerun_solves_nothing(model, cvc5, tmp_path):
    p = planner(model, "quote_close", *QUOTE)
    first = by_property(verify_task(p, ALL, cvc5, ResultCache(tmp_path), QUIET))
    assert {r.status for r in first.values()} == {"VERIFIED"}, first
    assert first[EDGE_NECESSITY].queries == 4 and first[FUNCTIONAL_EQUIVALENCE].unsat == 4
    solved = cvc5.solved
    again = by_property(verify_task(p, ALL, cvc5, ResultCache(tmp_path), QUIET))
    assert cvc5.solved == solved  # every answer came from the Parquet cache
    assert {r.status for r in again.values()} == {"VERIFIED"}
    assert again[FUNCTIONAL_EQUIVALENCE].cached == 4


def test_a_damaged_cache_part_and_a_cached_answer_that_does_not_replay_are_solved_again(
        model, tmp_path):
    """`farm verify --cache` on a directory with a truncated part and a cached robustness
    sat with no η: the part is set aside with one warning, the bad answer discarded (not a
    KeyError, not an ERROR forever), exactly their queries solved again, and it verifies."""
    from dataclasses import replace

    p = planner(model, "quote_close", QUOTE[0], [0, 1])
    props = [FUNCTIONAL_EQUIVALENCE, ROBUSTNESS]

    def run():  # a fresh farm each time, as each `farm verify` is: only the cache carries
        with LocalFarm("cvc5", timeout=60, jobs=1) as farm:
            cache = ResultCache(tmp_path)
            results = verify_task(p, props, farm, cache, QUIET)
        return farm.solved, cache.warnings, [r.status for r in results]

    assert run() == (4, [], ["VERIFIED", "VERIFIED"])
    fe_part, rob_part = sorted(tmp_path.glob("part-*.parquet"))  # one part per property
    rob_hash = pq.read_table(rob_part).column("query_hash")[0].as_py()
    with ResultCache(tmp_path) as cache:  # a later part: it wins on opening
        cache.put([replace(cache.get(rob_hash), status="sat", model={})])
    fe_part.write_bytes(fe_part.read_bytes()[:200])

    solved, warnings, statuses = run()
    assert (solved, statuses) == (3, ["VERIFIED", "VERIFIED"])  # 2 lost, 1 not trusted
    assert len(warnings) == 1 and f"cache part {fe_part} is damaged" in warnings[0]
    assert fe_part.with_name(fe_part.name + ".damaged").exists()
    assert run() == (0, [], ["VERIFIED", "VERIFIED"])  # healed


def test_an_interrupted_solve_caches_every_answer_it_has(model, tmp_path):
    """Ctrl-C mid-property: the answers so far reach the cache whole, so a rerun resumes."""
    queries = list(planner(model, "quote_close", QUOTE[0], list(range(8))).functional_equivalence())
    with LocalFarm("z3", timeout=60, jobs=1) as farm:
        def interrupted():
            yield from queries[:6]
            while farm.solved < 2:
                time.sleep(0.01)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            farm.solve(interrupted(), ResultCache(tmp_path), total=6)  # chunks of 3
    kept = {r.query_hash: r.status for r in ResultCache(tmp_path)}
    assert 2 <= len(kept) < 6 and set(kept.values()) == {"unsat"}
    assert set(kept) <= {q.hash for q in queries[:6]}


def test_first_round_counts_are_known_before_planning(model):
    """What `farm run`'s progress bar starts from: the count each property then plans."""
    p = planner(model, "quote_close", *QUOTE)
    for pairwise in (False, True):
        options = VerifyOptions(progress=False, pairwise=pairwise)
        for prop in ALL:
            source, findings, total = plan_property(p, prop, options)
            assert first_round_count(p, prop, options) == total + len(findings)
            assert total == len(list(source))


@pytest.mark.slow  # ~90 s on 2 shared cores: nine edges, two encoded runs per EN query
def test_bracket_circuit_verified_except_two_unneeded_edges(model, cvc5):
    results = by_property(verify_task(planner(model, "bracket_type", *BRACKET), ALL, cvc5,
                                      None, QUIET))
    for prop in (FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE, ROBUSTNESS):
        assert results[prop].status == "VERIFIED", results[prop]
    en = results[EDGE_NECESSITY]
    assert en.status == "FAILED" and en.unsat == 7  # the other seven edges are proved needed
    assert sorted(c["subject"] for c in en.counterexamples) == [
        "edge emb->logits", "edge mlp_0->attn_1"]


def test_content_invariance_holds_each_member_to_its_class_anchor(model):
    """A broken circuit (the MLP alone: it reads only the last position, so its decisions
    ignore the opener). Each member is proved or refuted to decide as its class's anchor
    decides exactly; identical texts (FE's, where the anchor decides P(x), or another
    prompt's with the same last token) are solved once."""
    p = planner(model, "quote_close", [("emb", "mlp_0"), ("mlp_0", "logits")], [0, 1, 4, 5, 7])
    decisions = [1 if p.margin(r) > 0 else -1 for r in p.results]
    assert decisions == [1, 1, -1, -1, 1]  # anchors: input 0 (opener 9), input 1 (opener 10)
    assert [p.reference_sign(x) for x in p.prompts] == [1, -1, 1, -1, -1]
    with LocalFarm("z3", timeout=60, jobs=1) as farm:
        fe, ci = verify_task(p, [FUNCTIONAL_EQUIVALENCE, CONTENT_INVARIANCE], farm, None, QUIET)
        # FE: 5 texts. CI: all but input 4's +1 claim had been asked (by FE, or by input 0
        # and 2, whose last tokens inputs 1 and 3 share)
        assert farm.solved == 5 + 1 and ci.cached == 2
    assert fe.status == ci.status == "FAILED" and ci.errors == 0
    assert sorted(c["subject"] for c in ci.counterexamples) == [
        "input 2 [1, 2, 5, 9, 5, 7] decides as anchor 0",
        "input 3 [1, 2, 5, 10, 5, 7] decides as anchor 1"]


def test_removing_the_output_edge_gives_replayed_counterexamples_both_solvers_agree(model):
    edges = QUOTE[0][:-1]  # attn_1 -> logits carries the opener to the output
    p = planner(model, "quote_close", edges + [("emb", "logits")], [0, 1])
    with LocalFarm("both", timeout=60, jobs=1) as both:
        (fe,) = verify_task(p, [FUNCTIONAL_EQUIVALENCE], both, None, QUIET)
    assert fe.status == "FAILED" and fe.errors == 0
    ((_, cex),) = [(c["prompts"][0], c) for c in fe.counterexamples]
    exact = p.model.run([tuple(cex["prompts"][0])], p.circuit)[0]
    target, alternate = p.task.target(exact.prompt), p.task.alternate(exact.prompt)
    assert [str(exact.logits[target] - exact.logits[alternate])] == cex["exact_margins"]
    assert exact.logits[target] <= exact.logits[alternate]  # SPEC's margin: the wrong decision
    assert fe.wins == {"z3": 0, "cvc5": 0} or sum(fe.wins.values()) == 2
    assert fe.solver_seconds["z3"] > 0 and fe.solver_seconds["cvc5"] > 0  # both answered


def test_large_epsilon_gives_an_eta_that_flips_the_decision_exactly(model, cvc5):
    p = planner(model, "quote_close", QUOTE[0], [0, 1])
    (rob,) = verify_task(p, [ROBUSTNESS], cvc5, None, VerifyOptions(epsilon=F(2),
                                                                    progress=False))
    assert rob.status == "FAILED" and rob.errors == 0 and rob.counterexamples
    for cex in rob.counterexamples:
        prompt = tuple(cex["prompts"][0])
        eta = [F(e) for e in cex["eta"]]
        assert max(map(abs, eta)) <= 2
        r = p.results[p.prompts.index(prompt)].final_residual
        normed, _ = band_norm([a + b for a, b in zip(r, eta, strict=True)],
                              *model.norm_final, model.cfg.half_low, model.cfg.half_high)
        logits = model.lm_head(normed)
        target, alternate = p.task.target(prompt), p.task.alternate(prompt)
        assert logits[target] <= logits[alternate]  # the decision really flips
        assert F(cex["exact_margin"]) == logits[target] - logits[alternate]  # as SPEC says


def test_a_point_of_the_larger_ball_outside_the_epsilon_ball_is_asked_again_around_r(
        model, cvc5):
    """A first query's ball (around a short centre) holds more than the ε-ball: a SAT
    point there but outside the ε-ball is inconclusive, never a counterexample, and
    the input asked again around r_E(x) itself is decided."""
    from datetime import UTC, datetime

    from encoders.cache import Record
    from farm.verify.local import judge, robustness_outcomes

    p = planner(model, "quote_close", QUOTE[0], [0])
    first = p.robustness_query(0, F(1, 100))
    r = first.replay
    assert r.centre != r.residual and r.ball > r.epsilon
    push = [r.ball if c >= x else -r.ball for c, x in zip(r.centre, r.residual, strict=True)]
    sat = Record(first.hash, ROBUSTNESS, "quote_close", first.subject, "sat", "cvc5", None, 0.0,
                 {**dict(zip(r.eta_vars, push, strict=True)), "m0": F(-1)}, "", datetime.now(UTC))
    outcome = judge(first, sat, model)
    assert outcome.kind == "inconclusive" and "outside the ε-ball" in outcome.detail["reason"]
    assert max(abs(F(e)) for e in outcome.detail["eta"]) > r.epsilon  # η from r_E(x)
    again = p.robustness_query(0, F(1, 100), encoding="full")
    assert again.replay.centre == again.replay.residual and again.replay.ball == F(1, 100)
    assert robustness_outcomes(p, {0: F(1, 100)}, cvc5, None)[1][0].kind == "proved"


def test_a_pool_whose_solver_cannot_start_answers_nothing(model):
    """A solver process that never says it is ready is no answer: the local farm records
    an error (a Ray solver actor that had worked exits instead, to be restarted)."""
    from encoders.solvers import SolverPool, SolverUnavailable
    from farm.verify.local import _solve_one

    q = next(planner(model, "quote_close", QUOTE[0], [0]).functional_equivalence())
    with LocalFarm("z3", timeout=10, jobs=1) as farm:
        farm.pools[0].close()
        farm.pools[0] = SolverPool("z3", 10, start_timeout=1e-4)  # never ready in time
        with pytest.raises(SolverUnavailable, match="did not start"):
            _solve_one(farm.pools[0], q)
        farm.pools[0].close()
        farm.pools[0] = SolverPool("z3", 10, start_timeout=1e-4)
        rec = farm.solve([q])[q.hash]
    assert rec.status == "error" and "did not start" in rec.reason


def test_a_timeout_is_unknown_never_verified(model):
    p = planner(model, "quote_close", *QUOTE)
    with LocalFarm("z3", timeout=0.001, jobs=1) as farm:
        (fe,) = verify_task(p, [FUNCTIONAL_EQUIVALENCE], farm, None, QUIET)
    assert fe.status == "UNKNOWN" and fe.unknown > 0


def _widen(rec):
    s = rec["attn_support"]
    rec["attn_support"] = sorted({*s, 0 if s != [0] else 1})


def _flip_sign(rec):
    k = next(k for k, s in enumerate(rec["signs"]) if s)
    rec["signs"][k] = -rec["signs"][k]


def _flip_act(rec):
    rec["act_signs"][0] = not rec["act_signs"][0]


TAMPERED = {  # one branch record of input 1's final position, edited
    "sparsemax support": ("quote_close", QUOTE[0], "attn_1.head0.sparsemax", _widen),
    "band norm sign": ("quote_close", QUOTE[0], "attn_1.norm", _flip_sign),
    "LeakyReLU sign": ("bracket_type", BRACKET[0], "mlp_0.act", _flip_act),
}


def tampered_planner(model, task, edges, site, edit, path):
    """Inputs 0 and 1 planned from a trace file whose record of `site` at input 1's final
    position was edited and written back."""
    circuit = Circuit(2, 1, "block", frozenset(edges), task)
    table = record_traces(model, get_task(task).domain()[:2], path, circuit)
    rows = table.to_pylist()
    (rec,) = [r for r in rows if (r["input"], r["position"], r["site"]) == (1, 5, site)]
    edit(rec)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    p = Planner(model, circuit, get_task(task), inputs=[0, 1], traces=TraceReader(path))
    assert p.branches[p.prompts[1]][5][site] != p.results[1].trace[5][site]
    return p


@pytest.mark.parametrize("what", TAMPERED)
def test_a_tampered_trace_file_is_an_error_never_verified(model, cvc5, tmp_path, what):
    p = tampered_planner(model, *TAMPERED[what], tmp_path / "trace.parquet")
    (fe,) = verify_task(p, [FUNCTIONAL_EQUIVALENCE], cvc5, None, QUIET)
    assert fe.status == "ERROR" and (fe.unsat, fe.sat, fe.errors) == (1, 1, 1)
    (problem,) = fe.problems  # the guard failed, the solver said SAT, the replay disagrees
    assert problem["subject"].startswith("input 1 ") and "encoder bug" in problem["reason"]


def test_a_tampered_final_norm_only_sends_robustness_to_the_full_encoding(model, cvc5, tmp_path):
    """The guided query's guard fails (SAT); its η does not replay on the recorded branch,
    so the input is re-asked fully encoded, a proof that owes nothing to the trace."""
    p = tampered_planner(model, "quote_close", QUOTE[0], "logits.norm", _flip_sign,
                         tmp_path / "trace.parquet")
    (rob,) = verify_task(p, [ROBUSTNESS], cvc5, None, QUIET)
    assert rob.status == "VERIFIED" and (rob.queries, rob.sat, rob.escalated) == (3, 1, 1)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, trained):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_checkpoint(Checkpoint.from_model(trained.model), path)
    return path


def test_cli_verifies_robustness_of_the_full_model_and_writes_json(checkpoint_dir, tmp_path,
                                                                   capsys):
    out = tmp_path / "result.json"
    code = main(["verify", "--checkpoint", str(checkpoint_dir), "--circuit", "full", "--task",
                 "quote_close", "--properties", "rob", "--solver", "cvc5", "--quiet",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "robustness" in printed and "VERIFIED" in printed
    (result,) = json.loads(out.read_text())["results"]  # the screen proves most, solvers the rest
    assert result["status"] == "VERIFIED" and sum(result["routes"].values()) == 128
    assert result["routes"]["screen"] > 64 and result["unsat"] == result["routes"].get("solver", 0)


def test_cli_plans_from_a_trace_file_and_refuses_one_of_another_circuit(checkpoint_dir, model,
                                                                      tmp_path, capsys):
    trace = tmp_path / "trace.parquet"
    record_traces(model, get_task("quote_close").domain(), trace,
                  Circuit.full(2, 1, "block", "quote_close"),
                  load_checkpoint(checkpoint_dir).sha256)
    out = tmp_path / "result.json"
    args = ["verify", "--checkpoint", str(checkpoint_dir), "--task", "quote_close",
            "--properties", "rob", "--solver", "cvc5", "--quiet", "--trace", str(trace)]
    code = main([*args, "--circuit", "full", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and f"branches from {trace}" in printed, printed
    report = json.loads(out.read_text())
    assert report["trace"] == str(trace) and report["results"][0]["status"] == "VERIFIED"
    save_circuit(Circuit(2, 1, "block", frozenset(QUOTE[0]), "quote_close"),
                 tmp_path / "quote.json")
    assert main([*args, "--circuit", str(tmp_path / "quote.json")]) == 2
    assert "trace.parquet was recorded for another circuit" in capsys.readouterr().err


def test_cli_refuses_a_trace_of_another_checkpoint(checkpoint_dir, tmp_path, capsys):
    """Right prompts and circuit, other weights: refused before any planning."""
    other = Checkpoint.from_model(random_model(seed=1))
    trace = tmp_path / "other.parquet"
    record_traces(ExactModel(other.config, other.weights), get_task("quote_close").domain(),
                  trace, Circuit.full(2, 1, "block", "quote_close"), other.sha256)
    code = main(["verify", "--checkpoint", str(checkpoint_dir), "--circuit", "full", "--task",
                 "quote_close", "--properties", "rob", "--solver", "cvc5", "--quiet",
                 "--trace", str(trace)])
    ours = load_checkpoint(checkpoint_dir).sha256
    assert code == 2 and other.sha256 != ours
    assert (f"other.parquet was recorded for checkpoint {other.sha256}, not {ours}"
            in capsys.readouterr().err)


def test_properties_are_named_as_in_a_job_spec_with_spaces_or_commas():
    assert parse_properties(["fe", "en,rob"]) == [
        FUNCTIONAL_EQUIVALENCE, EDGE_NECESSITY, ROBUSTNESS]
    assert parse_properties(["content_invariance", "ci"]) == [CONTENT_INVARIANCE]
    assert parse_properties(["all"]) == list(PROPERTIES.values())
    for bad in (["fe", "all"], [","], ["fe", "xx"]):
        with pytest.raises(FarmError, match="unknown property"):
            parse_properties(bad)


@pytest.mark.parametrize("args, message", [
    (["--task", "nope", "--circuit", "full"], "unknown task"),
    (["--task", "quote_close", "--circuit", "{missing}"], "does not exist"),
    (["--task", "quote_close", "--circuit", "{broken}"], "not valid JSON"),
    (["--task", "quote_close", "--circuit", "{three_layers}"],
     "names node(s) attn_2, mlp_2, which the checkpoint"),
    (["--task", "bracket_type", "--circuit", "{quote}"], "extracted for task quote_close"),
    (["--task", "quote_close", "--circuit", "{mean}"], "extracted under mean ablation"),
    (["--task", "quote_close", "--circuit", "full", "--properties", "fe,xx"], "xx"),
    (["--task", "quote_close", "--circuit", "full", "--trace", "{missing}"],
     "cannot read trace file"),
])
def test_cli_refuses_bad_input_clearly(checkpoint_dir, tmp_path, capsys, args, message):
    (tmp_path / "broken.json").write_text("{")
    save_circuit(Circuit.full(3), tmp_path / "three_layers.json")
    save_circuit(Circuit(2, 1, "block", frozenset(QUOTE[0]), "quote_close"),
                 tmp_path / "quote.json")
    save_circuit(Circuit(2, 1, "block", frozenset(QUOTE[0]), "quote_close",
                         {"ablation": "mean"}), tmp_path / "mean.json")
    files = {k: str(tmp_path / f"{k}.json") for k in ("missing", "broken", "three_layers",
                                                      "quote", "mean")}
    args = [a.format(**files) for a in args]
    try:
        status = main(["verify", "--checkpoint", str(checkpoint_dir), *args])
    except SystemExit as refused:  # argparse refuses an argument (a task) as it reads it
        status = refused.code
    assert status == 2
    assert message in capsys.readouterr().err


def test_job_tables_show_solver_time_not_an_empty_wall_time():
    """A job interleaves properties across actors: its table sums the solvers' time."""
    import dataclasses

    from farm.commands.verify import format_table
    from farm.verify.local import fold

    result = dataclasses.replace(fold("functional_equivalence", "quote_close", []),
                                 solver_seconds={"z3": 1.25, "cvc5": 0.5}, seconds=0.0)
    job, local = format_table([result], solver_time=True), format_table([result])
    assert "solver s" in job and job.splitlines()[-1].endswith("1.75")
    assert "time s" in local and local.splitlines()[-1].endswith("0.00")


def test_certified_radius_is_proved_at_its_value_and_refuted_just_above(model, cvc5):
    """Each input's radius is backed by an UNSAT answer at `certified` and, below the
    upper bound, by a replayed flip at `not_certified_at`, within the precision; a
    circuit that decides some input wrongly has radius 0 there."""
    from farm.verify.local import certified_radii, robustness_outcomes

    opts = VerifyOptions(progress=False, radius=True, radius_upper=F(1, 8),
                         radius_precision=F(1, 100))
    broken = [e for e in QUOTE[0] if e != ("attn_1", "logits")] + [("emb", "logits")]
    for edges, inputs in ((QUOTE[0], [0, 1]), (broken, list(range(8)))):
        p = planner(model, "quote_close", edges, inputs)
        radii = certified_radii(p, cvc5, None, opts)
        assert radii.minimum == min(F(r["certified"]) for r in radii.per_input)
        for r in radii.per_input:
            i, lo = r["input"], F(r["certified"])
            hi = r["not_certified_at"]
            if hi is None:
                assert lo == opts.radius_upper
            else:
                assert F(hi) - lo <= opts.radius_precision and r["note"] == ""
                _, at_hi = robustness_outcomes(p, {i: F(hi)}, cvc5, None)
                assert at_hi[i].kind == "counterexample"
            if lo:
                _, at_lo = robustness_outcomes(p, {i: lo}, cvc5, None)
                assert at_lo[i].kind == "proved"
    assert radii.minimum == 0  # the broken circuit decides some of its inputs wrongly


def test_the_radius_search_runs_on_its_own_solver(model):
    """A z3 farm asked for radii by cvc5 solves only the property's own queries; the
    radius search's go to cvc5 pools (sharing answers), and its radii are proved."""
    p = planner(model, "quote_close", QUOTE[0], [0, 1])
    opts = VerifyOptions(progress=False, radius=True, radius_upper=F(1, 8),
                         radius_precision=F(1, 16), radius_solver="cvc5")
    with LocalFarm("z3", timeout=60, jobs=1) as z3_farm:
        (result,) = verify_task(p, [ROBUSTNESS], z3_farm, None, opts)
        assert z3_farm.solved == result.queries == 2
    assert result.status == "VERIFIED"
    assert all(F(r["certified"]) >= opts.epsilon for r in result.radius.per_input)


def test_a_radius_query_that_times_out_certifies_nothing_and_says_so(model, cvc5):
    """--radius-timeout bounds each query of the search; an unknown is never a proof. The
    one step here (ε = 1/4: seconds to decide) times out after 1 ms, which ends a search
    to precision 1/4 at certified radius 0, noted as possibly larger."""
    from farm.verify.local import certified_radii

    p = planner(model, "quote_close", QUOTE[0], [0])
    opts = VerifyOptions(epsilon=F(1, 4), progress=False, radius=True, radius_upper=F(1, 2),
                         radius_precision=F(1, 4), radius_timeout=0.001)
    (r,) = certified_radii(p, cvc5, None, opts).per_input
    assert r["certified"] == "0" and "may be larger" in r["note"]
