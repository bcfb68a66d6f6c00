"""The one interface of the continual-learning methods, and the knobs they share.

A :class:`ContinualMethod` owns a model and learns tasks one stage at a time. The experiment
calls, for stage ``j`` (0-based) and its task::

    method.before_task(task, j)   # e.g. add a new LoRA adapter
    method.train_task(task, j)    # returns a JSON-ready summary (steps, final loss, ...)
    method.after_task(task, j)    # e.g. prototypes / task vectors; records the task as trained

and then scores every task under :meth:`ContinualMethod.answering`, a context manager that
yields the model as it answers a test input:

* ``answering(task)``: the task of the input is given (W-NCFT ``mode="given"``, per-task FT);
* ``answering(None, route)``: the task is not given; ``route`` comes from
  :meth:`ContinualMethod.routes` on the inputs' texts (EPI: the nearest prototype's task;
  W-NCFT ``mode="inferred"``: the input's own similarity logits). Inputs with equal routes
  share one context. Methods with one model for all tasks ignore both arguments.

:func:`score_task` is the one place that evaluates a method on a task this way.
``state_dict()`` / ``load_state_dict()`` hold what a stage checkpoint needs (tensors and
JSON-ready values); ``stored_bytes_per_task()`` is the extra memory a method keeps per task
at inference.

A method may take some stages from the reference scores instead of training them (per-task
FT, whose stage can repeat the very training behind A(i)): ``reference_stages()`` lists them,
the stage loop runs ``derive_stage(task, j)`` for those instead of the three calls above, and
the tasks so recorded are in ``derived`` (their rows are the reference scores). By default a
method lists no stage, so every stage is trained.

Example:
    >>> method = make_method(MethodConfig.make("ncft"), model, tok, TrainConfig())  # doctest: +SKIP
    >>> summary = run_stage(method, task, 0)  # doctest: +SKIP
    >>> score_task(method, tok, task, task.test, EvalConfig())  # accuracy %  # doctest: +SKIP
    81.0
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from taskneurons.continual.features import mean_features, task_vector
from taskneurons.continual.method_config import MethodConfig
from taskneurons.continual.vector_cache import TaskVectorCache
from taskneurons.data.tasks import Example, Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.training.train_config import TrainConfig


class ContinualMethod:
    """Base of the continual-learning methods (see the module docstring for the protocol).

    Args:
        model: the Hugging Face causal LM to train (changed in place; LoRA methods wrap it).
        tokenizer: its tokenizer.
        config: the method's options.
        train: the knobs of each stage's training (the seed of stage ``j`` is ``seed + j``;
            the method picks ``train.method`` itself).
        progress: show progress bars.

    Attributes:
        trained: ids of the trained tasks, in stage order.
        pools: task id -> every train example of the task (the experiment sets it; inputs
            for task vectors and prototypes beyond the ``n_train`` trained on: see
            :meth:`feature_task`).
        derived: ids of the tasks whose stage was taken from the reference scores
            (:meth:`derive_stage`; empty for a method without :meth:`reference_stages`).
        vector_cache: where task vectors are kept across runs (the experiment sets it;
            ``None``: each is computed: :meth:`task_vector`).
    """

    #: the method's name (its config's ``name``)
    name: ClassVar[str] = ""
    #: answers need a route from the input when no task id is given (EPI, inferred W-NCFT)
    routes_inputs: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        config: MethodConfig,
        train: TrainConfig,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.train_config = train
        self.progress = progress
        self.trained: list[str] = []
        self.derived: set[str] = set()
        self.pools: dict[str, list[Example]] = {}
        self.vector_cache: TaskVectorCache | None = None
        self._input_features: dict[tuple[str, ...], torch.Tensor] = {}

    def feature_task(self, task: Task) -> Task:
        """``task`` with the train examples its vector / prototype is drawn from: the task's
        whole train split (``pools``) when the config's ``vector_source`` is ``"task"``, else
        (``"trained"``, or no pool) the train examples the method is given."""
        source = getattr(self.config, "vector_source", "trained")
        if source == "task" and task.id in self.pools:
            return dataclasses.replace(task, train=list(self.pools[task.id]))
        return task

    def task_vector(self, model: nn.Module, task: Task) -> torch.Tensor:
        """``task``'s vector / prototype ``[d]`` on ``model`` (the base model): the mean feature
        of up to ``n_vector_samples`` inputs of :meth:`feature_task`, from :attr:`vector_cache`
        when set (:class:`~taskneurons.continual.vector_cache.TaskVectorCache`)."""
        cfg, source = self.config, self.feature_task(task)
        if self.vector_cache is not None:
            return self.vector_cache.vector(model, self.tokenizer, source, cfg, self.progress)
        return task_vector(
            model, self.tokenizer, source, cfg.n_vector_samples, cfg.seed,
            cfg.feature_batch_size, cfg.feature_max_length, self.progress,
        )  # fmt: skip

    def input_features(self, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        """Features ``[n, d]`` of test inputs on ``model``, the base model, which no stage
        changes: computed once per list of texts and kept (the same batches, so the same
        values at every stage)."""
        key = tuple(texts)
        if key not in self._input_features:
            cfg = self.config
            self._input_features[key] = mean_features(  # [n, d]
                model, self.tokenizer, list(texts), cfg.feature_batch_size,
                cfg.feature_max_length, self.progress, "input features",
            )  # fmt: skip
        return self._input_features[key]

    @property
    def uses_task_id(self) -> bool:
        """Whether a test input's task id is given to :meth:`answering`."""
        return False

    def stage_config(self, stage: int, **changes: Any) -> TrainConfig:
        """The stage's :class:`TrainConfig`: ``seed + stage`` and ``changes``."""
        return self.train_config.replace(seed=self.train_config.seed + stage, **changes)

    def before_task(self, task: Task, stage: int) -> None:
        """Prepare stage ``stage`` (nothing by default)."""

    def train_task(self, task: Task, stage: int) -> dict:
        """Train on ``task``'s train examples; return a JSON-ready summary."""
        raise NotImplementedError

    def after_task(self, task: Task, stage: int) -> None:
        """Finish the stage: record ``task`` as trained."""
        self.trained.append(task.id)

    def reference_stages(self, single_train: TrainConfig, n_stages: int) -> list[int]:
        """The stages (of ``n_stages``) taken from the reference scores, which are trained with
        ``single_train``: none by default (per-task FT: those repeating A(i)'s training)."""
        return []

    def derive_stage(self, task: Task, stage: int) -> dict:
        """Record stage ``stage`` (one of :meth:`reference_stages`) as done without training;
        add ``task.id`` to :attr:`derived`; return the stage's JSON-ready summary."""
        raise NotImplementedError(f"method {self.name!r} takes no stage from the references")

    def routes(self, texts: Sequence[str]) -> list[Hashable]:
        """One route per input text (inputs with equal routes share an answering context)."""
        return [None] * len(texts)

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        """Yield the model that answers a test input (of ``task`` when given; else by ``route``)."""
        yield self.model

    def weights_for(self, task: Task | None = None, route: Hashable = None) -> dict | None:
        """The weight of each trained task (id -> weight) when answering as
        :meth:`answering` does; ``None``: the method does not weigh tasks (the default)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything a stage checkpoint needs: tensors and JSON-ready values by key."""
        return {"trained": list(self.trained)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state on a fresh copy of the base model."""
        self.trained = list(state["trained"])

    def task_neuron_sets(self) -> dict[str, NeuronSet]:
        """Task id -> the neurons the method trained for it, in training order (``{}``: the
        method trains no neuron sets, the default)."""
        return {}

    def stored_bytes_per_task(self) -> int:
        """Bytes kept per trained task for inference, beyond the one shared model (mean)."""
        return 0


def run_stage(method: ContinualMethod, task: Task, stage: int) -> dict:
    """``before_task``, ``train_task``, ``after_task`` of one stage; the training summary."""
    method.before_task(task, stage)
    summary = method.train_task(task, stage)
    method.after_task(task, stage)
    return summary


def score_task(
    method: ContinualMethod,
    tokenizer,
    task: Task,
    examples: Sequence[Example],
    config: EvalConfig,
    progress: bool = False,
    trace: dict | None = None,
) -> float:
    """The method's score on ``examples`` of ``task`` (accuracy % or ROUGE-L x 100).

    Task-id methods answer under ``answering(task)``; routing methods group the inputs by
    :meth:`ContinualMethod.routes` and answer each group under ``answering(None, route)``
    (the score is the example-weighted mean of the groups' scores); the others answer under
    ``answering(None)``. A method that weighs tasks (:meth:`ContinualMethod.weights_for`)
    fills ``trace`` (when given) with :func:`routing_record`.

    Example:
        >>> score_task(method, tok, sst2, sst2.test[:50], EvalConfig())  # doctest: +SKIP
        74.0
    """
    examples = list(examples)
    if method.uses_task_id or not method.routes_inputs:
        given = task if method.uses_task_id else None
        if trace is not None:
            trace.update(routing_record(method, task, [(method.weights_for(given), len(examples))]))
        with method.answering(given) as model:
            return evaluate(
                model, tokenizer, task, examples, config=config, progress=progress
            ).score
    groups: dict[Hashable, list[int]] = {}
    for i, route in enumerate(method.routes([ex.input for ex in examples])):
        groups.setdefault(route, []).append(i)
    if trace is not None:
        parts = [(method.weights_for(None, r), len(idx)) for r, idx in groups.items()]
        trace.update(routing_record(method, task, parts))
    total = 0.0
    for route, idx in groups.items():
        with method.answering(None, route) as model:
            part = [examples[i] for i in idx]
            res = evaluate(model, tokenizer, task, part, config=config, progress=progress)
        total += res.score * res.n
    return total / len(examples)


def routing_record(
    method: ContinualMethod, task: Task, parts: Sequence[tuple[dict | None, int]]
) -> dict:
    """What the task weights were on ``task``'s inputs: ``parts`` holds ``(weights, n inputs)``.

    Returns ``{}`` when the method weighs no task, else ``n``, ``weights`` (the inputs' mean
    weight of every trained task) and ``routing_accuracy``: the share (%) of inputs whose own
    task gets the largest weight (``None`` while ``task`` is not trained: no right answer).

    Example:
        >>> routing_record(method, sst2, [({"sst2": 0.7, "agnews": 0.3}, 3),
        ...                               ({"sst2": 0.2, "agnews": 0.8}, 1)])  # doctest: +SKIP
        {'n': 4, 'weights': {'sst2': 0.575, 'agnews': 0.425}, 'routing_accuracy': 75.0}
    """
    parts = [(w, n) for w, n in parts if w is not None]
    if not parts:
        return {}
    n = sum(k for _w, k in parts)
    mean = {t: sum(w[t] * k for w, k in parts) / n for t in parts[0][0]}
    right = sum(k for w, k in parts if max(w, key=w.__getitem__) == task.id)
    accuracy = 100.0 * right / n if task.id in parts[0][0] else None
    return {"n": n, "weights": mean, "routing_accuracy": accuracy}


def tensor_bytes(tensors) -> int:
    """Bytes of an iterable of tensors (``numel * element_size``)."""
    return int(sum(t.numel() * t.element_size() for t in tensors))
