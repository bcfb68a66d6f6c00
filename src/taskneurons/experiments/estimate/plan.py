"""``estimate_file``: the cost report of an experiment file, before anything runs.

Reads the file (and ``--set`` overrides) as ``taskneurons run`` would, loads its tasks (the
data only), reads the model's shape (no weights), measures each task's token lengths with the
model's tokenizer when one is on this machine, counts every stage's work and prices it on one
row of the device table.

Example:
    >>> print(estimate_file("experiments/paper-scale-llama2-7b.yaml", "h100"))  # doctest: +SKIP
    # Estimate: experiments/paper-scale-llama2-7b.yaml on h100
    ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from taskneurons.experiments.estimate.cost_model import (
    StageEstimate,
    estimate_stage,
    human_bytes,
    report,
)
from taskneurons.experiments.estimate.devices import device
from taskneurons.experiments.estimate.shapes import ModelShape, model_shape
from taskneurons.experiments.estimate.stage_work import stage_work
from taskneurons.experiments.estimate.work import TaskSize


@dataclass
class Estimate:
    """What :func:`estimate` predicts: per-stage estimates, the shape, the sizes, the text."""

    stages: list[StageEstimate]
    shape: ModelShape
    sizes: list[TaskSize]
    text: str


def estimate(
    path: str | os.PathLike, device_name: str, overrides: list[str] | None = None
) -> Estimate:
    """Predict every stage of the experiment file at ``path`` on ``device_name``.

    Raises:
        ConfigError / ValueError: a bad file, task, model or device (before anything heavy).
    """
    from taskneurons.experiments.estimate.lengths import (
        CHARS_PER_TOKEN,
        local_tokenizer,
        task_size,
    )
    from taskneurons.experiments.runner import load_tasks

    dev = device(device_name)
    configs = run_configs(path, overrides)
    config = configs[0]
    shape = model_shape(config.model)
    tasks = load_tasks(config, str(path))
    tok = local_tokenizer(config.model)
    sizes = [task_size(t, tok, config.prompt) for t in tasks]
    stages = [estimate_stage(stage_work(name, config, sizes, shape), shape, dev, config.dtype)
              for name in config.stages()]  # fmt: skip
    stages = [repeated(e, len(configs)) for e in stages]
    lengths = ", ".join(f"{s.id} {s.prompt:.0f}+{s.answer:.0f}" for s in sizes)
    header = [
        f"# Estimate: {path} on {dev.name}",
        "",
        f"- device: {dev.what}; memory {human_bytes(dev.memory_bytes)}",
        f"- model: {config.model} ({config.dtype}): {shape.describe()}",
        f"- tasks (mean prompt+answer tokens, "
        f"{'tokenizer' if tok is not None else f'{CHARS_PER_TOKEN:.0f} characters per token'}): "
        f"{lengths}",
    ]
    if len(configs) > 1:
        header.append(f"- seeds: {len(configs)} runs of every stage, one per seed (priced alike)")
    if shape.source != "embedded" and not os.path.isdir(config.model):
        header.append(f"- download once: {human_bytes(shape.n_params * 2)} of weights (bf16 files)")
    return Estimate(stages, shape, sizes, report(stages, dev, header))


def run_configs(path: str | os.PathLike, overrides: list[str] | None) -> list:
    """The ``ExperimentFile`` of each run the file asks for (one per seed of ``seeds:``)."""
    from taskneurons.experiments.experiment_file import read_settings
    from taskneurons.experiments.seed_repeats import file_configs

    return file_configs(read_settings(path, overrides), str(path))


def repeated(e: StageEstimate, n: int) -> StageEstimate:
    """``e`` run ``n`` times one after another: time and disk times ``n``, the same peak."""
    if n == 1 or not e.modelled:
        return e
    by_kind = {k: v * n for k, v in e.by_kind.items()}
    notes = [*e.notes, f"{n} runs (seeds); time and disk are their sum"]
    return replace(e, seconds=e.seconds * n, disk_bytes=e.disk_bytes * n, by_kind=by_kind,
                   notes=notes)  # fmt: skip


def estimate_file(
    path: str | os.PathLike, device_name: str, overrides: list[str] | None = None
) -> str:
    """The Markdown report of :func:`estimate`."""
    return estimate(path, device_name, overrides).text
