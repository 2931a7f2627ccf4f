"""Edge necessity's witnesses searched by the units where they are decided: each unit
searches its range for the edges still lacking a witness, the driver stops asking for an
edge once it has one, and an edge no input flips is FAILED, searched by every unit.

The circuit is tests/test_verify.py's bracket circuit on `bracket_type:len=6,fillers=4`
(128 inputs), where the trained model needs 7 of its 9 edges: `mlp_0->attn_1` and
`emb->logits` change no decision.
"""

from __future__ import annotations

import pytest

from actors.units import run_units, start_unit_actors
from encoders.properties import EDGE_NECESSITY, NO_WITNESS
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.tasks.registry import get_task
from farm.units.fold import fold_units
from farm.units.unit import circuit_hash, split
from farm.units.verdict import decide_unit
from farm.verify.evaluate import Evaluator
from tests.conftest import embedded_ray
from tests.test_verify import BRACKET

FAMILY = "bracket_type:len=6,fillers=4"
UNNEEDED = {("mlp_0", "attn_1"), ("emb", "logits")}


@pytest.fixture(scope="module")
def job(trained):
    ckpt = Checkpoint.from_model(trained.model.cpu())
    circuit = Circuit(2, 1, "block", frozenset(BRACKET[0]), FAMILY)
    return ckpt, circuit, Evaluator(ckpt, circuit, get_task(FAMILY), progress=False)


def _witnessed(result) -> dict[tuple[str, str], int]:
    return {tuple(w["edge"]): w["input"] for w in result.witnesses}


def test_units_find_what_the_whole_domain_search_finds(job):
    """Searched unit by unit (every edge in every unit), the same edges are witnessed and
    the same fail as the whole-domain search says, each witness flipping exactly."""
    ckpt, circuit, evaluator = job
    whole = evaluator.edge_necessity()
    units = split(FAMILY, circuit_hash(circuit), 128, 16)
    verdicts = [decide_unit(evaluator, u, edges=circuit.ordered_edges()) for u in units]
    (folded,) = fold_units(evaluator, verdicts, [EDGE_NECESSITY])
    assert folded.status == whole.status == "FAILED"
    assert set(_witnessed(folded)) == set(_witnessed(whole)) == set(circuit.edges) - UNNEEDED
    assert [c["subject"] for c in folded.counterexamples] == [
        c["subject"] for c in whole.counterexamples]
    assert all(c["reason"] == NO_WITNESS for c in folded.counterexamples)
    for edge, i in _witnessed(folded).items():
        assert evaluator.differs(i, circuit.without(edge))


def test_an_edge_some_unit_did_not_search_is_not_called_unnecessary(job):
    ckpt, circuit, evaluator = job
    units = split(FAMILY, circuit_hash(circuit), 128, 64)
    verdicts = [decide_unit(evaluator, units[0], edges=circuit.ordered_edges()),
                decide_unit(evaluator, units[1])]
    with pytest.raises(FarmError, match="units did not search for one"):
        fold_units(evaluator, verdicts, [EDGE_NECESSITY])


def test_unit_actors_search_until_every_needed_edge_has_a_witness(job, tmp_path):
    ckpt, circuit, evaluator = job
    with embedded_ray(resources={"solver": 2}):
        actors = start_unit_actors(ckpt, {FAMILY: circuit}, 2)
        try:
            run = run_units(actors, {FAMILY: circuit}, tmp_path, 8, search=True)
        finally:
            actors.kill()
    verdicts = run.verdicts[FAMILY]
    (result,) = fold_units(evaluator, verdicts, [EDGE_NECESSITY])
    needed = set(circuit.edges) - UNNEEDED
    assert result.status == "FAILED" and result.failing == 2
    assert set(_witnessed(result)) == needed  # one witness per needed edge
    assert {c["subject"] for c in result.counterexamples} == {
        f"edge {a}->{b}" for a, b in UNNEEDED}  # none for the unneeded ones
    for edge, i in _witnessed(result).items():
        assert evaluator.differs(i, circuit.without(edge))
    searched = [{s.edge for s in v.searched} for v in verdicts]
    assert all(UNNEEDED <= s for s in searched)  # every unit searched them in vain
    asked_for_needed = sum(len(s & needed) for s in searched)
    assert asked_for_needed < len(verdicts) * len(needed)  # the driver stopped asking
