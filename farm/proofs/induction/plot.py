"""The picture interpretability users look for: a head's attention on one prompt, the
induction stripe outlined."""

from __future__ import annotations

from pathlib import Path

from farm.atomic import write_bytes_atomic
from farm.proofs.induction.nfp import NfpCertificate


def plot_stripe(cert: NfpCertificate, tokens: list[str], title: str, out: Path) -> None:
    """Write a PNG of the certificate's weights, its active (query, key) pairs boxed."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    seq = cert.seq
    grid = [[float(cert.weight[q, k]) for k in range(seq)] for q in range(seq)]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1)
    for q in cert.active:
        ax.add_patch(Rectangle((cert.prev[q] - 0.5, q - 0.5), 1, 1, fill=False,
                               edgecolor="crimson", linewidth=2))
    ax.set_xticks(range(seq), [f"{k}\n{t}" for k, t in enumerate(tokens)], fontsize=7)
    ax.set_yticks(range(seq), [f"{t} {q}" for q, t in enumerate(tokens)], fontsize=7)
    ax.set_xlabel("key position / token")
    ax.set_ylabel("query token / position")
    ax.set_title(title, fontsize=9)
    exact = cert.weight == cert.weight_bound  # sparsemax; softmax states a weight and a bound
    fig.colorbar(image, ax=ax, label="attention weight (exact)" if exact else
                 "attention weight (stated, within sound bounds)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    plt.close(fig)
    write_bytes_atomic(out, buffer.getvalue())
