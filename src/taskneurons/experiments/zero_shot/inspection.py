"""One-off looks: a model's FFN and neuron counts, the built-in tasks, one task's evaluation.

Each returns the Markdown the CLI prints (``taskneurons info`` / ``tasks`` / ``eval``).

Example:
    >>> print(builtin_table())  # doctest: +ELLIPSIS
    | name | kind | metric | labels | train | test | instruction |
    ...
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from taskneurons.data.builtin import builtin_task, builtin_task_names
from taskneurons.data.tasks import Task, subset
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.evaluation.metrics import majority_rate
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.report.tables import markdown_table


def model_summary(model: nn.Module, spec: str) -> str:
    """Family, sizes, FFN linears and neuron counts of ``model`` as a Markdown table."""
    ffn = NeuronSpace(model, "ffn")
    lin = NeuronSpace(model, "linear")
    ad = ffn.adapter
    fp = model_fingerprint(model)
    rows = [
        ["model", spec],
        ["family", ad.family],
        ["model_type", fp["model_type"]],
        ["parameters", f"{fp['n_params']:,}"],
        ["layers", ad.n_layers],
        ["d_model", ad.d_model],
        ["d_ff", ad.d_ff],
        ["gated FFN", ad.spec.gated],
        ["FFN linears", ", ".join(f"{m} ({lin.units[m]} out)" for m in lin.modules)],
        ["ffn neurons", f"{ffn.size:,}"],
        ["linear neurons", f"{lin.size:,}"],
        ["fingerprint", f"arch {fp['arch']} weights {fp['weights']}"],
    ]
    return markdown_table(["", "value"], rows)


def builtin_table() -> str:
    """The built-in demo tasks as a Markdown table."""
    rows = []
    for name in builtin_task_names():
        t = builtin_task(name)
        labels = ", ".join(t.labels) if t.labels else "-"
        rows.append([name, t.kind, t.metric, labels, len(t.train), len(t.test), t.instruction])
    header = ["name", "kind", "metric", "labels", "train", "test", "instruction"]
    return markdown_table(header, rows)


def evaluate_task(
    model: nn.Module,
    tokenizer,
    task: Task,
    limit: int | None,
    seed: int,
    mode: str | None,
    config: dict,
    out: str | os.PathLike | None,
) -> str:
    """Evaluate ``limit`` test examples (label-stratified, seeded), save them, say how it went.

    Args:
        config: :class:`EvalConfig` settings.
        out: JSON file for the per-example results (``None``: ``runs/eval/<task>-<mode>.json``).

    Returns:
        A Markdown table (task, mode, metric, score, n, majority %, seconds) and the file.
    """
    examples = task.test
    if not examples:
        raise ValueError(f"task {task.id!r} has no test examples")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        labels = task.labels if task.kind == "classification" else None
        examples = subset(examples, limit, seed=seed, labels=labels)
    cfg = EvalConfig.from_dict(config, where="taskneurons eval")
    res = evaluate(model, tokenizer, task, examples, mode=mode, config=cfg)
    maj = majority_rate(examples) if task.kind == "classification" else float("nan")
    path = Path(out) if out is not None else Path("runs") / "eval" / f"{task.id}-{res.mode}.json"
    res.save(path)
    row = [task.id, res.mode, res.metric, res.score, res.n, maj, res.seconds]
    header = ["task", "mode", "metric", "score", "n", "majority %", "seconds"]
    return markdown_table(header, [row]) + f"\nper-example predictions: {path}"
