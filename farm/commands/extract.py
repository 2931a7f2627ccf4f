"""`farm extract`: find a task's circuit with ACDC and write circuit, edge log and sweep."""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import asdict, fields, replace
from pathlib import Path

from farm.atomic import write_text_atomic
from farm.commands import TASK_HELP, output_dir, positive_int, task_spec
from farm.discovery.acdc import SAMPLE, THRESHOLDS, SweepRow, extract
from farm.model.checkpoint import load_checkpoint
from farm.model.circuit import save_circuit
from farm.model.controlled import ABLATIONS
from farm.tasks.registry import get_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        description="Run ACDC (SPEC §3) on the task's whole domain for each threshold in "
                    f"{list(THRESHOLDS)}: visit nodes in reverse topological order and drop "
                    "each incoming edge whose removal keeps candidate agreement at 1.0 and "
                    "raises the candidate KL by less than the threshold; then drop edges off "
                    "every emb -> logits path. The smallest circuit with agreement 1.0 wins. "
                    "Unless --keep-kl-edges, edges no decision needs are then removed one at "
                    "a time (smallest KL increase first) until removing any remaining edge "
                    "alone changes some row's decision, as the verifier's edge-necessity "
                    "property demands (a node whose inputs all went stays a constant source "
                    "if its output is still needed). The result is confirmed in "
                    "exact arithmetic (refused if any row fails there). Writes circuit.json "
                    "(necessity_pruned lists the edges that pass removed), edge_log.json "
                    "(every tried edge of the winning run, then the necessity removals, noted "
                    "'removed: not decision-necessary') and sweep.csv to --out.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (farm train)")
    p.add_argument("--task", required=True, type=task_spec, help=f"task to explain: {TASK_HELP}")
    p.add_argument("--out", type=output_dir, help="output directory (default: circuits/TASK)")
    p.add_argument("--granularity", choices=("block", "head"), default="block",
                   help="block: one attention node per layer; head: one node per head, fed "
                        "to consumers through a shared W_o (default: %(default)s)")
    p.add_argument("--ablation", choices=ABLATIONS, default="zero",
                   help="what a removed edge carries: zero (the semantics the verifier "
                        "proves) or the source's mean output over the domain, per position; "
                        "mean-ablated circuits cannot be confirmed exactly (default: "
                        "%(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the batched forwards run; auto picks CUDA when present")
    p.add_argument("--keep-kl-edges", action="store_true",
                   help="skip the decision-necessity pass: keep every edge ACDC kept for its "
                        "KL cost, even one no decision depends on (upstream behaviour)")
    p.add_argument("--sample", type=positive_int, default=SAMPLE,
                   help="a domain of more inputs than this is searched on a seeded random "
                        "sample of this many, and the circuit found is then confirmed on every "
                        "input by the sound screen, or refused (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def sweep_csv(rows: list[SweepRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, [f.name for f in fields(SweepRow)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return out.getvalue()


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    result = extract(ckpt.to_model(), args.task, args.granularity, args.ablation, THRESHOLDS,
                     args.device, progress=not args.quiet, keep_kl_edges=args.keep_kl_edges,
                     sample=args.sample)
    circuit = replace(result.circuit,
                      metadata={**result.circuit.metadata, "checkpoint_sha256": ckpt.sha256})
    out = Path(args.out or Path("circuits") / args.task)
    save_circuit(circuit, out / "circuit.json")
    write_text_atomic(out / "edge_log.json",
                      json.dumps([asdict(s) for s in result.edge_log], indent=1) + "\n")
    write_text_atomic(out / "sweep.csv", sweep_csv(result.sweep))

    print(f"{args.task}: {len(circuit.edges)} of {result.full_edges} edges retained at "
          f"threshold {circuit.metadata['threshold']} ({args.granularity} granularity, "
          f"{args.ablation} ablation), extracted in {result.seconds:.2f} s")
    for source, target in circuit.ordered_edges():
        print(f"  {source} -> {target}")
    pruned = circuit.metadata["necessity_pruned"]
    if pruned:
        print("removed as not decision-necessary: "
              + ", ".join(f"{s} -> {t}" for s, t in pruned))
    sampled = result.scored_on < len(get_task(args.task).domain())
    exact = ("not checked: farm.model.exact defines zero ablation of piecewise-linear models only"
             if result.exact_agreement is None else
             f"{result.exact_agreement:.0%} (min margin {'≥ ' * sampled}"
             f"{result.exact_min_margin:.6f}{', by the sound screen' * sampled})")
    print(f"agreement: float64 {result.float_agreement:.0%}"
          f"{f' of a {result.scored_on:,}-input sample' * sampled} (min margin "
          f"{result.float_min_margin:.6f}); exact {exact}")
    print(f"candidate KL {circuit.metadata['candidate_kl']:.6f}")
    print(f"{'threshold':>10}{'edges':>7}{'KL':>11}{'agreement':>11}")
    for r in result.sweep:
        print(f"{r.threshold:>10}{r.num_edges:>7}{r.kl:>11.6f}{r.agreement:>11.0%}")
    print(f"wrote {out / 'circuit.json'}, {out / 'edge_log.json'}, {out / 'sweep.csv'}")
    return 0
