"""`farm distill`: the smallest motif program that decides as a circuit does, with its proof."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from actors.distill import ray_checker
from farm.commands import TASK_HELP, output_file, positive_int, task_spec
from farm.commands.run import connect
from farm.distill import distill, program_source
from farm.distill.recheck import recheck
from farm.distill.record import proof_record, read_record, write_record
from farm.distill.surrogate import distill_surrogate, surrogate_record, surrogate_report
from farm.errors import FarmError
from farm.model.checkpoint import Checkpoint, load_checkpoint
from farm.model.circuit import Circuit
from farm.tasks.registry import get_task
from farm.tasks.task import Task
from farm.trust.distilled import sign_distillation
from farm.trust.signing import load_private_key
from farm.verify.local import resolve_circuit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        description="Counterexample-guided synthesis over a DSL of transformer motifs (token "
                    "at a position, first/last token of a class, running counters and their "
                    "differences, parity, thresholds, two-state machines, the largest token, "
                    "the token after the previous occurrence of the last): the smallest "
                    "program consistent with the counterexamples so far is held to the "
                    "circuit's decision on every input of the task's domain (sound screen, "
                    "exact evaluation where it is not decisive); a disagreement, replayed "
                    "exactly, joins the counterexamples. Prints the program as Python and "
                    "writes it with its proof record (JSON). Exit status 0 if a program is "
                    "proved to agree on the whole domain, 1 if none is found.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--circuit", default="full",
                   help="circuit.json (farm extract), or 'full' for the model (default)")
    p.add_argument("--task", required=True, type=task_spec, help=TASK_HELP)
    p.add_argument("--out", type=output_file,
                   help="proof record to write (default: program.json beside the circuit; "
                        "needed with --circuit full)")
    p.add_argument("--max-size", type=positive_int, default=10,
                   help="largest program searched, in DSL nodes (default %(default)s)")
    p.add_argument("--per-round", type=positive_int, default=4,
                   help="counterexamples taken per refuted candidate (default %(default)s)")
    p.add_argument("--batch", type=positive_int, default=16384,
                   help="inputs per screened batch (default %(default)s)")
    p.add_argument("--ray", type=positive_int, metavar="ACTORS",
                   help="check candidates as units of --batch inputs on this many Ray actors "
                        "(the cluster at RAY_ADDRESS, else an embedded Ray with that many "
                        "CPUs); default: on this process")
    p.add_argument("--sign", metavar="KEY",
                   help="also sign a proved record with this Ed25519 key (farm keygen): "
                        "writes it again as a DSSE envelope, .dsse.json for .json (program."
                        "dsse.json), bound to the checkpoint and circuit files by hash, for "
                        "farm check")
    p.add_argument("--recheck", metavar="RECORD",
                   help="instead of searching, re-derive a proof record (program.json) for "
                        "this checkpoint, circuit and task: the program, its printed source, "
                        "its agreement on the whole domain and every counterexample's exact "
                        "replay; exit status 1 with each problem named")
    p.add_argument("--surrogate", action="store_true",
                   help="for a standard model (softmax, LayerNorm, GELU; no exact semantics): "
                        "hold candidates to the circuit by sound float64 bounds, then prove "
                        "functional equivalence and content invariance on the program and "
                        "show each circuit edge's necessity by a flip. The claim is the "
                        "program's properties plus its agreement with the circuit on the "
                        "domain, not a verification of the circuit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sign:
        load_private_key(args.sign)  # refused now, not after the search
    ckpt = load_checkpoint(args.checkpoint)
    task = get_task(args.task)
    circuit = resolve_circuit(args.circuit, ckpt, task.name)
    circuit_file = None if args.circuit == "full" else args.circuit
    if args.recheck:
        return recheck_record(args.recheck, ckpt, circuit, task.name)
    if circuit_file is None and args.out is None:
        raise FarmError("--circuit full needs --out: there is no circuit file to write beside")
    out = Path(args.out) if args.out else Path(args.circuit).parent / "program.json"
    if args.surrogate or not ckpt.config.is_piecewise_linear:
        if not args.surrogate:
            raise FarmError(f"{args.checkpoint} is a standard model (softmax, LayerNorm or "
                            "GELU), which has no exact semantics: distil it with --surrogate")
        return run_surrogate(args, ckpt, circuit, circuit_file, task, out)
    checker = None
    if args.ray:
        connect(args.ray)
        checker = ray_checker(ckpt, circuit, task, args.ray, args.batch)
    with tqdm(desc=f"distill {task.name}", unit="in", disable=args.quiet, leave=False) as bar:
        result = distill(ckpt, circuit, task, args.max_size, args.batch, args.per_round,
                         bar.update, lambda p: bar.set_postfix_str(f"size {p.size}: {p}"[:60]),
                         checker)
    record = proof_record(result, ckpt, args.checkpoint, circuit, circuit_file)
    write_record(record, out)
    if args.sign and result.proved:
        envelope = out.with_suffix(".dsse.json")
        write_record(sign_distillation(record, args.checkpoint, circuit_file, args.sign),
                     envelope)
        print(f"signed: {envelope} (farm check {envelope} --pubkey ...)")
    elif args.sign:
        print("not signed: nothing was proved")
    if result.program is not None:
        print(program_source(result.program, f"{'Proved' if result.proved else 'Refuted'} "
                                             f"on {task.name}: {result.reason}."))
    print(f"{task.name}: {'PROVED' if result.proved else 'NOT FOUND'}: {result.reason}")
    print(f"{len(result.checks)} candidates checked, {len(result.examples)} counterexamples "
          f"used, {result.enumerated:,} programs enumerated, {result.seconds:.2f} s; "
          f"wrote {out}")
    return 0 if result.proved else 1


def run_surrogate(args: argparse.Namespace, ckpt: Checkpoint, circuit: Circuit,
                  circuit_file: str | None, task: Task, out: Path) -> int:
    if args.sign or args.ray:
        raise FarmError("--surrogate takes neither --sign nor --ray")
    with tqdm(desc=f"surrogate {task.name}", unit="in", disable=args.quiet, leave=False) as bar:
        report = distill_surrogate(ckpt, circuit, task, args.max_size, args.batch,
                                   args.per_round, bar.update)
    write_record(surrogate_record(report, ckpt, args.checkpoint, circuit, circuit_file), out)
    print(surrogate_report(report))
    print(f"wrote {out}")
    return 0 if report.distillation.proved and all(p.holds for p in report.properties) else 1


def recheck_record(path: str, ckpt: Checkpoint, circuit: Circuit, task: str) -> int:
    record = read_record(path)
    if record.get("task") != task:
        raise FarmError(f"{path} is a record for task {record.get('task')!r}, not {task}")
    problems = recheck(record, ckpt, circuit)
    for problem in problems:
        print(f"  {problem}")
    if problems:
        print(f"REJECTED {path}: {len(problems)} problem(s)")
    else:
        print(f"CHECKS {path}: the program agrees with the circuit on all "
              f"{record['evidence']['domain']:,} inputs of {task}, re-derived")
    return 1 if problems else 0
