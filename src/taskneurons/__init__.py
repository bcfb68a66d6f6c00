"""taskneurons: find, test and use the task-specific neurons of a causal language model.

Public names are imported lazily (on first use), so importing a submodule such as
``taskneurons.cli`` does not load torch. The data flow (see docs/architecture.md)::

    load_model -> FFN adapter -> NeuronSpace -> relevance_scores -> NeuronSet
               -> deactivate / NeuronDelta training -> evaluate -> analysis -> report

Example:
    >>> from taskneurons import load_model, load_task, NeuronSpace, relevance_scores, top_k
    >>> model, tok = load_model("smollm2-135m")  # doctest: +SKIP
    >>> task = load_task("sentiment")  # doctest: +SKIP
    >>> scores = relevance_scores(model, task, NeuronSpace(model), tokenizer=tok)  # doctest: +SKIP
    >>> neurons = top_k(scores, k=10)  # doctest: +SKIP
"""

from __future__ import annotations

from taskneurons._lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first use, PEP 562)
_EXPORTS = {
    "load_task": "taskneurons.data.load",
    "PromptConfig": "taskneurons.data.prompts",
    "Example": "taskneurons.data.tasks",
    "Task": "taskneurons.data.tasks",
    "TaskFormatError": "taskneurons.data.tasks",
    "evaluate": "taskneurons.evaluation.dispatch",
    "EvalConfig": "taskneurons.evaluation.result",
    "EvalResult": "taskneurons.evaluation.result",
    "FFNAdapter": "taskneurons.models.adapters",
    "UnsupportedModelError": "taskneurons.models.adapters",
    "get_adapter": "taskneurons.models.adapters",
    "ModelLoadError": "taskneurons.models.loading",
    "load_model": "taskneurons.models.loading",
    "AttributionConfig": "taskneurons.neurons.attribution",
    "relevance_scores": "taskneurons.neurons.attribution",
    "deactivate": "taskneurons.neurons.intervention",
    "NeuronSet": "taskneurons.neurons.neuron_set",
    "NeuronSetMismatchError": "taskneurons.neurons.neuron_set",
    "NeuronScores": "taskneurons.neurons.scores",
    "iou": "taskneurons.neurons.selection",
    "random_like": "taskneurons.neurons.selection",
    "top_k": "taskneurons.neurons.selection",
    "NeuronSpace": "taskneurons.neurons.space",
    "model_fingerprint": "taskneurons.provenance",
    "TrainConfig": "taskneurons.training.train_config",
    "train": "taskneurons.training.loop",
    "NeuronDelta": "taskneurons.training.neuron_delta",
}


__all__ = [
    "__version__",
    "AttributionConfig",
    "EvalConfig",
    "EvalResult",
    "Example",
    "FFNAdapter",
    "ModelLoadError",
    "NeuronDelta",
    "NeuronScores",
    "NeuronSet",
    "NeuronSetMismatchError",
    "NeuronSpace",
    "PromptConfig",
    "Task",
    "TaskFormatError",
    "TrainConfig",
    "UnsupportedModelError",
    "deactivate",
    "evaluate",
    "get_adapter",
    "iou",
    "load_model",
    "load_task",
    "model_fingerprint",
    "random_like",
    "relevance_scores",
    "top_k",
    "train",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
