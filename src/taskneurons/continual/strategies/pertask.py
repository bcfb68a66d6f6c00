"""Per-task FT: one fully fine-tuned model per task, chosen by the task id (the upper bound).

Stage ``j`` starts from the base weights, trains every parameter on its task
(``train(method="full")``), keeps a copy of the trained weights and puts the base weights
back. ``answering(task)`` loads that task's copy (the base model for a task not trained yet,
i.e. its zero-shot score) and restores the base weights on exit. Memory: one full copy of the
model per trained task, plus the base copy (CPU tensors).

Stages taken from the reference scores: stage ``j`` trains the very model behind the
single-task score A(j) of :mod:`~taskneurons.continual.reference` when its
:class:`TrainConfig` (``stage_train_config(j)``: the experiment's ``train`` with seed
``seed + j``, ``method="full"``, ``merge=False``) equals, as ``to_dict()``, the one the
references train with (:func:`~taskneurons.continual.reference.single_train_config` of
``single_train``) -- the train examples, the test examples and the eval config being the
experiment's own on both sides. :meth:`PerTaskFT.reference_stages` lists those stages;
the experiment runs them with :meth:`PerTaskFT.derive_stage` (no training, no copy kept)
and takes task ``j``'s row from the references: ``a(j, s) = A(j)`` after the stages
``s >= j`` and the zero-shot score ``b(j)`` before (the base model answers a task not
trained yet; ``nan`` when unseen tasks are not scored). Identical to training it, as the
references are the same training and evaluation (on the same software and hardware, as
the reference cache assumes). The seed being part of the config, and ``seed + j``
equal to ``single_train.seed`` at one stage at most, at most one stage of a run is taken
from the references (stage 0 when ``train`` and ``single_train`` agree in every knob).

Example:
    >>> method = PerTaskFT(model, tok, MethodConfig.make("pertask"), TrainConfig(lr=2e-5))  # doctest: +SKIP
    >>> run_stage(method, sst2, 0)  # doctest: +SKIP
    >>> with method.answering(sst2) as m:  # sst2's own model  # doctest: +SKIP
    ...     evaluate(m, tok, sst2).score
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from taskneurons.continual.base import ContinualMethod, tensor_bytes
from taskneurons.continual.method_config import MethodConfig
from taskneurons.continual.reference import single_train_config
from taskneurons.data.tasks import Task
from taskneurons.training.loop import train
from taskneurons.training.snapshot import ModelSnapshot
from taskneurons.training.train_config import TrainConfig

#: the ``derived_from`` value of a stage taken from the reference scores
FROM_REFERENCES = "reference_scores"


class PerTaskFT(ContinualMethod):
    """One full fine-tuned copy of the model per task; the task id picks the copy.

    Attributes:
        states: task id -> its trained weights (a CPU :class:`ModelSnapshot`), for the trained
            stages.
        derived: ids of the tasks whose stage was taken from the reference scores (no copy).
    """

    name = "pertask"

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self._base = ModelSnapshot.take(model)
        self.states: dict[str, ModelSnapshot] = {}

    @property
    def uses_task_id(self) -> bool:
        return True

    def stage_train_config(self, stage: int) -> TrainConfig:
        """The :class:`TrainConfig` of stage ``stage``: ``seed + stage``, full, not merged."""
        return self.stage_config(stage, method="full", merge=False)

    def reference_stages(self, single_train: TrainConfig, n_stages: int) -> list[int]:
        """The stages whose training is the one behind A(i) (``single_train``'s, adjusted).

        Exact ``to_dict()`` equality of :meth:`stage_train_config` and
        :func:`~taskneurons.continual.reference.single_train_config` (every knob, the seed
        included); the data and eval config are the experiment's on both sides.
        """
        ref = single_train_config(single_train).to_dict()
        return [j for j in range(n_stages) if self.stage_train_config(j).to_dict() == ref]

    def derive_stage(self, task: Task, stage: int) -> dict:
        """Record ``task`` as trained without training it: its scores are the references'.

        For a stage of :meth:`reference_stages` only; no copy is kept, so the task cannot
        be answered (:meth:`answering` refuses); the experiment takes A(task) instead.
        """
        self.derived.add(task.id)
        self.after_task(task, stage)
        cfg = self.stage_train_config(stage)
        return {"derived_from": FROM_REFERENCES, "method": cfg.method, "seed": cfg.seed}

    def train_task(self, task: Task, stage: int) -> dict:
        cfg = self.stage_train_config(stage)
        try:
            res = train(self.model, self.tokenizer, [task], cfg, progress=self.progress)
            self.states[task.id] = ModelSnapshot.take(self.model)
        finally:
            self._base.restore(self.model)
        return res.summary()

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        if task is None:
            raise ValueError("per-task FT needs the task of each test input (answering(task))")
        if task.id in self.derived:
            raise ValueError(
                f"per-task FT took task {task.id!r} from the reference scores: its score is A(i), "
                "there is no trained copy to answer with"
            )
        state = self.states.get(task.id)
        if state is None:  # not trained yet: the base model
            yield self.model
            return
        state.restore(self.model)
        try:
            yield self.model
        finally:
            self._base.restore(self.model)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["derived"] = [tid for tid in self.trained if tid in self.derived]
        for i, tid in enumerate(self.trained):  # keyed by stage index: any task id is safe
            if tid in self.derived:
                continue
            for name, value in self.states[tid].state.items():
                state[f"task{i}.{name}"] = value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.states = {}
        self.derived = set(state.get("derived", []))
        for i, tid in enumerate(self.trained):
            if tid in self.derived:
                continue
            prefix = f"task{i}."
            self.states[tid] = ModelSnapshot(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )

    def stored_bytes_per_task(self) -> int:
        """The bytes of one full copy of the model's state (what the method keeps per task;
        a task taken from the references counts the same)."""
        if not self.trained:
            return 0
        return tensor_bytes(self._base.state.values())


@dataclass
class PertaskConfig(MethodConfig, name="pertask"):
    """Per-task FT: no options (each task's model is trained by ``single_train``)."""

    method_class: ClassVar[Any] = PerTaskFT

    name: str = "pertask"
