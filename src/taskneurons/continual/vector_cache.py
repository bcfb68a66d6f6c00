"""Task vectors kept across runs: one JSON cache keyed by model, inputs and feature settings.

A task's vector (W-NCFT) or prototype (EPI) is the mean feature of up to 1000 of its train
inputs on the *base* model (:func:`~taskneurons.continual.features.task_vector`): thousands of
forwards, the same for every method that routes by features, for both W-NCFT modes and for
every order that holds the task. :class:`TaskVectorCache` computes each once and keeps it in
a sealed JSON file (:class:`~taskneurons.store.cache.SettingsCache`) under the SHA-256 of: the
model's identity (architecture and weights), the task id, the hash of the exact input list
(so the seed and ``n`` of the subset are in it) and the batch size and token limit of the
forwards (batching changes the rounding). A vector read back is the float32 vector computed,
bit for bit (JSON keeps each float32 exactly). The device and thread count are not part of
the key: a vector made on another machine may differ from a fresh one in rounding.

Example:
    >>> cache = TaskVectorCache("out/task_vectors.json", model)  # doctest: +SKIP
    >>> vec = cache.vector(model, tok, sst2, FeatureOptions(n_vector_samples=1000))  # [d]  # doctest: +SKIP
    >>> cache.hits, cache.misses  # doctest: +SKIP
    (0, 1)
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from torch import nn

from taskneurons.continual.features import task_vector, vector_inputs
from taskneurons.continual.method_config import FeatureOptions
from taskneurons.data.tasks import Task
from taskneurons.provenance import model_fingerprint
from taskneurons.store.cache import SettingsCache
from taskneurons.store.settings import SettingsKey, model_identity

#: the cache file's name, beside a continual run's reference cache
VECTOR_FILE = "task_vectors.json"
#: format tag of the cache file
FORMAT = "taskneurons.TaskVectors/1"
#: what a vector is the mean of (part of the key, so another feature never reads this one)
FEATURE = "mean last-layer hidden state over the input's tokens"


def _texts_hash(texts: list[str]) -> str:
    """SHA-256 (first 16 hex digits) of a list of texts, in order."""
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


class TaskVectorCache:
    """Task vectors of one base model by their settings, in one JSON file.

    Args:
        path: the cache file (created on the first vector computed).
        model: the base model the vectors are computed on (its identity is in every key).

    Attributes:
        hits, misses: vectors read back / computed by this object.

    Raises:
        ChangedFileError: the file does not match the checksum saved in it.
        ValueError: ``path`` is not a task vector cache.
    """

    def __init__(self, path: str | os.PathLike, model: nn.Module) -> None:
        self.cache = SettingsCache(path, FORMAT, "task vector cache", sealed=True)
        self.model_id = model_identity(model_fingerprint(model))
        self.hits = self.misses = 0

    def key(self, task: Task, inputs: list[str], options: FeatureOptions) -> SettingsKey:
        """The settings a vector of ``task`` over ``inputs`` depends on."""
        return SettingsKey.of(
            kind="task_vector", feature=FEATURE, model=self.model_id, task=task.id,
            inputs=_texts_hash(inputs), n_inputs=len(inputs),
            batch_size=options.feature_batch_size, max_length=options.feature_max_length,
        )  # fmt: skip

    def vector(
        self, model: nn.Module, tokenizer, task: Task, options: FeatureOptions,
        progress: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """``task``'s vector ``[d]`` float32 (:func:`~taskneurons.continual.features.task_vector`
        with ``options``' ``n_vector_samples``, ``seed``, batch size and token limit), from the
        file when it has it, else computed on ``model`` (the base model) and written to it."""
        inputs = vector_inputs(task, options.n_vector_samples, options.seed)
        key = self.key(task, inputs, options)
        entry = self.cache.get(key)
        if entry is not None:
            self.hits += 1
            return torch.tensor(entry["vector"], dtype=torch.float32)
        self.misses += 1
        vec = task_vector(
            model, tokenizer, task, options.n_vector_samples, options.seed,
            options.feature_batch_size, options.feature_max_length, progress,
        )  # [d]; draws the same inputs (seeded)  # fmt: skip
        self.cache.put(key, {"vector": vec.tolist()})
        return vec
