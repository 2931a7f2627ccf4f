"""The motif DSL expresses a program for every shipped family: Max-of-K's largest token
and induction's token after the previous occurrence, each held to the task's reference
on its whole domain, printed as Python that runs alike, and found by the search."""

from __future__ import annotations

import numpy as np

from farm.distill import compile_program, parse_program, program_source
from farm.distill.dsl import AfterPrevious, At, Largest, Program
from farm.distill.search import Motifs, smallest_consistent
from farm.tasks.registry import get_task
from farm.tasks.task import Task


def disagreements(program: Program, task: Task, batch: int = 1 << 20) -> np.ndarray:
    """Domain indices where the program's answer is not the task's target."""
    domain, bad = task.domain(), []
    for start in range(0, len(domain), batch):
        prompts = domain.batch(start, start + batch)
        bad.append(start + np.flatnonzero(program.evaluate(prompts) != task.targets(prompts)))
    return np.concatenate(bad)


def printed_runs_alike(program: Program, task: Task, n: int = 500) -> None:
    run = compile_program(program_source(program))
    domain = task.domain()
    rng = np.random.default_rng(0)
    prompts = domain.batch(0, len(domain)) if len(domain) <= n else np.stack(
        [domain.batch(int(i), int(i) + 1)[0] for i in rng.choice(len(domain), n)])
    for prompt, answer in zip(prompts.tolist(), program.evaluate(prompts).tolist(), strict=True):
        assert run(tuple(prompt)) == answer
    assert parse_program(program.to_json()) == program


def test_largest_is_max_of_k_on_the_whole_default_domain():
    task = get_task("max_of_k")  # k=4, vocab=64: 16,777,216 prompts
    assert len(disagreements(Largest(), task)) == 0
    printed_runs_alike(Largest(), task)
    assert program_source(Largest()).endswith("return max(prompt)\n")


def test_after_previous_is_induction_wherever_the_pattern_does_not_repeat_the_query():
    task = get_task("induction")  # [BOS, p1..p4, p1..p3]: the answer is p4
    prompts = task.domain().batch(0, len(task.domain()))
    assert len(disagreements(At(task.period), task)) == 0
    bad = disagreements(AfterPrevious(), task)
    query = prompts[:, -1]
    repeated = (prompts[:, 1 + task.period - 1:-1] == query[:, None]).any(axis=1)
    # the latest earlier occurrence is the period-aligned one unless the query's token
    # also stands later (p4, or the second copy): there the motif may read another token
    assert np.isin(bad, np.flatnonzero(repeated)).all()
    assert 0 < len(bad) < len(prompts) // 2
    printed_runs_alike(AfterPrevious(), task)


def test_cegis_against_the_reference_recovers_each_families_program():
    """The search loop of `distill`, with the task's reference in the circuit's place."""
    for spec, expected in (("max_of_k:k=4,vocab=16", Largest()),
                           ("induction:vocab=4,period=3", At(3)),
                           ("quote_close", At(3))):
        task = get_task(spec)
        motifs, domain = Motifs.of(task), task.domain()
        prompts = domain.batch(0, len(domain))
        targets = task.targets(prompts)
        examples = np.zeros((0, task.seq_len), dtype=np.int64)
        for _ in range(20):
            program, _ = smallest_consistent(motifs, examples, task.targets(examples), 3)
            bad = np.flatnonzero(program.evaluate(prompts) != targets)
            if not len(bad):
                break
            examples = np.concatenate([examples, prompts[bad[:4]]])
        assert program == expected, spec
    assert all(c.name.startswith("token_") for c in Motifs.of(get_task("max_of_k")).classes)
