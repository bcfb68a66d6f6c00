"""PAPER.md Table 2 over training budgets: where training a task's own neurons beats random ones.

The grid (optimizer x k x seeds of the random sets, with learning curves over ``steps``) is fixed
in the config before anything runs. Each task is scored once (relevance); every k derives its
set from those scores (``detect.selection``). For each (task, optimizer, k) the task's own set
and ``len(seeds)`` matched random sets (as many neurons per layer and module, drawn outside the
set with each seed) are trained for ``max(steps)`` optimizer steps from the same base weights;
the task is scored after each step in ``steps`` (its learning curve), and the base weights are
restored exactly after each run (the :class:`NeuronDelta` is detached).

Per (task, optimizer, k, step) the summary holds Train-Task, Train-Random (mean over seeds) and
their paired difference over test examples (random runs averaged per example) with a bootstrap
CI and a sign-flip p-value (:func:`~taskneurons.analysis.paired.mean_difference`), and that p
Holm-adjusted over every cell of the grid (:func:`~taskneurons.analysis.grid_test.holm`: the
cells share test examples and runs, so they are read together, never one by one).

Example:
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig())  # doctest: +SKIP
    >>> res = budget_grid(ctx, BudgetGridConfig(k=[1.0]), "runs/budget")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons._io import write_json_atomic
from taskneurons.analysis.grid_test import holm
from taskneurons.analysis.paired import MeanDifference, mean_difference
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import eval_examples, limited
from taskneurons.experiments.finetuning.budget_stage import BudgetGridConfig
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect import select_sets
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scoring import score_tasks
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.loop import TrainOptions
from taskneurons.training.train_config import TrainConfig
from taskneurons.training.trained import trained

#: The record of a budget grid.
RECORD_FILE = "budget_config.json"

HEADER = [
    "task", "optimizer", "k", "step", "Train-Task", "Train-Random",
    "task - random", "CI low", "CI high", "p", "p (Holm)",
]  # fmt: skip


@dataclass
class BudgetGridResult(StoredResult):
    """Learning curves and their summary.

    Attributes:
        curves: ``(task, optimizer, k)`` -> ``{"task": [score per step], "random": [[score
            per step] per seed]}`` (accuracy % / ROUGE-L x 100).
        zero_shot: task id -> score before training.
        differences: ``(task, optimizer, k, step)`` -> Train-Task minus Train-Random.
        steps: the scored steps.
        out_dir: where the files are.
        meta: ``budget_config.json``: the grid, detect settings, model, zero-shot scores.

    :meth:`save` writes the tables, curves, plots and record (the relevance scores under
    ``scores/`` and each training run's folder under ``runs/`` are written as they are made);
    :meth:`load` reads them back. The files keep each difference's mean, interval and p-value,
    not its number of examples: a loaded :class:`MeanDifference` has ``n`` 0.

    Example:
        >>> BudgetGridResult.load("runs/x/budget").rows()[0]  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    curves: dict[tuple[str, str, float], dict[str, list]]
    zero_shot: dict[str, float]
    differences: dict[tuple[str, str, float, int], MeanDifference]
    steps: list[int]
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)

    def rows(self) -> list[list]:
        out = []
        for (task, opt, k), curve in self.curves.items():
            for n, step in enumerate(self.steps):
                rand = [run[n] for run in curve["random"]]
                d = self.differences[(task, opt, k, step)]
                row = [task, opt, k, step, curve["task"][n], sum(rand) / len(rand)]
                out.append(row + [d.mean, d.low, d.high, d.p_value])
        adjusted = holm([row[-1] for row in out]) if out else []
        return [row + [float(a)] for row, a in zip(out, adjusted, strict=True)]

    def markdown(self) -> str:
        return markdown_table(HEADER, self.rows(), digits=2)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``budget.*``, ``curves.json``, the plots and ``budget_config.json`` into
        ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        config = BudgetGridConfig.from_dict(self.meta["budget"], where=RECORD_FILE)
        write_table(out / "budget", HEADER, self.rows(), meta=self.meta, digits=2,
                    title="Train-Task vs Train-Random over training budgets")  # fmt: skip
        curves = [
            {"task": t, "optimizer": o, "k": k, "steps": self.steps, **c}
            for (t, o, k), c in self.curves.items()
        ]
        write_json_atomic(out / "curves.json", {"curves": curves, "meta": self.meta})
        _plot(self, config, out)
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> BudgetGridResult:
        """The budget grid in ``path``.

        Raises:
            FinishedRunError: a table, the curves or the record is missing or unreadable.
        """
        config = BudgetGridConfig.from_dict(meta["budget"], where=str(path / RECORD_FILE))
        saved = read_record(path / "curves.json")["curves"]  # in the order of the table's cells
        rows = read_record(path / "budget.json")["rows"]
        cells = list(dict.fromkeys(tuple(row[:3]) for row in rows))
        curves = {
            cell: {"task": c["task"], "random": c["random"]}
            for cell, c in zip(cells, saved, strict=True)
        }
        differences = {}
        for row in rows:
            mean, low, high, p = row[6:10]
            differences[tuple(row[:4])] = MeanDifference(
                mean, low, high, p, n=0, level=0.95, n_boot=config.n_boot, seed=0
            )
        steps = saved[0]["steps"] if saved else list(config.steps)
        return cls(curves, dict(meta["zero_shot"]), differences, steps, path, meta)


