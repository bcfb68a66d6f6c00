"""Task vectors kept across runs (TaskVectorCache) and test-input features kept across stages."""

from __future__ import annotations

import json

import pytest
import torch

from taskneurons.continual.features import task_vector
from taskneurons.continual.method_config import FeatureOptions
from taskneurons.continual.registry import make_method
from taskneurons.continual.stage_checkpoint import read_checkpoint
from taskneurons.continual.vector_cache import VECTOR_FILE, TaskVectorCache
from taskneurons.experiments.continual.method_run import continual_experiment
from test_continual import TRAIN, _config, method_config
from test_continual_tuning import _task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = FeatureOptions(n_vector_samples=10, feature_batch_size=4, seed=0)


def test_a_vector_is_computed_once_and_read_back_bit_for_bit(tok, tmp_path):
    """Oracle: task_vector computed afresh. The second cache object reads the file: no model."""
    task, model = _task("a", ["cat", "dog"]), tiny_model("llama")
    want = task_vector(model, tok, task, n=10, seed=0, batch_size=4)
    first = TaskVectorCache(tmp_path / VECTOR_FILE, model)
    assert torch.equal(first.vector(model, tok, task, OPTIONS), want)
    assert (first.hits, first.misses) == (0, 1)
    again = TaskVectorCache(tmp_path / VECTOR_FILE, model)
    got = again.vector(None, tok, task, OPTIONS)  # a forward would fail on None
    assert torch.equal(got, want) and got.dtype == torch.float32
    assert (again.hits, again.misses) == (1, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},  # another subset of the 24 inputs
        {"n_vector_samples": 12},
        {"feature_batch_size": 3},  # other batches: other rounding
        {"feature_max_length": 3},
    ],
)
def test_another_setting_is_another_vector(tok, tmp_path, change):
    task, model = _task("a", ["cat", "dog"]), tiny_model("llama")
    cache = TaskVectorCache(tmp_path / VECTOR_FILE, model)
    cache.vector(model, tok, task, OPTIONS)
    options = FeatureOptions(**{**OPTIONS.__dict__, **change})
    got = cache.vector(model, tok, task, options)
    assert cache.misses == 2
    want = task_vector(
        model, tok, task, options.n_vector_samples, options.seed, options.feature_batch_size,
        options.feature_max_length,
    )  # fmt: skip
    assert torch.equal(got, want)


def test_another_model_or_task_data_is_another_vector(tok, tmp_path):
    task, model = _task("a", ["cat", "dog"]), tiny_model("llama")
    TaskVectorCache(tmp_path / VECTOR_FILE, model).vector(model, tok, task, OPTIONS)
    other = tiny_model("llama")
    with torch.no_grad():
        other.model.embed_tokens.weight.add_(0.01)  # a fine-tuned copy: other weights
    cache = TaskVectorCache(tmp_path / VECTOR_FILE, other)
    cache.vector(other, tok, task, OPTIONS)
    cache.vector(other, tok, _task("a", ["red", "blue"]), OPTIONS)  # same id, other inputs
    assert (cache.hits, cache.misses) == (0, 2)


def test_a_changed_cache_file_is_refused(tok, tmp_path):
    task, model = _task("a", ["cat", "dog"]), tiny_model("llama")
    TaskVectorCache(tmp_path / VECTOR_FILE, model).vector(model, tok, task, OPTIONS)
    data = json.loads((tmp_path / VECTOR_FILE).read_text())
    entry = next(iter(data["entries"].values()))
    entry["vector"][0] += 1.0
    (tmp_path / VECTOR_FILE).write_text(json.dumps(data))
    with pytest.raises(Exception, match="checksum|changed"):
        TaskVectorCache(tmp_path / VECTOR_FILE, model)


def test_wncft_and_epi_runs_share_one_vector_per_task_and_give_the_same_results(tok, tmp_path):
    """Oracle: the same W-NCFT run in a folder of its own, without the shared file."""
    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    shared = tmp_path / "shared" / "reference_cache.json"
    alone = continual_experiment(
        tiny_model("llama"), tok, tasks, _config("wncft", tmp_path / "alone" / "refs.json"),
        tmp_path / "alone" / "run", progress=False,
    )  # fmt: skip
    first = continual_experiment(
        tiny_model("llama"), tok, tasks, _config("wncft", shared), tmp_path / "w1", progress=False
    )
    vectors = json.loads((shared.parent / VECTOR_FILE).read_text())["entries"]
    assert len(vectors) == 2  # one per task
    again = continual_experiment(
        tiny_model("llama"), tok, tasks, _config("wncft", shared), tmp_path / "w2", progress=False
    )
    epi = continual_experiment(
        tiny_model("llama"), tok, tasks, _config("epi", shared), tmp_path / "epi", progress=False
    )
    assert len(json.loads((shared.parent / VECTOR_FILE).read_text())["entries"]) == 2
    for res in (first, again):
        assert res.matrix.tolist() == alone.matrix.tolist()
    w_state = read_checkpoint(tmp_path / "w1" / "checkpoint").state
    e_state = read_checkpoint(tmp_path / "epi" / "checkpoint").state
    keys = sorted(k for k in e_state if k.startswith("prototype"))
    assert len(keys) == 2, sorted(e_state)
    for i, key in enumerate(keys):  # EPI's prototypes are W-NCFT's vectors (base model)
        assert torch.equal(e_state[key], w_state[f"vector{i}"])
    epi_alone = continual_experiment(
        tiny_model("llama"), tok, tasks, _config("epi", tmp_path / "ea" / "refs.json"),
        tmp_path / "ea" / "run", progress=False,
    )  # fmt: skip
    assert epi.matrix.tolist() == epi_alone.matrix.tolist()  # adapters off = the base model


def test_test_input_features_are_computed_once_per_list_of_texts(tok):
    model = tiny_model("llama")
    method = make_method(method_config(name="wncft", mode="inferred"), model, tok, TRAIN)
    method.trained = ["a", "b"]
    method.vectors = {t: torch.randn(model.config.hidden_size) for t in ("a", "b")}
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    texts = ["a cat", "the dog sleeps", "red", "two birds sing", "one"]
    first = method.routes(texts)
    n = len(calls)
    assert n == 1  # 5 texts, batches of 8: one forward
    assert method.routes(texts) == first and len(calls) == n  # kept: no forward
    method.routes(texts[:3])
    assert len(calls) == 2 * n  # another list: computed
    hook.remove()
