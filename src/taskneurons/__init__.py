"""taskneurons: find, test and use the task-specific neurons of a causal language model.

The data flow (see docs/architecture.md)::

    load_model -> FFN adapter -> NeuronSpace -> relevance_scores -> NeuronSet
               -> deactivate / neuron training -> evaluate -> analysis -> report
"""

from __future__ import annotations

__version__ = "0.1.0"

from taskneurons.data.tasks import Example, Task, TaskFormatError
from taskneurons.models.adapters import FFNAdapter, UnsupportedModelError, get_adapter
from taskneurons.models.loading import load_model, model_fingerprint
from taskneurons.neurons.space import NeuronSpace

__all__ = [
    "__version__",
    "Example",
    "FFNAdapter",
    "NeuronSpace",
    "Task",
    "TaskFormatError",
    "UnsupportedModelError",
    "get_adapter",
    "load_model",
    "model_fingerprint",
]
