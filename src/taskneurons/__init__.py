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
    "taskneurons.data.load": ("load_task",),
    "taskneurons.data.prompt_config": ("PromptConfig",),
    "taskneurons.data.tasks": ("Example", "Task", "TaskFormatError"),
    "taskneurons.evaluation.dispatch": ("evaluate",),
    "taskneurons.evaluation.eval_config": ("EvalConfig",),
    "taskneurons.evaluation.result": ("EvalResult",),
    "taskneurons.models.adapters": ("FFNAdapter", "UnsupportedModelError", "get_adapter"),
    "taskneurons.models.loading": ("ModelLoadError", "load_model"),
    "taskneurons.neurons.attribution_config": ("AttributionConfig",),
    "taskneurons.neurons.attribution": ("relevance_scores",),
    "taskneurons.neurons.intervention": ("deactivate",),
    "taskneurons.neurons.neuron_set": ("NeuronSet", "NeuronSetMismatchError"),
    "taskneurons.neurons.scores": ("NeuronScores",),
    "taskneurons.neurons.selection": ("iou", "random_like", "top_k"),
    "taskneurons.neurons.space": ("NeuronSpace",),
    "taskneurons.provenance": ("model_fingerprint",),
    "taskneurons.training.train_config": ("TrainConfig",),
    "taskneurons.training.loop": ("train",),
    "taskneurons.training.neuron_delta": ("NeuronDelta",),
}


__all__ = ["__version__", *sorted(n for names in _EXPORTS.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
