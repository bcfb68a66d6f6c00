"""NCFT: neuron-level continual fine-tuning (PAPER.md §4).

Stage ``t`` detects task ``t``'s neurons on the *current* model (relevance scores
``|grad x activation|``, then the top ``k`` %: :func:`detect_task_neurons`), trains only their
parameter slices through a :class:`~taskneurons.training.neuron_delta.NeuronDelta`
(``train(method="neurons", strict_fingerprint=False)``: the neuron set was found on a model
that earlier stages changed) and merges the trained delta into the weights. Every other
parameter is bit-identical to before the stage; inference is the one merged model.

The values the stage leaves in its slices are task ``t``'s *version* of its neurons
(:data:`~taskneurons.continual.slices.Version`); they are the stage checkpoint (written in
order onto a fresh base model they give the NCFT model back exactly) and W-NCFT's material.

Example:
    >>> method = NCFT(model, tok, MethodConfig.make("ncft", k=10), TrainConfig(lr=1e-4))  # doctest: +SKIP
    >>> run_stage(method, sst2, 0)["n_neurons"]  # 10 % of the FFN neurons  # doctest: +SKIP
    4608
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.method_config import MethodConfig, NeuronMethodConfig
from taskneurons.continual.slices import (
    Layout,
    Version,
    read_slices,
    version_from_state,
    version_state,
    write_slices,
)
from taskneurons.data.tasks import Task
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scoring import score_tasks
from taskneurons.neurons.selection.ranking import top_k
from taskneurons.training.loop import train
from taskneurons.training.neuron_delta import NeuronDelta


def detect_task_neurons(
    model: nn.Module, tokenizer, task: Task, config: MethodConfig, progress: bool = False
) -> NeuronSet:
    """Task ``task``'s neurons on ``model`` as it is now: relevance scores, then top ``k`` %.

    Example:
        >>> neurons = detect_task_neurons(model, tok, sst2, MethodConfig.make("ncft", k=10))  # doctest: +SKIP
    """
    scored = score_tasks(model, tokenizer, [task], config.attribution, progress=progress)
    return top_k(scored.scores[task.id], config.k, scope=config.scope, model=model)


def delta_layout(delta: NeuronDelta) -> Layout:
    """The slices a NeuronDelta trains: parameter name -> ``(dim, positions [n])``."""
    return {name: delta.positions(name) for name in delta.names}


class NCFT(ContinualMethod):
    """Train only the current task's neurons (found on the current model); merge after.

    Attributes:
        versions: task ``t``'s version of its neurons' slices, in stage order.
        neuron_sets: task id -> the neurons trained for it.
    """

    name = "ncft"
    #: the model holds the versions merged in order (W-NCFT keeps the base weights instead)
    keeps_merged: ClassVar[bool] = True

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self.versions: list[Version] = []
        self.neuron_sets: dict[str, NeuronSet] = {}

    def _train_neurons(self, task: Task, stage: int) -> tuple[dict, NeuronDelta]:
        """Detect, train and merge; record the version. Returns ``(summary, merged delta)``."""
        neurons = detect_task_neurons(self.model, self.tokenizer, task, self.config, self.progress)
        cfg = self.stage_config(stage, method="neurons", strict_fingerprint=False, merge=False)
        res = train(
            self.model, self.tokenizer, [task], cfg, neurons=neurons, progress=self.progress
        )
        assert res.delta is not None
        res.delta.merge()
        self.versions.append(read_slices(self.model, delta_layout(res.delta)))
        self.neuron_sets[task.id] = neurons
        return {**res.summary(), "n_neurons": len(neurons)}, res.delta

    def train_task(self, task: Task, stage: int) -> dict:
        summary, _delta = self._train_neurons(task, stage)
        return summary

    def task_neuron_sets(self) -> dict[str, NeuronSet]:
        return dict(self.neuron_sets)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for i, version in enumerate(self.versions):
            state.update(version_state(version, f"version{i}/"))
        for i, tid in enumerate(self.trained):
            neurons = self.neuron_sets[tid]
            state[f"definition{i}"] = neurons.definition
            for module, mask in neurons.masks.items():
                state[f"neurons{i}/{module}"] = mask.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.versions = [
            version_from_state(state, f"version{i}/") for i in range(len(self.trained))
        ]
        self.neuron_sets = neuron_sets_in(state)
        if self.keeps_merged:
            for version in self.versions:
                write_slices(self.model, version)


def holds_neuron_sets(state: dict[str, Any]) -> bool:
    """Whether a method's state (or the JSON part of it, ``checkpoint.json``'s) holds the
    trained tasks' neuron sets that :meth:`NCFT.state_dict` writes."""
    return "definition0" in state


def neuron_sets_in(state: dict[str, Any]) -> dict[str, NeuronSet]:
    """Task id -> its neuron set, in training order, from a state :meth:`NCFT.state_dict`
    wrote (``{}`` for a state that holds none: :func:`holds_neuron_sets`)."""
    if not holds_neuron_sets(state):
        return {}
    sets = {}
    for i, tid in enumerate(state["trained"]):
        prefix = f"neurons{i}/"
        masks = {k[len(prefix) :]: v.bool() for k, v in state.items() if k.startswith(prefix)}
        sets[tid] = NeuronSet(state[f"definition{i}"], masks)
    return sets


@dataclass
class NcftConfig(NeuronMethodConfig, name="ncft"):
    """NCFT: which neurons each task trains (:class:`NeuronMethodConfig`)."""

    method_class: ClassVar[Any] = NCFT

    name: str = "ncft"
