"""Cross-training matrix: train task i's neurons on task j's data, score task j.

If task i's neurons are specific to task i, they should learn task i better than the other
tasks' neurons do, and other tasks' data worse: the gain matrix ``G[i, j] = score_j(after
training i's neurons on j's data) - score_j(zero-shot)`` should peak on its diagonal. Its
specificity statistics (row/column dominance, the mean double-centred diagonal with a
permutation p-value and a bootstrap CI over test examples) are those of the deactivation
experiment, with the effect taken as a gain. Every run starts from the same base weights:
the trained :class:`NeuronDelta` is detached after scoring, which restores the model exactly.

Example:
    >>> ctx = RunContext.of(model, tok, tasks, sets=sets)  # doctest: +SKIP
    >>> res = cross_training(ctx, CrossTrainingConfig(), "runs/x")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons._io import write_json_atomic, write_text_atomic
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import check_sets_cover, eval_examples, limited
from taskneurons.experiments.finetuning.crosstrain_stage import CrossTrainingConfig
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.damage_summary import (
    Resampling,
    Specificity,
    specificity,
)
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.comparison import Comparison, MatrixSpec
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.trained import trained

#: The record of a cross-training run.
RECORD_FILE = "cross_training_config.json"


@dataclass
class CrossTrainingResult(StoredResult):
    """``table``: row ``Zero-shot`` and ``matrix[i][j]`` (task j's score after training task
    i's neurons on task j's data); ``specificity`` of the gain matrix; ``runs``: summaries;
    ``meta``: ``cross_training_config.json``.

    :meth:`save` writes the tables, statistics and record (each training run's folder under
    ``runs/`` is written as it trains); :meth:`load` reads them back. The files hold the
    matrix as its gain over the Zero-shot row, so a loaded matrix is that gain plus the
    Zero-shot score: equal up to float rounding (exact for accuracies).

    Example:
        >>> CrossTrainingResult.load("runs/x/crosstrain").specificity.p_value  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    table: Comparison
    specificity: Specificity
    runs: dict[str, dict]
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        return "\n\n".join(
            [
                self.table.markdown(),
                self.table.change_markdown("neurons of \\ data of"),
                "specificity of the gains: " + self.specificity.summary,
            ]
        )

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``cross_training.*``, ``cross_gain.*``, ``specificity.{json,md}`` and the
        record into ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        self.table.write(
            out,
            "cross_training",
            self.meta,
            "Cross-training: task j's score after training task i's neurons on task j's data",
            MatrixSpec(
                "cross_gain",
                "Gain of task j's score (points) from training task i's neurons on task j's data",
                "Train task i's neurons on task j's data: gain on task j",
                corner="neurons of \\ data of",
                ylabel="trained neurons of task i",
            ),
        )
        stats = {"names": self.table.names, "gain": self.specificity.to_dict(), "meta": self.meta}
        write_json_atomic(out / "specificity.json", stats)
        summary = f"# Specificity of the gains\n\n- {self.specificity.summary}\n"
        write_text_atomic(out / "specificity.md", summary)
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> CrossTrainingResult:
        """The cross-training run in ``path``.

        Raises:
            FinishedRunError: a table, the statistics or the record is missing or unreadable.
        """
        saved = read_record(path / "cross_training.json")
        names = saved["header"][1:-1]
        zero = dict(zip(names, saved["rows"][0][1:-1], strict=True))
        matrix = {
            r[0]: {j: v + zero[j] for j, v in zip(names, r[1:], strict=True)}
            for r in read_record(path / "cross_gain.json")["rows"]
        }
        stats = Specificity.from_dict(read_record(path / "specificity.json")["gain"])
        table = Comparison(names, {"Zero-shot": zero}, matrix)
        return cls(table, stats, dict(meta.get("runs", {})), path, meta)


def cross_training(
    ctx: RunContext, config: CrossTrainingConfig, out_dir: str | os.PathLike
) -> CrossTrainingResult:
    """Train every task's neurons on every task's data; the gain matrix and its statistics.

    Writes ``cross_training.{md,csv,json}``, ``cross_gain.{md,csv,json,png}`` (gain in points),
    ``specificity.{json,md}``, ``runs/<neurons>/<data>/`` and ``cross_training_config.json``.
    """
    model, tokenizer, tasks, progress = ctx.model, ctx.tokenizer, ctx.tasks, ctx.progress
    neuron_sets = ctx.neuron_sets()
    out = Path(out_dir)
    check_sets_cover(tasks, neuron_sets)
    names = [t.id for t in tasks]
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}

    def scores(task: Task) -> list[float]:
        res = evaluate(model, tokenizer, task, test[task.id], config=config.eval, progress=False)
        return res.example_scores()

    zero = {t.id: scores(t) for t in tasks}
    per: dict[str, dict[str, list[float]]] = {}
    runs: dict[str, dict] = {}
    for owner in names:
        per[owner] = {}
        for data in tasks:
            with trained(
                model, tokenizer, [limited(data, config.n_train, config.seed)], config.train,
                neurons=neuron_sets[owner], out_dir=out / "runs" / owner / data.id,
                progress=progress,
            ) as res:  # fmt: skip
                per[owner][data.id] = scores(data)
            runs[f"{owner}/{data.id}"] = res.summary()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    table = Comparison(
        names,
        {"Zero-shot": {j: mean(v) for j, v in zero.items()}},
        {i: {j: mean(v) for j, v in row.items()} for i, row in per.items()},
    )
    stats = specificity(
        table, per, zero, resampling=Resampling.of(config), baseline_row="Zero-shot",
        direction="rise",
    )  # fmt: skip
    meta = provenance(
        config=config.to_dict(),
        model=model_fingerprint(model),
        neuron_sets={k: v.meta for k, v in neuron_sets.items()},
        runs=runs,
    )
    result = CrossTrainingResult(table, stats, runs, out, meta)
    result.save()
    return result


run_crosstrain = cross_training
