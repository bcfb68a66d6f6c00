"""W-NCFT answered again at other softmax temperatures, from a finished run's last checkpoint.

W-NCFT weighs its tasks' versions of the neurons by ``softmax(cos(q, vector_t) / T)``. At the
paper's T = 1 the cosines of task vectors lie near 1 and the weights near ``1/N``, so each
task's trained change is shrunk to about ``1/N`` (``routing.md``). This measures what the
temperature does to the final model: the last checkpoint of a finished W-NCFT run holds every
task's version and vector, so the final column of the matrix is scored again at each
temperature and answering mode (task given, or inferred per input) without training anything.
Per row: the score on the task's test examples, the routing accuracy (how often the right task
weighs most) and the mean weight of the task's own version. The row at the run's own
temperature and mode repeats the run's recorded final score (``run's score``: a check that
the checkpoint, data and model are the run's); NCFT's final score of the same seed (the folder
beside, when it finished) is the bar that W-NCFT is claimed to beat (PAPER.md §4).

Example:
    >>> rows = temperature_rows(model, tok, tasks, "results/o2/seed0/wncft",
    ...                         TemperatureSweep(temperatures=[1.0, 0.1, 0.03]))  # doctest: +SKIP
    >>> rows[0][:3]  # doctest: +SKIP
    [1.0, 'given', 'dbpedia']
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from taskneurons.continual.base import score_task
from taskneurons.continual.registry import make_method
from taskneurons.continual.stage_checkpoint import read_checkpoint
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.experiments.continual.continual_result import (
    RECORD_FILE,
    RESULT_FILE,
    ContinualResult,
)
from taskneurons.experiments.continual.continual_stage import ContinualConfig
from taskneurons.experiments.continual.method_run import run_examples
from taskneurons.experiments.continual.table5 import ContinualRunError
from taskneurons.experiments.finished_run import run_config
from taskneurons.experiments.runner import load_tasks
from taskneurons.models import loading
from taskneurons.provenance import model_fingerprint
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import RunFolder
from taskneurons.store.settings import model_identity

HEADER = ["run", "temperature", "mode", "task", "score", "run's score", "routing accuracy %",
          "own weight"]  # fmt: skip
SUMMARY_HEADER = ["run", "temperature", "mode", "mean score", "run's mean", "NCFT's mean",
                  "routing accuracy %", "own weight"]  # fmt: skip
MODES = ("given", "inferred")


@dataclass
class TemperatureSweep:
    """What to score: the temperatures (each > 0), W-NCFT's answering modes, and on which
    examples: the run's test examples, or (``split="validation"``) ``n_val`` train examples
    per task outside those trained on and the test inputs (the lr grid's validation split:
    :func:`~taskneurons.experiments.continual.method_run.scored_examples`).

    Example:
        >>> TemperatureSweep(temperatures=[1.0, 0.1]).modes
        ['given', 'inferred']
    """

    temperatures: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.03, 0.01])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    progress: bool = False
    split: str = "test"
    n_val: int | None = None

    def validate(self) -> None:
        """Refuse an empty list, a temperature <= 0, an unknown mode or split, a validation
        split without ``n_val`` >= 1 (before any work)."""
        if not self.temperatures or any(not t > 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be > 0 (at least one), got {self.temperatures}")
        bad = [m for m in self.modes if m not in MODES]
        if not self.modes or bad:
            raise ValueError(f"modes must be among {list(MODES)}, got {self.modes}")
        if self.split not in ("test", "validation"):
            raise ValueError(f"split must be 'test' or 'validation', got {self.split!r}")
        if self.split == "validation" and not (self.n_val or 0) >= 1:
            raise ValueError(f"the validation split needs n_val >= 1, got {self.n_val}")


def wncft_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The record (``continual_config.json``) of the finished W-NCFT run in ``folder``.

    Raises:
        ContinualRunError: no finished run there, or a run of another method.
    """
    path = Path(folder)
    if not ((path / RESULT_FILE).is_file() and (path / RECORD_FILE).is_file()):
        raise ContinualRunError(f"{path}: no finished continual run ({RESULT_FILE})")
    record = json.loads((path / RECORD_FILE).read_text(encoding="utf-8"))
    name = record["config"]["method"]["name"]
    if name != "wncft":
        raise ContinualRunError(f"{path}: a run of {name!r}; temperatures apply to W-NCFT")
    return record


