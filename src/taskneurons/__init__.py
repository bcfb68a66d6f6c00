"""taskneurons: find, test and use the task-specific neurons of a causal language model.

The data flow (see docs/architecture.md)::

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

__version__ = "0.1.0"

from taskneurons.data.load import load_task
from taskneurons.data.prompts import PromptConfig
from taskneurons.data.tasks import Example, Task, TaskFormatError
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.result import EvalConfig, EvalResult
from taskneurons.models.adapters import FFNAdapter, UnsupportedModelError, get_adapter
from taskneurons.models.loading import ModelLoadError, load_model
from taskneurons.neurons.attribution import AttributionConfig, relevance_scores
from taskneurons.neurons.intervention import deactivate
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import iou, random_like, top_k
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.training.config import TrainConfig
from taskneurons.training.loop import train
from taskneurons.training.neuron_delta import NeuronDelta

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
