"""The study of the compact-proofs paper, on the farm: per trained seed, every strategy's
certified accuracy against its cost in FLOPs and seconds.

`study` trains (or takes) the models, runs every strategy on each, and writes
`maxk_study.csv`, `maxk_study.md` (the table docs/BENCHMARKS.md quotes) and
`maxk_study.png` (bound against FLOPs per strategy, the paper's figure 1 in kind)
into the output directory, plus each trained seed's checkpoint.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from farm.atomic import write_bytes_atomic, write_text_atomic
from farm.model.checkpoint import Checkpoint, save_checkpoint
from farm.model.gpt import GPTConfig
from farm.model.train import TrainConfig, train
from farm.proofs.maxk.bound import AccuracyBound
from farm.proofs.maxk.strategies import STRATEGIES, prove
from farm.tasks.max_of_k import MaxOfK


@dataclass(frozen=True)
class StudyModel:
    """How the study's models are trained: the paper's shape at a chosen size."""

    d_model: int = 32
    steps: int = 1000
    lr: float = 3e-3
    batch_size: int = 1024

    def config(self, task: MaxOfK) -> GPTConfig:
        return GPTConfig(vocab_size=task.vocab, seq_len=task.k, d_model=self.d_model,
                         n_layers=1, n_heads=1, d_mlp=0, norm_variant="none",
                         attn_variant="softmax", attn_bias=False, lm_head_bias=False)

    def train(self, task: MaxOfK, seed: int) -> Checkpoint:
        """Minibatches drawn from the streamed domain for a fixed number of steps (the
        margin goal is out of reach, so no full pass interrupts them, and the brute
        force, not a float pass, measures the result)."""
        cfg = TrainConfig(tasks=(task.name,), seed=seed, max_steps=self.steps, lr=self.lr,
                          margin_goal=1e9, hinge=1.5, full_batch_max=0,
                          batch_size=self.batch_size, check_every=self.steps,
                          final_pass=False)
        return Checkpoint.from_model(train(self.config(task), cfg, progress=False).model)


@dataclass(frozen=True)
class StudyRow:
    model: str  # the seed, or the checkpoint's sha256 prefix
    bound: AccuracyBound


def study(task: MaxOfK, out: Path, seeds: Sequence[int] = (), model: StudyModel = StudyModel(),
          checkpoints: Sequence[Checkpoint] = (), strategies: Sequence[str] = tuple(STRATEGIES),
          progress: bool = True) -> list[StudyRow]:
    """Every strategy on every model: trained seeds (saved under out/seed-N) and given
    checkpoints. Writes the table and the plot, and returns the rows."""
    models: list[tuple[str, Checkpoint]] = []
    for seed in tqdm(seeds, desc="train seeds", disable=not progress):
        ckpt = model.train(task, seed)
        save_checkpoint(ckpt, out / f"seed-{seed}")
        models.append((f"seed {seed}", ckpt))
    models += [(ckpt.sha256[:12], ckpt) for ckpt in checkpoints]
    rows = [StudyRow(name, prove(s, ckpt.config, ckpt.weights, task))
            for name, ckpt in tqdm(models, desc="prove", disable=not progress)
            for s in strategies]
    write_text_atomic(out / "maxk_study.csv", _csv(rows))
    write_text_atomic(out / "maxk_study.md", table(rows))
    plot(rows, out / "maxk_study.png")
    return rows


def _csv(rows: Sequence[StudyRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "strategy", "correct", "total", "bound", "flops", "seconds",
                     "ties", "wrong"])
    for r in rows:
        b = r.bound
        writer.writerow([r.model, b.strategy, b.correct, b.total, f"{float(b.accuracy):.6f}",
                         b.flops, f"{b.seconds:.3f}", b.ties, b.wrong])
    return buffer.getvalue()


def table(rows: Sequence[StudyRow]) -> str:
    """A markdown table: one line per model and strategy."""
    lines = ["| model | strategy | certified accuracy | correct / total | FLOPs | wall s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        b = r.bound
        lines.append(f"| {r.model} | {b.strategy} | {float(b.accuracy):.4f} | "
                     f"{b.correct:,} / {b.total:,} | {b.flops:.3g} | {b.seconds:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[StudyRow], path: Path) -> None:
    """Bound against FLOPs, one colour per strategy, log-scaled FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy in dict.fromkeys(r.bound.strategy for r in rows):
        mine = [r.bound for r in rows if r.bound.strategy == strategy]
        ax.scatter([b.flops for b in mine], [float(b.accuracy) for b in mine], label=strategy,
                   alpha=0.75)
    ax.set_xscale("log")
    ax.set_xlabel("proof cost (FLOPs)")
    ax.set_ylabel("certified accuracy (lower bound)")
    ax.set_title(f"Max-of-K: bound against proof length ({rows[0].bound.task})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
