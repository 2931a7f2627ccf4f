"""`farm induction`: induction-head certificates bound to the weights.

    farm induction heads   --checkpoint C                      # which head looks one period back
    farm induction certify --checkpoint C --head L1H0 --out D  # one NFP certificate per prompt
                           [--actors 2]                        # units of prompts on Ray actors
    farm check D --checkpoint C                                # re-derive every number
    farm induction plot    --checkpoint C --head L1H0 --prompt 1234 --out stripe.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from actors.induction import ray_runner
from farm.commands import TASK_HELP, count_or_zero, output_file, positive_int, task_spec
from farm.commands.run import connect
from farm.errors import FarmError
from farm.model.checkpoint import load_checkpoint
from farm.proofs.induction.derive import HeadRef, InductionProver
from farm.proofs.induction.domain import UNIT, DomainSummary, certify_domain
from farm.proofs.induction.heads import score_heads
from farm.proofs.induction.plot import plot_stripe
from farm.tasks.induction import Induction
from farm.tasks.registry import get_task


def head_ref(text: str) -> HeadRef:
    """argparse type of a head: L<layer>H<head>, 0-based (L1H0)."""
    match = re.fullmatch(r"L(\d+)H(\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected L<layer>H<head>, e.g. L1H0")
    return HeadRef(int(match[1]), int(match[2]))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "induction",
        description="Certificates that an attention head is an induction head on every prompt "
                    "of an induction task, derived from the checkpoint in exact rationals "
                    "(sparsemax models exactly, softmax ones through sound bounds with exp "
                    "bounded by rationals) and written in NFP's induction-certificate text "
                    "format; `farm check` re-derives them.")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--checkpoint", required=True, help="checkpoint directory")
        q.add_argument("--task", default="induction", type=task_spec,
                       help=f"an induction task, {TASK_HELP} (default %(default)s)")

    q = sub.add_parser("heads", help="score every head's attention one period back",
                       description="For every head, the mean attention (float32, whole domain) "
                                   "on the induction key from the second copy's queries, from "
                                   "the last query alone, and on the previous token.")
    common(q)
    q.set_defaults(func=run_heads)

    q = sub.add_parser("certify", help="certify a head on every prompt of the domain",
                       description="Derive, in exact rationals (sound bounds for softmax), the "
                                   "certificate of --head on each prompt (stripe, copying, the "
                                   "model's decision), write "
                                   "one NFP file per prompt, NFP's batch file with the "
                                   "aggregate gates, and summary.json into --out. Exit status 1 "
                                   "unless every prompt is certified.")
    common(q)
    q.add_argument("--head", required=True, type=head_ref, help="the head, e.g. L1H0")
    q.add_argument("--out", required=True, help="a new folder for the certificates")
    q.add_argument("--prompts", type=count_or_zero, default=0,
                   help="certify only the first N prompts in canonical order (default 0: all)")
    q.add_argument("--actors", type=positive_int, metavar="N",
                   help="spread the prompts over N Ray actors (RAY_ADDRESS's cluster, or an "
                        "embedded one of N CPUs; default: this process)")
    q.add_argument("--unit", type=positive_int, default=UNIT,
                   help="prompts per unit of work (default %(default)s)")
    q.set_defaults(func=run_certify)

    q = sub.add_parser("plot", help="PNG of a head's exact attention on one prompt",
                       description="The certified head's exact attention weights on one "
                                   "prompt, the certified stripe entries outlined.")
    common(q)
    q.add_argument("--head", required=True, type=head_ref, help="the head, e.g. L1H0")
    q.add_argument("--prompt", type=int, default=0, help="domain index of the prompt")
    q.add_argument("--out", required=True, type=output_file, help="PNG to write")
    q.set_defaults(func=run_plot)


def _task(spec: str) -> Induction:
    task = get_task(spec)
    if not isinstance(task, Induction):
        raise FarmError(f"task {task.name} is not an induction task")
    return task


def run_heads(args: argparse.Namespace) -> int:
    scores = score_heads(load_checkpoint(args.checkpoint), _task(args.task))
    print(f"{'head':<6}{'induction':>11}{'last query':>12}{'previous token':>16}")
    for s in scores:
        print(f"{s.head!s:<6}{s.induction:>11.3f}{s.decision:>12.3f}{s.previous_token:>16.3f}")
    return 0


def _report(summary: DomainSummary) -> None:
    print(f"{summary.certified}/{summary.prompts} prompts certified for {summary.head} on "
          f"{summary.task}: min score margin {float(summary.min_margin):.4g}, max eps "
          f"{float(summary.max_eps):.4g}, mean stripe weight "
          f"{float(summary.mean_stripe_weight):.4g}, copying bound min "
          f"{float(summary.min_copy):.4g} / mean {float(summary.mean_copy):.4g} (NFP's bound "
          f"min {float(summary.min_nfp_logit_diff):.4g}, direction stated in "
          f"{summary.nfp_directions}), decision margin min {float(summary.min_decision):.4g} "
          f"(exact values in summary.json); NFP's rules accept {summary.nfp_accepted} items "
          "under the batch's gates")


def run_certify(args: argparse.Namespace) -> int:
    task = _task(args.task)
    indices = range(min(args.prompts or len(task.domain()), len(task.domain())))
    checkpoint = load_checkpoint(args.checkpoint)
    runner = None
    if args.actors:
        connect(args.actors)
        runner = ray_runner(checkpoint, task.name, args.head, args.actors)
    summary, seconds = certify_domain(checkpoint, task, args.head, Path(args.out), indices,
                                      runner=runner, unit=args.unit)
    _report(summary)
    print(f"{summary.prompts / seconds:.1f} prompts certified per second; NFP batch: "
          f"{Path(args.out) / 'batch.nfp'} (run NFP from {args.out})")
    return 0 if summary.certified == summary.prompts else 1


def run_plot(args: argparse.Namespace) -> int:
    task = _task(args.task)
    if not 0 <= args.prompt < len(task.domain()):
        raise FarmError(f"--prompt {args.prompt} is outside the {len(task.domain())} prompts")
    prover = InductionProver(load_checkpoint(args.checkpoint), task, args.head)
    cert = prover.certificate(args.prompt)
    prompt = task.domain()[args.prompt]
    tokens = ["BOS", *(f"t{t}" for t in prompt[1:])]
    plot_stripe(cert, tokens, f"{args.head} on {task.name} prompt {args.prompt}", Path(args.out))
    print(f"wrote {args.out}")
    return 0
