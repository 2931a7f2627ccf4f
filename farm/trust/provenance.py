"""A certified circuit's provenance fields, re-derived from the checkpoint.

`farm extract` records how ACDC found a circuit (the threshold, the necessity
pass's removals, candidate KL and agreement). A certificate that carries those
fields signs them, so the checker runs the same steps again: ACDC at the stated
threshold from the full circuit, then the necessity pass, must give exactly the
certified edges; the candidate KL and float agreement are scored again in
float64 on the CPU (the KL to a relative 1e-9: float64 sums may round otherwise
on another machine); an exact agreement is replayed in Fractions. A field that
cannot be re-derived is named, never taken on trust.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from farm.discovery.acdc import METRIC, CandidateScorer, acdc, necessity_pass
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint
from farm.model.circuit import Circuit
from farm.model.exact import ExactModel
from farm.model.train import single_thread
from farm.tasks.registry import get_task

FLOAT_FIELDS = ("threshold", "necessity_pruned", "candidate_kl", "float_agreement")
CONSTANT_FIELDS = {"metric": METRIC, "min_agreement": 1, "ablation": "zero"}
CHECKED_ELSEWHERE = ("checkpoint_sha256",)  # against the certificate's checkpoint
KNOWN = (*FLOAT_FIELDS, "exact_agreement", *CONSTANT_FIELDS, *CHECKED_ELSEWHERE)
KL_RELATIVE = 1e-9


def provenance_problems(ckpt: Checkpoint, circuit: Circuit, where: str) -> list[str]:
    """Each provenance field of `circuit` that the checkpoint does not give again, named."""
    meta = circuit.metadata
    problems = [f"{where}: field {k!r} is not one the checker can re-derive" for k in meta
                if k not in KNOWN]
    problems += [f"{where}: {k} is {meta[k]!r}, not {v!r}" for k, v in CONSTANT_FIELDS.items()
                 if k in meta and meta[k] != v]
    if circuit.n_heads != ckpt.config.n_heads:
        problems.append(f"{where}: n_heads is {circuit.n_heads}, the model has "
                        f"{ckpt.config.n_heads}")
        return problems
    if "exact_agreement" in meta:
        problems += _exact_agreement(ckpt, circuit, meta["exact_agreement"], where)
    if any(k in meta for k in FLOAT_FIELDS):
        problems += _acdc_fields(ckpt, circuit, meta, where)
    return problems


def _exact_agreement(ckpt: Checkpoint, circuit: Circuit, stated: Any, where: str) -> list[str]:
    task = get_task(circuit.task)
    prompts = task.domain()
    rows = ExactModel(ckpt.config, ckpt.weights).run(prompts, circuit)
    right = sum(r.margin(task.target(p), task.alternate(p)) > 0
                for r, p in zip(rows, prompts, strict=True))
    return [] if stated == right / len(prompts) else [
        f"{where}: exact_agreement is {stated!r}, exact replay gives {right}/{len(prompts)}"]


def _acdc_fields(ckpt: Checkpoint, circuit: Circuit, meta: Mapping[str, Any],
                 where: str) -> list[str]:
    """ACDC at the stated threshold, the necessity pass, and the scores, run again."""
    if ckpt.extras.get("program_heads"):
        return [f"{where}: {', '.join(k for k in FLOAT_FIELDS if k in meta)} cannot be "
                "re-derived: torch cannot run this checkpoint"]
    threshold, pruned = meta.get("threshold"), meta.get("necessity_pruned")
    if type(threshold) not in (int, float) or not math.isfinite(threshold):
        return [f"{where}: threshold is {threshold!r}; the ACDC fields need the threshold "
                "they were found at, a number"]
    scorer = CandidateScorer(ckpt.to_model(), get_task(circuit.task), "zero", "cpu")
    problems: list[str] = []
    with single_thread(scorer.tokens.device):
        full = Circuit.full(circuit.n_layers, circuit.n_heads, circuit.granularity, circuit.task,
                            circuit.attention_only)
        selected, _ = acdc(scorer, full, threshold)
        found = selected if pruned is None else necessity_pass(scorer, selected)[0]
        kl, agreement, _ = scorer.score(circuit)
    if found.edges != circuit.edges:
        problems.append(f"{where}: ACDC at threshold {threshold}"
                        + ("" if pruned is None else " and the necessity pass")
                        + f" gives edges {sorted(found.edges)}, not the circuit's")
    elif pruned is not None and pruned != [list(e) for e in selected.ordered_edges()
                                           if e not in found.edges]:
        problems.append(f"{where}: necessity_pruned is {pruned!r}, not the edges the necessity "
                        "pass removes")
    if "candidate_kl" in meta and not (type(meta["candidate_kl"]) in (int, float) and math.isclose(
            meta["candidate_kl"], kl, rel_tol=KL_RELATIVE, abs_tol=1e-15)):
        problems.append(f"{where}: candidate_kl is {meta['candidate_kl']!r}, scoring the "
                        f"circuit gives {kl!r}")
    if "float_agreement" in meta and meta["float_agreement"] != agreement:
        problems.append(f"{where}: float_agreement is {meta['float_agreement']!r}, scoring the "
                        f"circuit gives {agreement!r}")
    return problems


def require_provenance(ckpt: Checkpoint, circuit: Circuit) -> None:
    """`provenance_problems` as a refusal, for `farm certify`."""
    problems = provenance_problems(ckpt, circuit, f"the {circuit.task} circuit")
    if problems:
        raise FarmError(f"refusing to certify: {'; '.join(problems)} (remove a field from "
                        "circuit.json to leave it out of the certificate)")
