"""PAPER.md Table 1 on a multi-task fine-tuned model: fine-tune, detect, deactivate.

The model is fine-tuned in place (``full``), or through a LoRA adapter merged into it, so a run
holds it changed afterwards: in an experiment file, ``multitask`` is the last stage. With
``save_model: true`` the fine-tuned model is also written to ``model/`` in the stage's folder, a
Hugging Face folder that a later experiment file names as its ``model:``.

Example:
    >>> res = multitask_experiment(RunContext.of(model, tok, tasks), MultitaskConfig(), "out")  # doctest: +SKIP
    >>> res.deactivation.table.row("Deactivate-Task")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from taskneurons.data.tasks import example_key
from taskneurons.experiments.common import limited
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.deactivation import (
    DeactivationInputs,
    deactivation_experiment,
)
from taskneurons.experiments.specificity.deactivation_result import DeactivationResult
from taskneurons.experiments.specificity.detect import DetectionResult, detect_neurons
from taskneurons.experiments.specificity.multitask_stage import MultitaskConfig
from taskneurons.experiments.specificity.sweep import SweepResult, selection_sweep
from taskneurons.models.saving import (
    TUNED_ON,
    mark_tuned,
    save_finetuned,
    seal_saved_model,
    tuned_on,
)
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.loop import train

#: The record of a multitask run.
RECORD_FILE = "multitask_config.json"


@dataclass
class MultitaskResult(StoredResult):
    """The fine-tuning summary, and detection and deactivation on the fine-tuned model.

    Attributes:
        train: the fine-tuning's ``steps`` and ``final_loss``.
        detection, deactivation: on the fine-tuned model (``detect/``, ``deactivate/``).
        sweep: the selection sweep on it (``sweep/``), with ``config.sweep``; else ``None``.
        out_dir: where the files are.
        meta: ``multitask_config.json``: config, tuned and base model fingerprints.

    :meth:`save` writes ``detect/``, ``deactivate/`` and the record; the fine-tuned model
    (``model/``) and the training folder (``multitask/``) are written as the stage runs and
    not by :meth:`save`. :meth:`load` reads the summary from ``multitask/train_result.json``.

    Example:
        >>> MultitaskResult.load("runs/multitask").train["steps"]  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    train: dict
    detection: DetectionResult
    deactivation: DeactivationResult
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)
    sweep: SweepResult | None = None

    def markdown(self) -> str:
        loss = self.train["final_loss"]
        head = f"multi-task fine-tuning: {self.train['steps']} steps, final loss {loss:.4f}"
        text = f"{head}\n\n{self.deactivation.markdown()}"
        if self.sweep is not None:
            text += "\n\nSelection sweep on the fine-tuned model:\n\n" + self.sweep.markdown()
        return text

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``detect/``, ``deactivate/`` and ``multitask_config.json`` into ``folder``
        (default: :attr:`out_dir`)."""
        out = self.target(folder)
        self.detection.save(out / "detect")
        self.deactivation.save(out / "deactivate")
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> MultitaskResult:
        """The multitask run in ``path``.

        Raises:
            FinishedRunError: a record is missing or unreadable.
        """
        summary = read_record(path / "multitask" / "train_result.json")
        train = {k: summary[k] for k in ("steps", "final_loss")}
        detection = DetectionResult.load(path / "detect")
        deactivation = DeactivationResult.load(path / "deactivate")
        sweep = SweepResult.load(path / "sweep") if (path / "sweep").is_dir() else None
        return cls(train, detection, deactivation, path, meta, sweep)


def multitask_experiment(
    ctx: RunContext, config: MultitaskConfig, out_dir: str | os.PathLike
) -> MultitaskResult:
    """Fine-tune on all tasks together, detect each task's neurons on that model, deactivate.

    Writes ``multitask/`` (training), ``detect/`` and ``deactivate/`` (Table 1 layout and the
    Figure 5 b matrix) and ``multitask_config.json`` under ``out_dir``; with
    ``config.save_model`` also ``model/`` (the fine-tuned model, written before detection).
    """
    model, tokenizer, tasks, progress = ctx.model, ctx.tokenizer, ctx.tasks, ctx.progress
    out = Path(out_dir)
    train_tasks = [limited(t, config.n_train, config.seed) for t in tasks]
    cfg = config.train
    if cfg.method == "lora" and not cfg.merge:
        cfg = dataclasses.replace(cfg, merge=True)
    base = model_fingerprint(model)  # before training changes the weights in place
    res = train(model, tokenizer, train_tasks, cfg, out_dir=out / "multitask", progress=progress)
    tuned = res.model
    mark_tuned(tuned, (example_key(ex) for t in train_tasks for ex in t.train))
    summary = {"steps": res.steps, "final_loss": res.final_loss}
    if config.save_model:
        save_finetuned(tuned, tokenizer, out / "model", model_record(tuned, base, config, summary))
        seal_saved_model(out / "model")
    on_tuned = dataclasses.replace(ctx, model=tuned, sets=None, general=None, detect_dir=None)
    sets = detect_neurons(on_tuned, config.detect, out / "detect")
    table = deactivation_experiment(
        on_tuned, config.deactivate, out / "deactivate", DeactivationInputs(sets=sets.sets)
    )
    sweep = None
    if config.sweep is not None:  # with this section's detect and deactivate settings
        sections = {**ctx.config.sections, "detect": config.detect, "deactivate": config.deactivate}
        settings = dataclasses.replace(ctx.config, sections=sections, neurons=None)
        # the scores detect/ just made on this model with these settings: not scored again
        swept = dataclasses.replace(on_tuned, config=settings, detect_dir=out / "detect")
        sweep = selection_sweep(swept, config.sweep, out / "sweep")
    meta = provenance(config=config.to_dict(), model=model_fingerprint(tuned), base_model=base)
    result = MultitaskResult(summary, sets, table, out, meta, sweep)
    result.write_meta(out)  # detect/ and deactivate/ were written by their stages
    return result


def model_record(tuned: nn.Module, base: dict, config: MultitaskConfig, summary: dict) -> dict:
    """The ``taskneurons_model.json`` of a saved fine-tuned model.

    ``model_fingerprint`` is the saved model's own (what neuron sets detected on it record),
    ``base_model`` the fingerprint of the model it was fine-tuned from, ``tuned_on`` the keys
    of the examples it was fine-tuned on (relevance scoring on it leaves them out).
    """
    dtype = str(next(tuned.parameters()).dtype).removeprefix("torch.")
    return provenance(
        what="a multi-task fine-tuned model, saved by the multitask stage",
        model_fingerprint=model_fingerprint(tuned),
        base_model=base,
        dtype=dtype,
        train=summary,
        config=config.to_dict(),
        **{TUNED_ON: sorted(tuned_on(tuned) or ())},
    )


run_multitask = multitask_experiment