def _checked_method(
    model: nn.Module, tokenizer, tasks: Sequence[Task], folder: Path, record, sweep
):  # fmt: skip
    """``(method at its last stage, config, ordered tasks, the examples to score)``: the
    sweep's split; refuses a model, data or checkpoint other than the run's."""
    config = ContinualConfig.from_dict(record["config"], where=str(folder / RECORD_FILE))
    ordered, test, _held, _held_test = run_examples(config, tasks)
    now = {t.id: examples_hash(test[t.id]) for t in ordered}
    if now != record["test_hash"]:
        raise ContinualRunError(f"{folder}: these tasks give other test examples than the run's")
    if model_identity(model_fingerprint(model)) != record["model"]:
        raise ContinualRunError(f"{folder}: the run was made on another base model")
    ckpt = read_checkpoint(folder / "checkpoint")
    if ckpt is None or ckpt.stage != len(ordered) - 1:
        raise ContinualRunError(f"{folder}: no checkpoint of the last stage (it stays where "
                                "the run ran: results/**/checkpoint/ is not tracked)")  # fmt: skip
    method = make_method(config.method, model, tokenizer, config.train, progress=False)
    method.load_state_dict(ckpt.state)
    if sweep.split == "validation":
        valid = dataclasses.replace(config, score_on="validation", n_val=sweep.n_val)
        test = run_examples(valid, tasks)[1]
    return method, config, ordered, test


def temperature_rows(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    folder: str | os.PathLike,
    sweep: TemperatureSweep,
) -> list[list]:
    """One :data:`HEADER` row per temperature, mode and task of the W-NCFT run in ``folder``.

    ``model`` is the run's base model (W-NCFT keeps it at rest, so it is the base model again
    afterwards) and ``tasks`` its loaded tasks. ``run's score`` is the recorded final score
    where temperature and mode are the run's own (on the test split), else ``None``.

    Raises:
        ContinualRunError: not a finished W-NCFT run, no last-stage checkpoint, or another
            model or other test examples than the run's.
    """
    from tqdm.auto import tqdm

    sweep.validate()
    path = Path(folder)
    record = wncft_record(path)
    method, config, ordered, test = _checked_method(model, tokenizer, tasks, path, record, sweep)
    final = ContinualResult.load(path).matrix[:, -1]  # [tasks]
    own = (config.method.temperature, config.method.mode, "test")
    cells = list(itertools.product(sweep.temperatures, sweep.modes, range(len(ordered))))
    rows = []
    for temperature, mode, i in tqdm(cells, desc=f"temperatures {path.name}",
                                     disable=not sweep.progress):  # fmt: skip
        method.config = config.method.replace(temperature=temperature, mode=mode)
        task, trace = ordered[i], {}
        score = score_task(method, tokenizer, task, test[task.id], config.eval, trace=trace)
        recorded = float(final[i]) if (temperature, mode, sweep.split) == own else None
        row = [path.as_posix(), temperature, mode, task.id, score, recorded]
        rows.append(row + [trace["routing_accuracy"], trace["weights"][task.id]])
    return rows


def run_root(folder: str | os.PathLike) -> RunFolder:
    """The run folder (``config.yaml``) that holds the method folder ``folder``."""
    path = Path(folder).resolve()
    for candidate in map(RunFolder, [path, *path.parents]):
        if candidate.config_path.is_file():
            return candidate
    raise ContinualRunError(f"{folder}: not inside a run folder (no config.yaml above it)")


