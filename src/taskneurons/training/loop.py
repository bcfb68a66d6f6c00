"""One training loop for neuron-level, full and LoRA fine-tuning, on Accelerate.

Methods (``TrainConfig.method``):

* ``"neurons"`` — only the parameter slices of a :class:`NeuronSet` are trained, through a
  :class:`~taskneurons.training.neuron_delta.NeuronDelta` (small trainable deltas added by
  forward hooks; every base parameter stays frozen and untouched). At the end the delta is
  left **attached, not merged** (``TrainResult.delta``): the model behaves as the trained one,
  and the caller can ``save``, ``merge``, ``detach`` or combine per-task deltas. With
  ``TrainConfig(merge=True)`` it is merged into the weights instead.
* ``"full"`` — every parameter of the model is trained in place.
* ``"lora"`` — LoRA adapters through PEFT (``LoraConfig`` + ``get_peft_model``; targets default
  to every linear layer except the LM head, PEFT's ``"all-linear"``). ``merge=True`` returns
  ``merge_and_unload()``'s plain model, otherwise the ``PeftModel``.

The loss of an example is the mean negative log-likelihood (nats) of its answer tokens (the
labels of :func:`taskneurons.data.prompts.collate`; all non-pad tokens after the first with
``PromptConfig(loss_on="all")``) — the same per-example loss the relevance scores use, not
Hugging Face's token mean over a batch. The loss of an optimizer step is the mean over the
step's examples, so a long answer does not weigh more than a short one and the result does not
depend on how a step is split into micro-batches or processes.

Data: the train examples of all given tasks are pooled and shuffled together every epoch
(multi-task training when there are several), with a ``torch.Generator`` seeded by
``config.seed``; an optimizer step takes the next ``batch_size * grad_accum`` examples, in
``grad_accum`` micro-batches of ``batch_size``. Under several processes (``accelerate launch``)
each micro-batch is split across processes and the gradients are summed with
``accelerator.reduce`` (the model is not wrapped in DDP: the NeuronDelta tensors are not model
parameters), so results do not depend on the number of processes.

Files in ``out_dir`` (when given): ``train_config.json`` (config, tasks, model fingerprint,
provenance), ``train_log.jsonl`` (one JSON line per logged step: step, epoch, loss, lr,
grad_norm, examples, elapsed_s; and regulariser with one), ``checkpoint.pt`` (every ``checkpoint_every`` steps: trainable
tensors, optimizer, scheduler, RNG state, step), ``train_result.json``, and the trained
``delta/`` (neurons) or ``lora/`` adapter (lora).

Hooks (:class:`TrainOptions`): ``on_step`` after every
step; ``params`` trains given tensors of the model as it is instead of the config's method
(one LoRA adapter of a model holding several: SeqLoRA, O-LoRA, EPI); ``regulariser`` adds a
term to every step's loss (O-LoRA's penalty); ``before_step`` may change the gradients
before each optimizer step (MIGU's magnitude mask). The continual methods train through this one
loop too. A run that raises takes its NeuronDelta's hooks off again; full and LoRA
fine-tuning change the model itself (:func:`~taskneurons.training.trained.trained` restores
it, after a failed run too).

This module holds the step loop; the parts live beside it: the methods in
:mod:`~taskneurons.training.methods` (one class per method, dispatched by
``TRAIN_METHODS``), the pooled data and step order in :mod:`~taskneurons.training.batches`,
the optimizer and the body of one step in :mod:`~taskneurons.training.step`, checkpoints in
:mod:`~taskneurons.training.train_checkpoint`, metadata and JSON files in
:mod:`~taskneurons.training.run_files`.

Example:
    >>> cfg = TrainConfig(method="neurons", lr=1e-3, epochs=2, batch_size=8)  # doctest: +SKIP
    >>> res = train(model, tok, task, cfg, neurons=task_neurons, out_dir="out/ft")  # doctest: +SKIP
    >>> res.history[-1]["loss"], res.n_trainable  # doctest: +SKIP
    (0.41, 7962624)
    >>> res.delta.merge()  # write the trained slices into the weights  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskneurons._ranks import one_writer
from taskneurons.data.tasks import Task
from taskneurons.models.placement import is_dispatched
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.training.batches import TrainData, check_tasks
from taskneurons.training.checkpointing import check_checkpointing, checkpointed_training
from taskneurons.training.methods import TrainMethod, make_method
from taskneurons.training.process_group import new_accelerator
from taskneurons.training.run_files import (
    append_log,
    reset_log,
    run_meta,
    write_train_config,
    write_train_result,
)
from taskneurons.training.step import (
    Regulariser,
    StepOutcome,
    StepParts,
    make_optimizer,
    train_step,
)
from taskneurons.training.train_checkpoint import CHECKPOINT, restore_checkpoint, write_checkpoint
from taskneurons.training.train_config import TrainConfig, TrainResult


@dataclass
class TrainOptions:
    """What a training run gets beside its :class:`TrainConfig`: resume, accelerator, hooks.

    Attributes:
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (the model must be the
            same base model as in the interrupted run; the config must match except
            ``checkpoint_every``, ``log_every``, ``log_file``, ``merge`` and ``checkpointing``).
        accelerator: an ``accelerate.Accelerator`` (``None``: a new one; a process group it
            starts, under ``torchrun``, is ended at exit: :mod:`.process_group`).
        on_step: called as ``on_step(step, record)`` after every optimizer step (and after
            the step's checkpoint), ``step`` counting from 1.
        params: train exactly these tensors (name -> parameter) of the model as it is, e.g.
            one LoRA adapter of a model that holds several, instead of the config's method
            (nothing is saved or merged; ``neurons`` must be ``None``).
        regulariser: a scalar term added to the loss once per optimizer step, after the
            micro-batches (and the sum across processes), before clipping, e.g. O-LoRA's;
            its last value is ``TrainResult.final_regulariser``.
        before_step: called once per optimizer step after the gradients are complete, before
            clipping and the step; it may change the gradients in place (e.g. MIGU's mask).

    Example:
        >>> opts = TrainOptions(params=stack.parameters("task1"), regulariser=penalty)  # doctest: +SKIP
    """

    resume: bool = False
    accelerator: Any = None
    on_step: Callable[[int, dict], None] | None = None
    params: Mapping[str, nn.Parameter] | None = None
    regulariser: Regulariser | None = None
    before_step: Callable[[], None] | None = None


@dataclass
class _Run:
    """Everything the step loop of one :func:`train` call works on."""

    method: TrainMethod
    parts: StepParts
    data: TrainData
    named: list[tuple[str, nn.Parameter]]
    options: TrainOptions
    meta: dict
    out: Path | None
    start: int
    n_params: int
    was_training: bool
    t0: float

    @property
    def config(self) -> TrainConfig:
        return self.method.config

    @property
    def main(self) -> bool:
        return self.parts.accelerator.is_main_process


def train(
    model: nn.Module,
    tokenizer,
    tasks: Task | Sequence[Task],
    config: TrainConfig | None = None,
    neurons: NeuronSet | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    options: TrainOptions | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on the train examples of one or several tasks.

    Args:
        model: a Hugging Face causal LM (moved to ``accelerator.device``).
        tokenizer: its tokenizer.
        tasks: one :class:`Task` or several (pooled and shuffled together: multi-task).
        config: the knobs (default :class:`TrainConfig`, method ``neurons``).
        neurons: the NeuronSet to train (``neurons`` method only).
        out_dir: folder for config, log, checkpoints and the trained delta/adapter.
        progress: show a tqdm bar with the loss.
        options: resume, the accelerator and the loop's hooks (``on_step``, ``params``,
            ``regulariser``): :class:`TrainOptions` (default: none of them).

    With ``config.checkpointing`` the layers run under activation checkpointing for the run
    (:func:`~taskneurons.training.checkpointing.checkpointed_training`; put back on return).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a task without train examples, a bad config, a missing or superfluous
            ``neurons``, an empty NeuronSet, a checkpoint that does not fit, ``checkpointing``
            on a model that cannot be checkpointed, a model placed by a ``device_map``.
        NeuronSetMismatchError: ``neurons`` belongs to another model.

    Example:
        >>> res = train(model, tok, [sst2, agnews], TrainConfig(method="full", epochs=1))  # doctest: +SKIP
        >>> opts = TrainOptions(resume=True, on_step=lambda step, rec: print(rec["loss"]))  # doctest: +SKIP
        >>> res = train(model, tok, sst2, cfg, out_dir="out/ft", options=opts)  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    config = config or TrainConfig()
    options = options or TrainOptions()
    task_list = check_tasks(tasks)
    method = make_method(config, neurons, options.params)
    out = _check_out_dir(out_dir, config, options.resume)
    _check_model(model, config)
    try:
        with checkpointed_training(model, config.checkpointing):
            run = _prepare(model, tokenizer, task_list, neurons, method, out, options, t0)
            history, last = _run_steps(run, progress)
    except BaseException:
        method.abort()
        raise
    finally:
        method.restore()
    return _finish(run, history, last)


def _check_model(model: nn.Module, config: TrainConfig) -> None:
    """Refuse, before training, a model placed by a device_map, and ``checkpointing`` on a
    model that cannot be checkpointed."""
    if is_dispatched(model):
        raise ValueError(
            "train: the model was placed by a device_map (Accelerate); training needs all its "
            "weights on one device: load it without device_map"
        )
    check_checkpointing(model, config.checkpointing)


def _check_out_dir(out_dir, config: TrainConfig, resume: bool) -> Path | None:
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    if config.checkpoint_every and out is None:
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoint)")
    return out


def _prepare(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neurons: NeuronSet | None,
    method: TrainMethod,
    out: Path | None,
    options: TrainOptions,
    t0: float,
) -> _Run:
    """Encode the data, set the method up, build the optimizer, resume, write the config."""
    accelerator = options.accelerator or new_accelerator()
    config = method.config
    data = TrainData.encode(tokenizer, tasks, config)
    meta = run_meta(tasks, neurons, model)
    n_params = int(sum(p.numel() for p in model.parameters()))
    was_training = model.training
    torch.manual_seed(config.seed)  # LoRA init, dropout
    model.to(accelerator.device)
    named = method.setup(model, neurons)
    params = [p for _, p in named]
    optimizer, scheduler = make_optimizer(params, config, data.total_steps)
    method.on_optimizer(optimizer)
    assert method.model is not None
    parts = StepParts(
        method.model, params, optimizer, scheduler, accelerator, config.max_grad_norm,
        options.regulariser, options.before_step, method.grad_filter,
    )  # fmt: skip
    start = 0
    ckpt_path = out / CHECKPOINT if out is not None else None
    if options.resume and ckpt_path is not None and ckpt_path.is_file():
        start = restore_checkpoint(ckpt_path, config, meta, named, optimizer, scheduler)
    run = _Run(method, parts, data, named, options, meta, out, start, n_params, was_training, t0)
    with one_writer(accelerator) as writes:  # several processes: the main one writes
        if out is not None and writes:
            write_train_config(
                out, config, meta, neurons, n_trainable=_count(named), n_params=n_params,
                total_steps=data.total_steps, steps_per_epoch=data.steps_per_epoch,
                world_size=accelerator.num_processes,
            )  # fmt: skip
            reset_log(out / config.log_file, start)
    return run


def _count(named: list[tuple[str, nn.Parameter]]) -> int:
    return int(sum(p.numel() for _, p in named))


def _run_steps(run: _Run, progress: bool) -> tuple[list[dict], StepOutcome | None]:
    """The optimizer steps from ``run.start`` on; returns ``(logged records, last step)``."""
    from tqdm.auto import tqdm

    data, acc, on_step = run.data, run.parts.accelerator, run.options.on_step
    history: list[dict] = []
    last: StepOutcome | None = None
    bar = tqdm(
        total=data.total_steps, initial=run.start, disable=not progress or not run.main,
        desc=f"train {run.config.method}",
    )  # fmt: skip
    run.parts.model.train()
    try:
        for step, epoch, chunk in data.steps(run.start):
            batches = data.micro_batches(chunk, acc.process_index, acc.num_processes)
            last = train_step(run.parts, batches, len(chunk))
            record = _record(run, step + 1, epoch, len(chunk), last)
            _log(run, record, history)
            bar.update(1)
            bar.set_postfix(loss=f"{last.loss:.4f}")
            _checkpoint(run, record["step"])
            if on_step is not None:
                on_step(record["step"], record)
    finally:
        bar.close()
        run.parts.optimizer.zero_grad(set_to_none=True)  # free the last step's gradients
        run.parts.model.train(run.was_training)
    return history, last


def _record(run: _Run, done: int, epoch: int, examples: int, out: StepOutcome) -> dict:
    """The log record of step ``done`` (counting from 1)."""
    record = {
        "step": done,
        "epoch": epoch,
        "loss": out.loss,
        "lr": out.lr,
        "grad_norm": out.grad_norm,
        "examples": examples,
        "elapsed_s": round(time.perf_counter() - run.t0, 3),
    }
    if out.regulariser is not None:
        record["regulariser"] = out.regulariser
    return record


def _log(run: _Run, record: dict, history: list[dict]) -> None:
    """Keep and write ``record`` when its step is logged (every ``log_every`` and the last)."""
    done = record["step"]
    if done % run.config.log_every == 0 or done == run.data.total_steps:
        history.append(record)
        if run.out is not None:
            with one_writer(run.parts.accelerator) as writes:
                if writes:
                    append_log(run.out / run.config.log_file, record)


def _checkpoint(run: _Run, done: int) -> None:
    """Write the checkpoint after step ``done`` when one is due (every ``checkpoint_every``)."""
    every = run.config.checkpoint_every
    if every and (done % every == 0 or done == run.data.total_steps):
        assert run.out is not None
        p = run.parts
        write_checkpoint(
            run.out / CHECKPOINT, done, run.config, run.meta, run.named, p.optimizer,
            p.scheduler, p.accelerator,
        )  # fmt: skip


def _finish(run: _Run, history: list[dict], last: StepOutcome | None) -> TrainResult:
    """Save (main process) and merge what was trained; write ``train_result.json``."""
    with one_writer(run.parts.accelerator) as writes:  # every process merges, one saves
        model = run.method.finish(run.out if writes else None, run.config.merge, run.meta)
    result = TrainResult(
        model=model,
        method=run.config.method,
        delta=run.method.delta,
        steps=run.data.total_steps,
        history=history,
        final_loss=None if last is None else last.loss,
        n_trainable=_count(run.named),
        n_params=run.n_params,
        wall_s=time.perf_counter() - run.t0,
        resumed_from=run.start,
        out_dir=run.out,
        config=run.config,
        final_regulariser=None if last is None else last.regulariser,
    )
    if run.out is not None:
        with one_writer(run.parts.accelerator) as writes:
            if writes:
                write_train_result(run.out, result, run.meta)
    return result
