"""The proof record of a distillation: the program, what was proved of it, and how.

One JSON object a reader (or `farm check`, later) can take apart without this code:
the program in DSL form and as Python source, the claim in words, the counts behind
it, and the search that led there, every counterexample with its exact logits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from farm.atomic import write_text_atomic
from farm.distill.cegis import Distillation
from farm.distill.dsl import program_source
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit

FORMAT = "farm.distill/1"
METHOD = ("exhaustive over the finite domain: each input decided by the sound interval "
          "screen (float64 with rigorous rounding bounds around the exact margin), or by "
          "the exact rational evaluator where the screen is not decisive; every "
          "counterexample replayed exactly")


def proof_record(result: Distillation, ckpt: Checkpoint, checkpoint_dir: str,
                 circuit: Circuit, circuit_file: str | None) -> dict[str, Any]:
    """The record; the paths as given (`farm check` looks there unless told otherwise)."""
    program, final = result.program, (result.checks[-1] if result.checks else None)
    status = "proved" if result.proved else "refuted" if program else "not found"
    return {
        "format": FORMAT,
        "task": result.task,
        "status": status,
        "claim": (f"for every input of {result.task}'s domain, the circuit's decision in exact "
                  "arithmetic (the unique best candidate logit; a tie decides nothing) "
                  "equals program(prompt)") if result.proved else None,
        "method": METHOD,
        "reason": result.reason,
        "checkpoint_sha256": ckpt.sha256,
        "checkpoint_path": checkpoint_dir,
        "circuit": {"file": circuit_file,
                    "sha256": _file_sha256(circuit_file),
                    "edges": [list(e) for e in circuit.ordered_edges()]},
        "program": None if program is None else {
            "dsl": program.to_json(), "size": program.size, "source": program_source(program)},
        "evidence": None if final is None else {
            "domain": final.domain, "checked": final.checked, "by_screen": final.by_screen,
            "by_exact": final.by_exact, "disagreements": final.disagreements,
            "printed_source_run_on": result.python_checked,
            "counterexamples": [cx.to_json() for cx in final.counterexamples]},
        "search": {
            "max_size": result.max_size, "per_round": result.per_round,
            "candidates_checked": len(result.checks),
            "programs_enumerated": result.enumerated,
            "counterexamples_used": len(result.examples),
            "candidates": [{"program": str(c.program), "size": c.program.size,
                            "checked": c.checked, "disagreements": c.disagreements}
                           for c in result.checks],
            "examples": [cx.to_json() for cx in result.examples],
            "seconds": round(result.seconds, 3)},
        "cube_queries": "not used: the domain was covered input by input (SMT cubes of the "
                        "program beside the circuit belong to a later issue)",
    }


def write_record(record: dict[str, Any], path: str | Path) -> None:
    write_text_atomic(Path(path), json.dumps(record, indent=1) + "\n")


def read_record(path: str | Path) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FarmError(f"{path}: not a JSON proof record ({err})") from None
    if not isinstance(record, dict):
        raise FarmError(f"{path}: a proof record is a JSON object")
    return record


def _file_sha256(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
