"""PAPER.md Table 2: train each task's neurons vs as many random neurons (+ Figure 5 a)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.result import EvalConfig
from taskneurons.experiments.common import _experiment_meta, _limited, _test_examples
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.plots import heatmap
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.training.config import TrainConfig
from taskneurons.training.loop import train


@dataclass
class FinetuneConfig:
    """Knobs of the neuron-training experiments (PAPER.md Table 2, Figure 5 a).

    Attributes:
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets.
        random_seed: seed of the random neuron sets (matched per layer and module).
        matrix: also score every task after training each task's neurons (Figure 5 a).
        train: the training knobs (method ``neurons``; ``merge`` must stay ``False``).
        eval: how tasks are evaluated.
    """

    n_train: int | None = 512
    n_test: int | None = 200
    seed: int = 0
    random_seed: int = 0
    matrix: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def neuron_training_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: FinetuneConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Zero-shot / Train-Random / Train-Task per task, and the task x task training matrix.

    Each task is trained on its own, once through as many random neurons as it has (matched
    per layer and module, drawn outside its set) and once through its own neurons, always
    starting from the same base weights (the trained :class:`NeuronDelta` is detached after
    scoring, which restores the base model exactly).

    Writes ``table2.{md,csv,json}``, ``train_matrix.{md,csv,json,png}`` (change of task j's
    score after training task i's neurons, in points), per-run training folders and
    ``finetune_config.json``.
    """
    if config.train.method != "neurons":
        raise ValueError(
            f"neuron training needs train.method='neurons', got {config.train.method!r}"
        )
    if config.train.merge:
        raise ValueError("neuron training keeps the base model: set train.merge=False")
    out = Path(out_dir)
    missing = [t.id for t in tasks if t.id not in neuron_sets]
    if missing:
        raise ValueError(f"no neuron set for tasks {missing}; have {sorted(neuron_sets)}")
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    test = {t.id: _test_examples(t, config.n_test, config.seed) for t in tasks}

    def score(task: Task) -> float:
        return evaluate(
            model, tokenizer, task, test[task.id], config=config.eval, progress=False
        ).score

    for t in tasks:
        neuron_sets[t.id].check_space(space)
    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks}, space, config.random_seed
    )
    zero = {t.id: score(t) for t in tasks}
    rand, own, matrix, runs = {}, {}, {}, {}
    for t in tasks:
        ns = neuron_sets[t.id]
        train_task = _limited(t, config.n_train, config.seed)
        for kind, neurons in (("random", controls[t.id]), ("task", ns)):
            res = train(
                model,
                tokenizer,
                [train_task],
                config.train,
                neurons=neurons,
                out_dir=out / "runs" / t.id / kind,
                progress=progress,
            )
            try:
                if kind == "random":
                    rand[t.id] = score(t)
                else:
                    own[t.id] = score(t)
                    if config.matrix:
                        matrix[t.id] = {
                            j.id: (own[t.id] if j.id == t.id else score(j)) for j in tasks
                        }
            finally:
                res.delta.detach()
            runs[f"{t.id}/{kind}"] = {
                "steps": res.steps,
                "final_loss": res.final_loss,
                "n_trainable": res.n_trainable,
                "wall_s": res.wall_s,
            }
    names = [t.id for t in tasks]

    def avg(d: dict) -> float:
        return sum(d.values()) / len(d)

    header = ["", *names, "Avg"]
    rows = [
        ["Zero-shot", *[zero[n] for n in names], avg(zero)],
        ["Train-Random", *[rand[n] for n in names], avg(rand)],
        ["Train-Task", *[own[n] for n in names], avg(own)],
    ]
    meta = _experiment_meta(config, model, tasks, test, neuron_sets, controls, runs=runs)
    write_table(
        out / "table2", header, rows, meta=meta, title="Neuron training (accuracy % / ROUGE-L)"
    )
    result = {
        "zero_shot": zero,
        "random": rand,
        "task": own,
        "runs": runs,
        "table": markdown_table(header, rows),
    }
    if config.matrix:
        change = [[matrix[i][j] - zero[j] for j in names] for i in names]
        write_table(
            out / "train_matrix",
            ["trained \\ measured", *names],
            [[i, *row] for i, row in zip(names, change, strict=True)],
            meta=meta,
            title="Change of task j's score (points) after training task i's neurons",
        )
        heatmap(
            change,
            names,
            names,
            out / "train_matrix.png",
            title="Train task i's neurons: change on task j",
            xlabel="measured task j",
            ylabel="trained neurons of task i",
            cmap="RdBu",
        )
        result["matrix"] = matrix
    write_json_atomic(out / "finetune_config.json", meta)
    return result
