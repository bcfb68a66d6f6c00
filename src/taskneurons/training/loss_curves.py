"""How far each training run of a finished run went: its training loss, early and late.

Every training run writes ``train_log.jsonl`` (one line per logged step, with its loss). A run
whose test score did not move may still have learnt something (the answer format, the label
balance) or nothing at all; the loss says which. :func:`loss_summary` finds every training
run under a folder and reports, per run, the steps, the mean loss over the first and the last
quarter of its logged steps (:func:`quarter_means`) and the last step's loss. The mean over a
quarter is steadier than the last batch's loss, which one batch of a few examples decides.

Example:
    >>> quarter_means([4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5])
    (3.0, 0.5)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from taskneurons.report.tables import markdown_table, write_table
from taskneurons.training.train_config import TrainConfig

#: the file a training run logs its steps to (``TrainConfig.log_file``'s default)
LOG_FILE = TrainConfig.log_file

HEADER = ["run", "steps", "loss first quarter", "loss last quarter", "last loss"]


def quarter_means(losses: Sequence[float]) -> tuple[float, float]:
    """Mean of the first and of the last ``ceil(n / 4)`` losses (``nan`` for none).

    Example:
        >>> quarter_means([2.0, 1.0])
        (2.0, 1.0)
    """
    if not losses:
        return math.nan, math.nan
    q = math.ceil(len(losses) / 4)
    return sum(losses[:q]) / q, sum(losses[-q:]) / q


def _losses(log: Path) -> tuple[int, list[float]]:
    """The last logged step and every logged loss of one ``train_log.jsonl``."""
    steps, losses = 0, []
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        steps = max(steps, int(record.get("step", 0)))
        if record.get("loss") is not None:
            losses.append(float(record["loss"]))
    return steps, losses


def loss_summary(run: str | os.PathLike) -> tuple[list[str], list[list]]:
    """A row per training run under ``run`` (found by its ``train_log.jsonl``), sorted by path.

    Raises:
        ValueError: ``run`` is not a folder, or holds no training log.

    Example:
        >>> header, rows = loss_summary("runs/table2-six")  # doctest: +SKIP
    """
    root = Path(run)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    logs = sorted(root.rglob(LOG_FILE))
    if not logs:
        raise ValueError(f"{root}: no {LOG_FILE} below it (no training run)")
    rows = []
    for log in logs:
        steps, losses = _losses(log)
        first, last = quarter_means(losses)
        final = losses[-1] if losses else math.nan
        rows.append([log.parent.relative_to(root).as_posix(), steps, first, last, final])
    return list(HEADER), rows


def write_loss_summary(run: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """Write ``training_losses.{md,csv,json}`` into ``out`` (default ``RUN/analyze-losses``)
    and return the table as Markdown."""
    header, rows = loss_summary(run)
    folder = Path(out) if out is not None else Path(run) / "analyze-losses"
    meta = {"run": str(run), "definition": "mean training loss over the first and last "
            "ceil(n/4) logged steps of each training run"}  # fmt: skip
    title = "Training loss of every training run, early and late"
    write_table(folder / "training_losses", header, rows, meta=meta, digits=3, title=title)
    return markdown_table(header, rows, 3) + f"\n\nwritten to {folder}"
