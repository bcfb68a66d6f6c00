"""Cross-training matrix: train task i's neurons on task j's data, score task j.

If task i's neurons are specific to task i, they should learn task i better than the other
tasks' neurons do, and other tasks' data worse: the gain matrix ``G[i, j] = score_j(after
training i's neurons on j's data) - score_j(zero-shot)`` should peak on its diagonal. Its
specificity statistics (row/column dominance, the mean double-centred diagonal with a
permutation p-value and a bootstrap CI over test examples) are those of the deactivation
experiment, with the effect taken as a gain. Every run starts from the same base weights:
the trained :class:`NeuronDelta` is detached after scoring, which restores the model exactly.

Example:
    >>> res = cross_training(model, tok, tasks, sets, CrossTrainingConfig(), "runs/x")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic, write_text_atomic
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import check_sets_cover, eval_examples, limited
from taskneurons.experiments.finetuning.crosstrain_stage import CrossTrainingConfig
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.damage_summary import Specificity, specificity
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.comparison import Comparison, MatrixSpec
from taskneurons.training.trained import trained


@dataclass
class CrossTrainingResult:
    """``table``: row ``Zero-shot`` and ``matrix[i][j]`` (task j's score after training task
    i's neurons on task j's data); ``specificity`` of the gain matrix; ``runs``: summaries."""

    table: Comparison
    specificity: Specificity
    runs: dict[str, dict]
    out_dir: Path

    def markdown(self) -> str:
        return "\n\n".join(
            [
                self.table.markdown(),
                self.table.change_markdown("neurons of \\ data of"),
                "specificity of the gains: " + self.specificity.summary,
            ]
        )


def cross_training(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: CrossTrainingConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> CrossTrainingResult:
    """Train every task's neurons on every task's data; the gain matrix and its statistics.

    Writes ``cross_training.{md,csv,json}``, ``cross_gain.{md,csv,json,png}`` (gain in points),
    ``specificity.{json,md}``, ``runs/<neurons>/<data>/`` and ``cross_training_config.json``.
    """
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
        table, per, zero, n_boot=config.n_boot, n_permutations=config.n_permutations,
        seed=config.seed, baseline_row="Zero-shot", direction="rise",
    )  # fmt: skip
    result = CrossTrainingResult(table, stats, runs, out)
    _write(result, config, model, neuron_sets)
    return result


def _write(result: CrossTrainingResult, config, model, neuron_sets) -> None:
    out = result.out_dir
    meta = provenance(
        config=config.to_dict(),
        model=model_fingerprint(model),
        neuron_sets={k: v.meta for k, v in neuron_sets.items()},
        runs=result.runs,
    )
    result.table.write(
        out,
        "cross_training",
        meta,
        "Cross-training: task j's score after training task i's neurons on task j's data",
        MatrixSpec(
            "cross_gain",
            "Gain of task j's score (points) from training task i's neurons on task j's data",
            "Train task i's neurons on task j's data: gain on task j",
            corner="neurons of \\ data of",
            ylabel="trained neurons of task i",
        ),
    )
    write_json_atomic(
        out / "specificity.json",
        {"names": result.table.names, "gain": result.specificity.to_dict(), "meta": meta},
    )
    write_text_atomic(
        out / "specificity.md", f"# Specificity of the gains\n\n- {result.specificity.summary}\n"
    )
    write_json_atomic(out / "cross_training_config.json", meta)


def run_crosstrain(
    ctx: RunContext, config: CrossTrainingConfig, folder: Path
) -> CrossTrainingResult:
    """The ``crosstrain`` stage on the run's neuron sets."""
    return cross_training(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.neuron_sets(), config, folder, ctx.progress
    )
