"""W-NCFT: NCFT that keeps each task's version of its neurons and weighs them per input/task.

Training is NCFT's: stage ``t`` runs on the NCFT model of the earlier stages (their versions
written in order), detects task ``t``'s neurons there, trains and merges them, and records the
values as task ``t``'s version ``V_t``; then the base weights are put back (between stages and
at rest the model holds the base weights). Task ``t``'s vector is the mean last-layer feature
of up to ``n_vector_samples`` of its train inputs on the base model
(:func:`~taskneurons.continual.features.task_vector`).

Inference (``answering``): ``s_t = cos(q, vector_t) / temperature`` for every trained task,
where ``q`` is the test task's vector (``mode="given"``; for a task not trained yet, the
vector of its train inputs, read but not trained on) or the test input's own feature
(``mode="inferred"``: :meth:`WNCFT.routes`, no task id). Each neuron's slices take
a weighted combination of the versions (:func:`~taskneurons.continual.slices.combine`), by
``weighting``:

* ``"plain"`` (the default: the paper's rule as PAPER.md §4 states it): ``w = softmax(s)`` over
  all trained tasks and ``base + sum_t w_t (V_t - base)``, a task's version of a neuron it did
  not train being the base value. At T = 1 the cosines of task vectors lie near 1, the weights
  near ``1/N``, and each task's trained change is shrunk to about ``1/N`` (the ``weights``
  recorded per stage show it); a small ``temperature`` sharpens them.
* ``"renormalised"`` (this library's earlier rule, kept as an option and for the runs made
  with it): ``w`` renormalised over the tasks whose neurons include the position, so a neuron of
  one task takes that task's version whatever the weights, a neuron of several tasks their
  weighted mean.

A neuron of no task keeps its base weights; with one trained task both rules give exactly the
NCFT model. :meth:`WNCFT.weights_for` is the weight of every trained task for a test task or
input (recorded with the routing accuracy: how often the input's own task weighs most).

Example:
    >>> method = WNCFT(model, tok, MethodConfig.make("wncft", mode="inferred"), TrainConfig())  # doctest: +SKIP
    >>> run_stage(method, sst2, 0); run_stage(method, agnews, 1)  # doctest: +SKIP
    >>> route = method.routes(["a great film"])[0]  # the input's logits, one per trained task  # doctest: +SKIP
    >>> with method.answering(None, route) as m:  # doctest: +SKIP
    ...     evaluate(m, tok, sst2, [sst2.test[0]])
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from taskneurons.continual.base import tensor_bytes
from taskneurons.continual.features import similarity_logits
from taskneurons.continual.method_config import FeatureOptions, NeuronMethodConfig
from taskneurons.continual.slices import (
    Deltas,
    Version,
    combine,
    combine_deltas,
    layout_of,
    plain_deltas,
    read_slices,
    union_layout,
    version_bytes,
    write_slices,
)
from taskneurons.continual.strategies.ncft import NCFT
from taskneurons.data.tasks import Task


class WNCFT(NCFT):
    """NCFT with per-task versions of the neurons, weighted by task similarity at inference.

    Attributes:
        vectors: task id -> task vector ``[d]`` (trained tasks, and test tasks asked for).
    """

    name = "wncft"
    keeps_merged = False

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self.vectors: dict[str, torch.Tensor] = {}
        self._deltas: tuple[list[Version], Version, Deltas] | None = None

    @property
    def uses_task_id(self) -> bool:
        return self.config.mode == "given"

    @property
    def routes_inputs(self) -> bool:  # type: ignore[override]
        return self.config.mode == "inferred"

    @contextlib.contextmanager
    def _written(self, versions) -> Iterator[None]:
        """Write ``versions`` in order; put the values found before back on exit."""
        saved = read_slices(self.model, union_layout([layout_of(v) for v in versions]))
        for version in versions:
            write_slices(self.model, version)
        try:
            yield
        finally:
            write_slices(self.model, saved)

    def train_task(self, task: Task, stage: int) -> dict:
        with self._written(self.versions):  # the NCFT model of the earlier stages
            summary, delta = self._train_neurons(task, stage)
            delta.unmerge()
            delta.detach()
        return summary

    def after_task(self, task: Task, stage: int) -> None:
        self.vector(task)
        super().after_task(task, stage)

    def vector(self, task: Task) -> torch.Tensor:
        """Task ``task``'s vector ``[d]`` (computed once, on the base model)."""
        if task.id not in self.vectors:
            self.vectors[task.id] = self.task_vector(self.model, task)
        return self.vectors[task.id]

    def logits(self, query: torch.Tensor) -> torch.Tensor:
        """``cos(query, vector_t) / temperature`` per trained task, ``[tasks]`` float64."""
        vectors = torch.stack([self.vectors[t] for t in self.trained])  # [tasks, d]
        return similarity_logits(query, vectors, self.config.temperature)

    def routes(self, texts: Sequence[str]) -> list[Hashable]:
        """Each input's logits against the trained tasks' vectors, as a tuple of floats.

        With one trained task its weight is 1 whatever the logit, so every input gets the
        route ``(0.0,)`` and the inputs are answered together (the same model either way).
        """
        if len(self.trained) == 1:
            return [(0.0,)] * len(texts)
        feats = self.input_features(self.model, texts)  # [n, d]
        return [tuple(self.logits(f).tolist()) for f in feats]

    def _plain_deltas(self) -> tuple[Version, Deltas]:
        """The base values of the versions' slices and each version's change from them
        (:func:`~taskneurons.continual.slices.plain_deltas`), read at rest once per list of
        versions and reused while it stays the same (the versions are kept, so their ids are
        not reused)."""
        held = self._deltas
        if (
            held is None
            or len(held[0]) != len(self.versions)
            or any(a is not b for a, b in zip(held[0], self.versions, strict=True))
        ):
            layout = union_layout([layout_of(v) for v in self.versions])
            base = read_slices(self.model, layout)
            held = self._deltas = (list(self.versions), base, plain_deltas(self.versions, base))
        return held[1], held[2]

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        if not self.versions:
            yield self.model
            return
        if task is not None:
            logits = self.logits(self.vector(task))
        elif route is not None:
            logits = torch.tensor(route, dtype=torch.float64)
        else:
            raise ValueError("W-NCFT answers by the task (mode 'given') or a route ('inferred')")
        if self.config.weighting == "plain":
            base, deltas = self._plain_deltas()
            combined = combine_deltas(deltas, torch.softmax(logits, 0), base)
        else:
            combined = combine(self.versions, logits, "renormalised")
        with self._written([combined]):
            yield self.model

    def weights_for(self, task: Task | None = None, route: Hashable = None) -> dict | None:
        """``softmax(s)`` over the trained tasks, by task id (the test task's vector when
        ``task`` is given, else the input's logits ``route``)."""
        if not self.trained:
            return None
        if task is not None:
            logits = self.logits(self.vector(task))
        else:
            logits = torch.tensor(route, dtype=torch.float64)
        weights = torch.softmax(logits, 0).tolist()
        return dict(zip(self.trained, weights, strict=True))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for i, tid in enumerate(self.trained):
            state[f"vector{i}"] = self.vectors[tid].clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.vectors = {tid: state[f"vector{i}"] for i, tid in enumerate(self.trained)}

    def stored_bytes_per_task(self) -> int:
        if not self.versions:
            return 0
        versions = sum(version_bytes(v) for v in self.versions) // len(self.versions)
        return versions + tensor_bytes(list(self.vectors.values())[:1])


@dataclass
class WncftConfig(FeatureOptions, NeuronMethodConfig, name="wncft"):
    """W-NCFT's options: NCFT's neurons, the task vectors' features, and the weighting.

    Attributes:
        mode: ``"given"`` (the test task's vector) or ``"inferred"`` (each test input's own
            feature; no task id).
        temperature: softmax temperature of the cosine similarities (1.0 = the paper's plain
            softmax of cosines).
        weighting: ``"plain"`` (the paper's rule, the default) or ``"renormalised"`` (the
            softmax renormalised per neuron over the tasks that trained it); see the module
            docstring.
        n_vector_samples: train inputs per task vector (the paper's "up to 1000"; fewer when
            the task has fewer: ``min(n_vector_samples, available)``, available as
            ``vector_source`` says).
    """

    method_class: ClassVar[Any] = WNCFT

    name: str = "wncft"
    mode: Literal["given", "inferred"] = "given"
    temperature: float = 1.0
    weighting: Literal["plain", "renormalised"] = "plain"

    def validate(self) -> None:
        super().validate()
        self.check_features()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
