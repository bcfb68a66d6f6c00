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
grad_norm, examples, elapsed_s), ``checkpoint.pt`` (every ``checkpoint_every`` steps: trainable
tensors, optimizer, scheduler, RNG state, step), ``train_result.json``, and the trained
``delta/`` (neurons) or ``lora/`` adapter (lora).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.training.batches import TrainData, check_tasks
from taskneurons.training.methods import TrainMethod, make_method
from taskneurons.training.run_files import (
    append_log,
    reset_log,
    run_meta,
    write_train_config,
    write_train_result,
)
from taskneurons.training.step import make_optimizer, train_step
from taskneurons.training.train_checkpoint import CHECKPOINT, restore_checkpoint, write_checkpoint
from taskneurons.training.train_config import TrainConfig, TrainResult


@dataclass
class _Run:
    """Everything the step loop of one :func:`train` call works on."""

    method: TrainMethod
    model: nn.Module
    config: TrainConfig
    data: TrainData
    named: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: object
    accelerator: object
    meta: dict
    out: Path | None
    start: int
    n_trainable: int
    n_params: int
    was_training: bool
    t0: float

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train(
    model: nn.Module,
    tokenizer,
    tasks: Task | Sequence[Task],
    config: TrainConfig | None = None,
    neurons: NeuronSet | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on the train examples of one or several tasks.

    Args:
        model: a Hugging Face causal LM (moved to ``accelerator.device``).
        tokenizer: its tokenizer.
        tasks: one :class:`Task` or several (pooled and shuffled together: multi-task).
        config: the knobs (default :class:`TrainConfig`, method ``neurons``).
        neurons: the NeuronSet to train (``neurons`` method only).
        out_dir: folder for config, log, checkpoints and the trained delta/adapter.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (``model`` must be the
            same base model as in the interrupted run; the config must match except
            ``checkpoint_every``, ``log_every``, ``log_file`` and ``merge``).
        accelerator: an ``accelerate.Accelerator`` (default: a new one).
        progress: show a tqdm bar with the loss.
        on_step: called as ``on_step(step, record)`` after every optimizer step (and after the
            step's checkpoint), ``step`` counting from 1.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a task without train examples, a bad config, a missing or superfluous
            ``neurons``, an empty NeuronSet, a checkpoint that does not fit.
        NeuronSetMismatchError: ``neurons`` belongs to another model.

    Example:
        >>> res = train(model, tok, [sst2, agnews], TrainConfig(method="full", epochs=1))  # doctest: +SKIP
    """
    from accelerate import Accelerator

    t0 = time.perf_counter()
    config = config or TrainConfig()
    task_list = check_tasks(tasks)
    method = make_method(config, neurons)
    out = _check_out_dir(out_dir, config, resume)
    accelerator = accelerator or Accelerator()
    run = _prepare(model, tokenizer, task_list, neurons, method, out, resume, accelerator, t0)
    run.model.train()
    try:
        history, final_loss = _run_steps(run, progress, on_step)
    finally:
        run.optimizer.zero_grad(set_to_none=True)  # free the last step's gradients
        run.model.train(run.was_training)
        method.restore()
    return _finish(run, history, final_loss)


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
    resume: bool,
    accelerator,
    t0: float,
) -> _Run:
    """Encode the data, set the method up, build the optimizer, resume, write the config."""
    config = method.config
    data = TrainData.encode(tokenizer, tasks, config)
    meta = run_meta(tasks, neurons, model)
    n_params = int(sum(p.numel() for p in model.parameters()))
    was_training = model.training
    torch.manual_seed(config.seed)  # LoRA init, dropout
    model.to(accelerator.device)
    named = method.setup(model, neurons)
    n_trainable = int(sum(p.numel() for _, p in named))
    optimizer, scheduler = make_optimizer([p for _, p in named], config, data.total_steps)
    start = 0
    ckpt_path = out / CHECKPOINT if out is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        start = restore_checkpoint(ckpt_path, config, meta, named, optimizer, scheduler)
    if out is not None and accelerator.is_main_process:
        write_train_config(
            out,
            config,
            meta,
            neurons,
            n_trainable=n_trainable,
            n_params=n_params,
            total_steps=data.total_steps,
            steps_per_epoch=data.steps_per_epoch,
            world_size=accelerator.num_processes,
        )
        reset_log(out / config.log_file, start)
    assert method.model is not None
    return _Run(
        method,
        method.model,
        config,
        data,
        named,
        optimizer,
        scheduler,
        accelerator,
        meta,
        out,
        start,
        n_trainable,
        n_params,
        was_training,
        t0,
    )


def _run_steps(
    run: _Run, progress: bool, on_step: Callable[[int, dict], None] | None
) -> tuple[list[dict], float | None]:
    """The optimizer steps from ``run.start`` on; returns ``(logged records, last loss)``."""
    from tqdm.auto import tqdm

    cfg, data, acc = run.config, run.data, run.accelerator
    params = [p for _, p in run.named]
    log_path = run.out / cfg.log_file if run.out is not None else None
    history: list[dict] = []
    final_loss: float | None = None
    bar = tqdm(
        total=data.total_steps,
        initial=run.start,
        disable=not progress or not run.main,
        desc=f"train {cfg.method}",
    )
    try:
        for step, epoch, chunk in data.steps(run.start):
            batches = data.micro_batches(chunk, acc.process_index, acc.num_processes)
            final_loss, lr, grad_norm = train_step(
                run.model,
                batches,
                len(chunk),
                params,
                run.optimizer,
                run.scheduler,
                acc,
                cfg.max_grad_norm,
            )
            done = step + 1
            record = {
                "step": done,
                "epoch": epoch,
                "loss": final_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "examples": len(chunk),
                "elapsed_s": round(time.perf_counter() - run.t0, 3),
            }
            if done % cfg.log_every == 0 or done == data.total_steps:
                history.append(record)
                if log_path is not None and run.main:
                    append_log(log_path, record)
            bar.update(1)
            bar.set_postfix(loss=f"{final_loss:.4f}")
            if cfg.checkpoint_every and (
                done % cfg.checkpoint_every == 0 or done == data.total_steps
            ):
                assert run.out is not None
                write_checkpoint(
                    run.out / CHECKPOINT,
                    done,
                    cfg,
                    run.meta,
                    run.named,
                    run.optimizer,
                    run.scheduler,
                    acc,
                )
            if on_step is not None:
                on_step(done, record)
    finally:
        bar.close()
    return history, final_loss


def _finish(run: _Run, history: list[dict], final_loss: float | None) -> TrainResult:
    """Save (main process) and merge what was trained; write ``train_result.json``."""
    save_to = run.out if run.main else None
    model = run.method.finish(save_to, run.config.merge, run.meta)
    result = TrainResult(
        model=model,
        method=run.config.method,
        delta=run.method.delta,
        steps=run.data.total_steps,
        history=history,
        final_loss=final_loss,
        n_trainable=run.n_trainable,
        n_params=run.n_params,
        wall_s=time.perf_counter() - run.t0,
        resumed_from=run.start,
        out_dir=run.out,
        config=run.config,
    )
    if run.out is not None and run.main:
        write_train_result(run.out, result, run.meta)
    return result
