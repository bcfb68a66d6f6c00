"""Figure 3 and Table 4 from similarity records: per-layer curves and correlations (no model).

A *record* is one (model ``M_i``, test task ``j``) pair of a similarity run
(:mod:`.similarity`), as written to ``similarity_records.json``::

    {"group": "a", "train_task": "qqp", "test_task": "sst2",
     "similarity": {"all": [per-layer cosine], "without_general": [...]},
     "score": 71.0, "zero_shot": 55.0}

``similarity[variant][l]`` is the cosine of the mean parameter vectors of training task
``i``'s neurons and test task ``j``'s neurons in layer ``l`` of ``M_i`` (``nan`` where a set
is empty in that layer); ``score`` is ``M_i``'s score on ``j`` (accuracy % / ROUGE-L) and
``zero_shot`` the base model's (``None`` when not measured).

* :func:`figure_rows` — Figure 3: per test task, the per-layer similarity averaged over the
  group's models (``nan`` ignored), and its mean over the chosen layers.
* :func:`correlation_rows` — Table 4: Pearson and Spearman correlation (SciPy p-values,
  seeded bootstrap intervals) between a pair's mean similarity over the chosen layers and its
  OOD score (``raw``) or its gain over zero-shot (``gain``), per group and over all groups.
* :func:`write_similarity`, :func:`write_correlation` — the tables (Markdown, CSV, JSON) and
  plots (PNG).

Example:
    >>> rows = correlation_rows(records, layers=None, score="raw", n_boot=200)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from taskneurons.analysis.parameter_similarity import correlation, mean_similarity
from taskneurons.experiments.generalization.similarity_stage import SCORES, check_layers
from taskneurons.report.plots import line_plot, scatter_panels
from taskneurons.report.tables import write_table

#: The similarity variants: all of the sets' neurons, without the general neurons, and a
#: control: random sets with the two sets' per-layer counts (what set size alone gives).
#: A second control: random pairs with the two sets' per-layer counts and shared neurons (what
#: size and overlap give; "excess over random" then cannot re-measure the overlap).
VARIANTS: tuple[str, ...] = ("all", "without_general", "random", "random_overlap")
#: How a variant is named in titles and file names.
VARIANT_TITLES = {
    "all": "",
    "without_general": ", general neurons removed",
    "random": ", random sets of the same per-layer sizes (control)",
    "random_overlap": ", random pairs of the same per-layer sizes and overlap (control)",
}
#: The file a similarity run writes its records to.
RECORDS_FILE = "similarity_records.json"

CORRELATION_HEADER = [
    "group", "variant", "layers", "score", "n", "pearson r", "p (pearson)", "CI (pearson)",
    "spearman rho", "p (spearman)", "CI (spearman)", "note",
]  # fmt: skip


def variants_of(records: Sequence[dict]) -> list[str]:
    """The variants every record holds, in :data:`VARIANTS` order (older runs lack the controls)."""
    return [v for v in VARIANTS if records and all(v in r["similarity"] for r in records)]


def variant_suffix(variant: str) -> str:
    """``""`` for ``all``, else ``_<variant>`` (file names: ``figure3_a_random.png``)."""
    return "" if variant == "all" else f"_{variant}"


def layer_mean(values: Sequence[float], layers: Sequence[int] | None) -> float:
    """Mean of per-layer ``values`` over ``layers`` (``None``: all), ``nan`` layers ignored."""
    arr = np.asarray(values, dtype=np.float64)
    check_layers(layers, len(arr))
    if layers is not None:
        arr = arr[list(layers)]
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def layers_label(layers: Sequence[int] | None) -> str:
    """``all`` or the layer list, for tables."""
    return "all" if layers is None else ",".join(str(x) for x in layers)


def figure_rows(
    records: Sequence[dict], group: str, variant: str, layers: Sequence[int] | None = None
) -> tuple[list[str], list[list], dict[str, list[float]]]:
    """Figure 3 for one group: ``(header, rows, curves)``.

    ``curves[j]`` is test task ``j``'s per-layer similarity averaged over the group's models;
    a row is ``[test task, models, mean over layers, L0, L1, ...]``.
    """
    mine = [r for r in records if r["group"] == group]
    tests = list(dict.fromkeys(r["test_task"] for r in mine))
    curves = {
        j: mean_similarity([r["similarity"][variant] for r in mine if r["test_task"] == j]).tolist()
        for j in tests
    }
    n_layers = len(next(iter(curves.values()))) if curves else 0
    header = ["test task", "models", f"mean ({layers_label(layers)})"]
    header += [f"L{i}" for i in range(n_layers)]
    rows = [
        [j, sum(r["test_task"] == j for r in mine), layer_mean(c, layers), *c]
        for j, c in curves.items()
    ]
    return header, rows, curves


def pair_values(
    records: Sequence[dict], variant: str, layers: Sequence[int] | None, score: str
) -> tuple[list[float], list[float]]:
    """``(x, y)`` over the records: mean similarity over ``layers``, and the score or gain.

    Pairs whose similarity or score is not finite are left out.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    xs, ys = [], []
    for r in records:
        x = layer_mean(r["similarity"][variant], layers)
        base = r.get("zero_shot")
        if score == "gain" and base is None:
            raise ValueError("score 'gain' needs zero-shot scores (run with zero_shot: true)")
        y = r["score"] - base if score == "gain" else r["score"]
        if math.isfinite(x) and y is not None and math.isfinite(y):
            xs.append(x)
            ys.append(float(y))
    return xs, ys