@dataclass
class _Training:
    """What every training run of one budget grid shares: the run, the grid, the neuron space
    and the folder."""

    ctx: RunContext
    config: BudgetGridConfig
    space: NeuronSpace
    out: Path

    def cell(
        self, task: Task, test: list, own: NeuronSet, opt: str, lr: float, k: float
    ) -> dict[str, list[list[float]]]:
        """One (task, optimizer, k): the own set's curve and each seed's random curve."""
        config = self.config
        cfg = dataclasses.replace(config.train, optimizer=opt, lr=lr, max_steps=max(config.steps))
        folder = self.out / "runs" / task.id / f"{opt}-k{k:g}"
        runs = {"task": self.curve(task, test, own, cfg, folder / "task")}
        for seed in config.seeds:
            control = matched_random_sets({task.id: own}, self.space, seed)[task.id]
            runs[f"random{seed}"] = self.curve(task, test, control, cfg, folder / f"random{seed}")
        return runs

    def curve(
        self, task: Task, test: list, neurons: NeuronSet, cfg: TrainConfig, folder: Path
    ) -> list[list[float]]:
        """Train ``neurons`` on ``task``; per scored step its per-example scores ``[steps][n]``."""
        model, tokenizer, config = self.ctx.model, self.ctx.tokenizer, self.config
        scored: list[list[float]] = []

        def on_step(step: int, record: dict) -> None:
            if step in config.steps:
                res = evaluate(model, tokenizer, task, test, config=config.eval, progress=False)
                scored.append(res.example_scores())

        with trained(
            model, tokenizer, [task], cfg, neurons=neurons, out_dir=folder,
            progress=self.ctx.progress, options=TrainOptions(on_step=on_step),
        ) as res:  # fmt: skip
            steps = res.steps
        if len(scored) != len(config.steps):
            stopped = f"training stopped after {steps} of {cfg.max_steps} steps"
            raise RuntimeError(f"{task.id}: {stopped}")
        return scored