def sweep_runs(folders: Sequence[str | os.PathLike], sweep: TemperatureSweep) -> list[list]:
    """:func:`temperature_rows` of every W-NCFT folder (:func:`each_run`)."""
    sweep.validate()
    return each_run(folders, lambda *run: temperature_rows(*run, sweep))


def each_run(folders: Sequence[str | os.PathLike], rows_of: Callable[..., list]) -> list:
    """``rows_of(model, tokenizer, tasks, folder)`` of every W-NCFT folder, concatenated, each
    on the model and tasks of the run that holds it (its ``config.yaml``; one model load per
    model). Every folder is checked (a finished W-NCFT run inside a run folder) before any
    model loads."""
    roots = []
    for folder in folders:
        wncft_record(folder)
        roots.append(run_root(folder))
    rows: list = []
    held_key, model, tokenizer = None, None, None  # one model in memory at a time
    for folder, root in zip(folders, roots, strict=True):
        config = run_config(root)
        key = (config.model, config.dtype, config.device)
        if key != held_key:
            held_key, (model, tokenizer) = key, loading.load_model(*key)
        tasks = load_tasks(config, str(root.config_path))
        rows += rows_of(model, tokenizer, tasks, folder)
    return rows


def summary_rows(rows: Sequence[Sequence[Any]]) -> list[list]:
    """Per run, temperature and mode: the mean over tasks of score (the final CL), run's score,
    routing accuracy and own weight (:data:`SUMMARY_HEADER`); ``NCFT's mean``: the final CL
    of the NCFT run beside the W-NCFT folder (``<seed folder>/ncft``), ``None`` without one.

    Example:
        >>> summary_rows([["r", 1.0, "given", "a", 60.0, 60.0, 100.0, 0.5],
        ...               ["r", 1.0, "given", "b", 70.0, 70.0, 50.0, 0.3]])[0][1:5]
        [1.0, 'given', 65.0, 65.0]
    """
    groups: dict[tuple, list[Sequence[Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[:3]), []).append(row)
    ncft = {run: ncft_mean(run) for run, _t, _m in groups}  # read once per run
    out = []
    for (run, temperature, mode), part in groups.items():
        means = [_mean([r[k] for r in part]) for k in (4, 5, 6, 7)]
        out.append([run, temperature, mode, means[0], means[1], ncft[run], *means[2:]])
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def ncft_result(wncft_folder: str | os.PathLike) -> ContinualResult | None:
    """The finished NCFT run beside ``wncft_folder`` (same seed and order), else ``None``."""
    folder = Path(wncft_folder).parent / "ncft"
    return ContinualResult.load(folder) if (folder / RESULT_FILE).is_file() else None


def final_cl(result: ContinualResult | None) -> float | None:
    """The final CL ``result`` recorded, ``None`` for no run or an undefined CL."""
    cl = None if result is None else result.metrics["cl"]
    return None if cl is None or math.isnan(cl) else float(cl)


def ncft_mean(wncft_folder: str | os.PathLike) -> float | None:
    """The final CL of the finished NCFT run beside ``wncft_folder``, else ``None``."""
    return final_cl(ncft_result(wncft_folder))


def temperature_markdown(rows: Sequence[Sequence[Any]], summary: Sequence[Sequence[Any]]) -> str:
    """The summary table (:func:`summary_rows` of ``rows``), then the per-task table."""
    return (
        markdown_table(SUMMARY_HEADER, summary, digits=2)
        + "\n\n"
        + markdown_table(HEADER, rows, digits=2)
    )


def write_temperatures(
    rows: Sequence[Sequence[Any]], summary: Sequence[Sequence[Any]], out: str | os.PathLike,
    meta: dict,
) -> None:  # fmt: skip
    """``wncft_temperature{,_tasks}.{md,csv,json}`` in ``out`` (``summary``: :func:`summary_rows`
    of ``rows``)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    title = "W-NCFT's final scores at other softmax temperatures"
    write_table(folder / "wncft_temperature", SUMMARY_HEADER, summary, meta, 2, title)
    write_table(folder / "wncft_temperature_tasks", HEADER, rows, meta, 2, title + ", per task")
