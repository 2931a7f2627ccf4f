"""Re-deriving a proof record: trust nothing in it that can be computed again.

A record states that a program decides as a circuit does on a task's domain. The
checker needs only the checkpoint and the circuit: it parses the program, prints it
again (the source must be the record's, byte for byte), holds it to the circuit on
the whole domain once more (screen, exact where not decisive), runs the printed
source on every input, and replays every counterexample of the search exactly (its
logits must be the record's). Each disagreement is named; none means the record
checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from farm.distill.cegis import Judge, check_program, printed_agrees
from farm.distill.dsl import parse_program, program_source
from farm.distill.record import FORMAT
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.tasks.registry import get_task


def recheck(record: Mapping[str, Any], ckpt: Checkpoint, circuit: Circuit) -> list[str]:
    """Every way `record` fails to hold for this checkpoint and circuit (empty: it checks)."""
    try:
        return _recheck(record, ckpt, circuit)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise FarmError(f"malformed proof record: {type(err).__name__}: {err}") from None


def _recheck(record: Mapping[str, Any], ckpt: Checkpoint, circuit: Circuit) -> list[str]:
    if record.get("format") != FORMAT:
        raise FarmError(f"not a proof record of {FORMAT}: format {record.get('format')!r}")
    if record["status"] != "proved":
        return [f"the record proves nothing: status {record['status']}"]
    problems = []
    if record["checkpoint_sha256"] != ckpt.sha256:
        problems.append(f"checkpoint sha256 {ckpt.sha256} is not the record's "
                        f"{record['checkpoint_sha256']}")
    edges = [list(e) for e in circuit.ordered_edges()]
    if record["circuit"]["edges"] != edges:
        problems.append(f"the circuit's edges {edges} are not the record's")
    task = get_task(record["task"])
    program = parse_program(record["program"]["dsl"])
    if program_source(program) != record["program"]["source"]:
        problems.append("the recorded source is not the program's printed form")
    if program.size != record["program"]["size"]:
        problems.append(f"the program has size {program.size}, the record says "
                        f"{record['program']['size']}")
    judge = Judge(ckpt, circuit, task)
    check = check_program(program, judge)
    if not check.proved:
        cx = check.counterexamples[0]
        problems.append(f"the program disagrees with the circuit on {check.disagreements} "
                        f"input(s), e.g. {cx.prompt}: program {cx.program}, circuit {cx.circuit}")
    try:
        printed_agrees(program, task)
    except FarmError as err:
        problems.append(str(err))
    for cx in record["search"]["examples"]:
        prompt = tuple(cx["prompt"])
        logits = {str(t): str(v) for t, v in judge.logits(prompt).items()}
        if logits != cx["logits"] or judge.decision(prompt) != cx["circuit"]:
            problems.append(f"counterexample {prompt} does not replay: exact logits {logits}, "
                            f"the record's {cx['logits']}")
        elif cx["circuit"] == cx["program"]:
            problems.append(f"counterexample {prompt} is no disagreement")
    return problems