def budget_grid(
    ctx: RunContext, config: BudgetGridConfig, out_dir: str | os.PathLike
) -> BudgetGridResult:
    """Train own vs random neurons over the whole grid; write tables, curves and plots.

    The ``budget`` stage itself (:data:`run_budget`): model, tokenizer and tasks come from
    ``ctx``, the attribution and selection settings from ``ctx.config.detect``. Writes
    ``scores/<task>/scores.safetensors``, ``runs/<task>/<optimizer>-k<k>/<task|randomS>/``
    (training logs), ``budget.{md,csv,json}``, ``curves.json``, ``learning_curves_<opt>.png``
    (score vs step, task and random per (task, k)), ``task_minus_random.png`` (the difference
    vs step per (optimizer, k), mean over tasks) and ``budget_config.json``.

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig())  # doctest: +SKIP
        >>> budget_grid(ctx, BudgetGridConfig(k=[1.0]), "runs/budget").rows()[0]  # doctest: +SKIP
    """
    out, detect, model, tokenizer = Path(out_dir), ctx.config.detect, ctx.model, ctx.tokenizer
    chosen = [t for t in ctx.tasks if config.tasks is None or t.id in config.tasks]
    training = _Training(ctx, config, NeuronSpace(model, detect.attribution.definition), out)
    fingerprint = model_fingerprint(model)
    scored = score_tasks(
        model, tokenizer, ctx.tasks, detect.attribution, detect.selection, out / "scores",
        ctx.progress,
    )  # fmt: skip
    sets = {k: select_sets(scored, dataclasses.replace(detect, k=k))[0] for k in config.k}
    result = BudgetGridResult({}, {}, {}, list(config.steps), out)
    for task in chosen:
        test = eval_examples(task, config.n_test, config.seed)
        base = evaluate(model, tokenizer, task, test, config=config.eval, progress=False)
        result.zero_shot[task.id] = base.score
        train_task = limited(task, config.n_train, config.seed)
        for opt, lr in zip(config.optimizers, config.lrs, strict=True):
            for k in config.k:
                runs = training.cell(train_task, test, sets[k][task.id], opt, lr, k)
                _record(result, task.id, opt, k, runs, config)
    result.meta = provenance(
        budget=config.to_dict(), detect=detect.to_dict(), model=fingerprint,
        zero_shot=result.zero_shot,
    )  # fmt: skip
    result.save()
    return result


def _record(result: BudgetGridResult, task: str, opt: str, k: float, runs, config) -> None:
    """Store one cell's curves and its per-step paired differences."""
    randoms = [v for name, v in runs.items() if name != "task"]  # [seeds][steps][n]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    result.curves[(task, opt, k)] = {
        "task": [mean(s) for s in runs["task"]],
        "random": [[mean(s) for s in r] for r in randoms],
    }
    for n, step in enumerate(config.steps):
        result.differences[(task, opt, k, step)] = mean_difference(
            runs["task"][n], [r[n] for r in randoms], n_boot=config.n_boot, n_perm=config.n_boot
        )


def _plot(result: BudgetGridResult, config: BudgetGridConfig, out: Path) -> None:
    """``learning_curves_<opt>.png`` per optimizer and ``task_minus_random.png``."""
    x = [0, *result.steps]
    for opt in config.optimizers:
        series = {}
        for (t, o, k), c in result.curves.items():
            if o == opt:
                z = result.zero_shot[t]
                series[f"{t} k={k:g} task"] = [z, *c["task"]]
                rand = [sum(v) / len(v) for v in zip(*c["random"], strict=True)]
                series[f"{t} k={k:g} random"] = [z, *rand]
        line_plot(x, series, out / f"learning_curves_{opt}.png",
                  title=f"Score vs step ({opt}): own neurons vs random (mean of seeds)",
                  xlabel="optimizer step", ylabel="score", zero_line=False)  # fmt: skip
    diff = {}
    for opt in config.optimizers:
        for k in config.k:
            cells = [[result.differences[(t, opt, k, s)] for s in result.steps]
                     for (t, o, kk) in result.curves if o == opt and kk == k]  # fmt: skip
            diff[f"{opt} k={k:g}"] = [sum(c[n].mean for c in cells) / len(cells)
                                      for n in range(len(result.steps))]  # fmt: skip
    line_plot(result.steps, diff, out / "task_minus_random.png",
              title="Train-Task - Train-Random (mean over tasks)",
              xlabel="optimizer step", ylabel="score points")  # fmt: skip


#: The ``budget`` stage (``Stage.run`` names it), with the file's ``detect`` section.
run_budget = budget_grid
