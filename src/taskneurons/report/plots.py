"""PNG plots (matplotlib, headless): heatmaps and per-layer distributions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from taskneurons._io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    fmt: str = "{:.1f}",
    cmap: str = "viridis",
) -> Path:
    """Save an annotated heatmap of ``matrix`` ``[rows, cols]`` as a PNG."""
    import numpy as np

    plt = _plt()
    data = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(col_labels), 1.0 + 0.6 * len(row_labels)))
    im = ax.imshow(data, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    finite = data[np.isfinite(data)]
    mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            color = "black" if data[i, j] > mid else "white"
            ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def layer_distribution(
    counts: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "Task-specific neurons per layer",
    ylabel: str = "neurons",
) -> Path:
    """Save one line per task: neurons selected in each layer (``counts[task][layer]``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in counts.items():
        ax.plot(range(len(values)), list(values), marker="o", markersize=3, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
