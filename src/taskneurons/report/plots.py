"""PNG plots (matplotlib, headless): heatmaps, per-layer distributions and line plots."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskneurons._io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


@dataclass(frozen=True)
class PlotText:
    """The title and axis labels of a plot (the ``**text`` keywords of the plot functions).

    Example:
        >>> PlotText(title="IoU of task neurons", xlabel="task")
        PlotText(title='IoU of task neurons', xlabel='task', ylabel='')
    """

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""


def heatmap(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    *,
    fmt: str = "{:.1f}",
    cmap: str = "viridis",
    **text: str,
) -> Path:
    """Save an annotated heatmap of ``matrix`` ``[rows, cols]`` as a PNG.

    Args:
        fmt: the format of the number written in each cell.
        cmap: the matplotlib colour map.
        text: ``title``, ``xlabel``, ``ylabel`` (see :class:`PlotText`).

    Example:
        >>> heatmap([[1.0, 0.2], [0.2, 1.0]], ["a", "b"], ["a", "b"], "iou.png",
        ...         title="IoU", fmt="{:.2f}")  # doctest: +SKIP
    """
    import numpy as np

    labels = PlotText(**text)

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
    ax.set_title(labels.title)
    ax.set_xlabel(labels.xlabel)
    ax.set_ylabel(labels.ylabel)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


def scatter_panels(
    panels: Sequence[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]],
    path: str | os.PathLike,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """Save scatter plots side by side: one panel per ``(title, {label: (x, y)})``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels, strict=True):
        for label, (x, y) in points.items():
            ax.scatter(list(x), list(y), label=label, s=18)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def line_plot(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    log_x: bool = False,
    zero_line: bool = True,
    **text: str,
) -> Path:
    """Save one line per series over ``x`` (e.g. a statistic vs k per selection).

    Args:
        x: the x values, shared by every series.
        series: name -> y values (one per x; ``nan`` leaves a gap).
        intervals: name -> ``(low, high)`` per x, drawn as a shaded band.
        log_x: logarithmic x axis (k from 0.1 to 10 %).
        zero_line: draw y = 0.
        text: ``title``, ``xlabel``, ``ylabel`` (see :class:`PlotText`).

    Example:
        >>> line_plot([1, 2, 3], {"task": [0.5, 1.0, 2.0]}, "k.png", xlabel="k (%)",
        ...           log_x=True)  # doctest: +SKIP
    """
    labels = PlotText(**text)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():
        (line,) = ax.plot(list(x), list(values), marker="o", markersize=4, label=name)
        band = (intervals or {}).get(name)
        if band is not None:
            lo = [b[0] for b in band]
            hi = [b[1] for b in band]
            ax.fill_between(list(x), lo, hi, color=line.get_color(), alpha=0.15)
    if zero_line:
        ax.axhline(0.0, color="grey", linewidth=0.8)
    if log_x:
        ax.set_xscale("log")
    if all(float(v).is_integer() for v in x):  # stages, steps: no ticks between them
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(labels.xlabel)
    ax.set_ylabel(labels.ylabel)
    ax.set_title(labels.title)
    if len(series) > 4:  # many lines: the legend beside the axes, off the data
        fig.set_size_inches(8.5, 4)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path)


def forgetting_plot(
    curves: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str
) -> Path:
    """PAPER.md Figure 4: FG_j (%) per stage j = 1..N, one line per method.

    Args:
        curves: method -> FG_j for every stage (``nan`` at j = 1, where it is undefined).
    """
    n = max((len(c) for c in curves.values()), default=0)
    return line_plot(
        list(range(1, n + 1)), curves, path, title=title, xlabel="stage j",
        ylabel="FG_j (%)", zero_line=False,
    )  # fmt: skip