def _interval(ci: tuple[float, float]) -> str:
    return "-" if any(math.isnan(v) for v in ci) else f"{ci[0]:.2f}..{ci[1]:.2f}"


def correlation_rows(
    records: Sequence[dict],
    layers: Sequence[int] | None = None,
    score: str = "raw",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[list]:
    """Table 4: a row per (group, variant) and per variant over all groups.

    A row whose pairs cannot be correlated (fewer than 3, or a constant side) has ``nan``
    values and says why in ``note``.
    """
    groups = list(dict.fromkeys(r["group"] for r in records))
    scopes = [(g, [r for r in records if r["group"] == g]) for g in groups]
    if len(groups) > 1:
        scopes.append(("all", list(records)))
    rows = []
    for name, mine in scopes:
        for variant in variants_of(records):
            x, y = pair_values(mine, variant, layers, score)
            row = [name, variant, layers_label(layers), score, len(x)]
            try:
                c = correlation(x, y, n_boot=n_boot, seed=seed, confidence=confidence)
            except ValueError as exc:
                nan = math.nan
                rows.append([*row, nan, nan, "-", nan, nan, "-", str(exc)])
                continue
            rows.append([
                *row, c.pearson_r, c.pearson_p, _interval(c.pearson_ci), c.spearman_rho,
                c.spearman_p, _interval(c.spearman_ci), "",
            ])  # fmt: skip
    return rows


def write_similarity(
    records: Sequence[dict], out: Path, meta: dict, layers: Sequence[int] | None = None
) -> dict[str, tuple[list[str], list[list]]]:
    """``figure3_<group>[_<variant>].{md,csv,json,png}`` and ``similarity_pairs.*``.

    Returns group -> the ``(header, rows)`` of its ``all`` table.
    """
    tables = {}
    variants = variants_of(records)
    for g in dict.fromkeys(r["group"] for r in records):
        for variant in variants:
            header, rows, curves = figure_rows(records, g, variant, layers)
            suffix, what = variant_suffix(variant), VARIANT_TITLES[variant]
            title = f"Group {g}: cosine similarity of training and test tasks' neurons{what}"
            write_table(
                out / f"figure3_{g}{suffix}", header, rows, meta=meta, digits=3, title=title
            )
            n_layers = len(next(iter(curves.values()))) if curves else 0
            line_plot(
                list(range(n_layers)), curves, out / f"figure3_{g}{suffix}.png",
                title=title, xlabel="layer",
                ylabel="cosine similarity (mean over the models M_i)",
            )  # fmt: skip
            if variant == "all":
                tables[g] = (header, rows)
    header = ["group", "train task", "test task"]
    header += ["similarity" + variant_suffix(v).replace("_", " ") for v in variants]
    header += ["score", "zero-shot"]
    rows = [
        [r["group"], r["train_task"], r["test_task"]]
        + [layer_mean(r["similarity"][v], layers) for v in variants]
        + [r["score"], math.nan if r.get("zero_shot") is None else r["zero_shot"]]
        for r in records
    ]
    title = f"Similarity (mean over layers {layers_label(layers)}) and score of each pair"
    write_table(out / "similarity_pairs", header, rows, meta=meta, digits=3, title=title)
    return tables


def write_correlation(
    rows: list[list],
    records: Sequence[dict],
    out: Path,
    meta: dict,
    layers: Sequence[int] | None = None,
    score: str = "raw",
) -> None:
    """``correlation.{md,csv,json}`` (Table 4) and ``correlation.png`` (one scatter per variant).

    The scatter has a point per (model, test task) pair, coloured by group.
    """
    title = "Correlation of parameter similarity and OOD score (Table 4)"
    write_table(out / "correlation", CORRELATION_HEADER, rows, meta=meta, digits=3, title=title)
    groups = list(dict.fromkeys(r["group"] for r in records))
    panels = [
        (
            f"{variant} (layers {layers_label(layers)})",
            {
                f"group {g}": pair_values(
                    [r for r in records if r["group"] == g], variant, layers, score
                )
                for g in groups
            },
        )
        for variant in variants_of(records)
    ]
    scatter_panels(
        panels,
        out / "correlation.png",
        xlabel="cosine similarity of the neurons' parameters",
        ylabel="OOD score" if score == "raw" else "OOD gain over zero-shot (points)",
    )
