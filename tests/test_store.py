"""The run-folder layout and the one settings record (``taskneurons.store``), on hand-made folders."""

from __future__ import annotations

import hashlib
import json

import pytest

from taskneurons.continual.reference import reference_key
from taskneurons.store.cache import SettingsCache
from taskneurons.store.run_folder import FinishedRunError, RunFolder, read_record
from taskneurons.store.settings import SettingsKey, flatten, model_identity, read_keyed


def test_a_settings_key_names_the_keys_that_differ():
    key = SettingsKey.of(config={"k": 10, "pair": (1, 2)}, model={"arch": "a"}, data="h1")
    assert key.values["config"]["pair"] == [1, 2]  # as JSON reads it back
    recorded = {"config": {"k": 10, "pair": [1, 2]}, "model": {"arch": "b"}, "old": 1}
    assert key.differing(recorded) == ["model", "data", "old"]  # its keys, then recorded ones
    assert key.differing(recorded, keys=["old", "model"]) == ["old", "model"]
    assert key.differing(recorded, ignore=["old", "data"]) == ["model"]
    assert key.differing(None) == ["config", "model", "data"]
    assert key.changes(recorded, keys=["model"]) == ["model: {'arch': 'b'} vs {'arch': 'a'}"]
    assert key.changes({"data": "h0"}, keys=["data"], arrow="->") == ["data: 'h0' -> 'h1'"]
    with pytest.raises(KeyError, match="other model, data, old"):
        key.check(recorded, lambda names: f"other {', '.join(names)}", error=KeyError)
    key.check(key.to_dict(), lambda names: "never")  # the same settings: no refusal


def test_a_settings_digest_is_the_sha256_of_the_sorted_json():
    record = {"kind": "zero_shot", "model": {"arch": "a"}, "task": "sst2", "eval": {"n": 1}}
    text = json.dumps(record, sort_keys=True)
    expected = hashlib.sha256(text.encode()).hexdigest()[:32]
    assert SettingsKey.of(**record).digest() == expected
    assert reference_key(record) == expected  # reference caches written before stay valid
    assert SettingsKey.of(b=1, a=2).digest() == SettingsKey.of(a=2, b=1).digest()


def test_flatten_and_model_identity():
    assert flatten({"a": {"b": 1, "c": {"d": (2, 3)}}, "e": 4}, "x.") == {
        "x.a.b": 1,
        "x.a.c.d": [2, 3],
        "x.e": 4,
    }
    fp = {"model_type": "llama", "arch": "a", "weights": "w", "n_params": 9, "source": "/m"}
    assert model_identity(fp) == {"model_type": "llama", "arch": "a", "weights": "w", "n_params": 9}
    assert model_identity(None)["arch"] is None


def test_read_keyed_refuses_a_file_of_other_settings(tmp_path):
    key = SettingsKey.of(config={"k": 1}, model="m")
    assert read_keyed(tmp_path / "none.json", key, lambda p, n: "x") is None
    path = tmp_path / "evaluations.json"
    path.write_text(json.dumps({"key": {"config": {"k": 2}, "model": "m"}, "runs": [1]}))
    with pytest.raises(ValueError, match=r"evaluations.json: other \['config'\]"):
        read_keyed(path, key, lambda p, names: f"{p.name}: other {names}")
    path.write_text(json.dumps({"key": key.to_dict(), "runs": [1]}))
    assert read_keyed(path, key, lambda p, n: "x")["runs"] == [1]


def test_a_settings_cache_keeps_each_entry_with_its_settings(tmp_path):
    path = tmp_path / "cache.json"
    cache = SettingsCache(path, "fmt/1", "test cache")
    key = SettingsKey.of(task="a", model="m")
    assert cache.get(key) is None
    cache.put(key, {"score": 50.0})
    saved = json.loads(path.read_text())
    assert saved == {
        "format": "fmt/1",
        "entries": {key.digest(): {"score": 50.0, "record": {"task": "a", "model": "m"}}},
    }
    assert SettingsCache(path, "fmt/1", "test cache").get(key)["score"] == 50.0
    with pytest.raises(ValueError, match="not a test cache \\(format 'fmt/2'\\)"):
        SettingsCache(path, "fmt/2", "test cache")
    path.write_text("{")
    with pytest.raises(ValueError, match="cache.json: not a readable test cache"):
        SettingsCache(path, "fmt/1", "test cache")


def _touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_run_folder_owns_the_layout(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.stage_dir("overlap", ["overlap"]) == tmp_path / "run"
    assert run.stage_dir("overlap", ["detect", "overlap"]) == tmp_path / "run" / "overlap"
    assert run.config_path.name == "config.yaml" and run.index_path.name == "README.md"
    _touch(run.path / "config.yaml", "experiment: [detect, overlap]\nneurons: null\n")
    _touch(run.path / "README.md", "# index")
    _touch(run.path / "detect" / "b" / "neurons.safetensors", "")
    _touch(run.path / "detect" / "a" / "neurons.safetensors", "")
    _touch(run.path / "overlap" / "overlap_config.json", '{"groups": []}')
    _touch(run.path / "analyze-overlap" / "overlap_config.json", '{"groups": ["new"]}')
    assert run.settings()["experiment"] == ["detect", "overlap"]
    assert run.ran(["detect", "overlap", "similarity"]) == ["detect", "overlap"]
    assert run.find("overlap_config.json") == run.path / "overlap" / "overlap_config.json"
    assert run.record("overlap") == {"groups": []}  # never an analyze-* folder's
    assert run.record("similarity") is None
    assert run.detect_dir() == run.path / "detect"
    assert RunFolder(run.path / "detect").set_tasks() == ["a", "b"]
    assert RunFolder(run.path / "overlap").neuron_sets_dir() == run.path / "detect"
    assert [p.name for p in run.entries()] == ["analyze-overlap", "detect", "overlap"]
    with pytest.raises(FileNotFoundError, match="neuron folder not found"):
        RunFolder(tmp_path / "missing").detect_dir()


def test_the_sets_of_a_run_may_come_from_its_neurons_folder(tmp_path):
    sets = tmp_path / "sets"
    _touch(sets / "detect" / "a" / "neurons.safetensors", "")
    run = tmp_path / "run"
    _touch(run / "config.yaml", f"experiment: deactivate\nneurons: {sets}\n")
    assert RunFolder(run).neuron_sets_dir() == sets / "detect"
    assert RunFolder(tmp_path / "lonely").neuron_sets_dir() is None


def test_records_that_are_not_json_objects_are_refused(tmp_path):
    with pytest.raises(FinishedRunError, match="x.json: not a readable record"):
        read_record(_touch(tmp_path / "x.json", "{"))
    with pytest.raises(ValueError, match="y.json: not a detect record \\(expected a JSON object"):
        read_record(_touch(tmp_path / "y.json", "[1]"), "detect record", ValueError)


def test_load_run_needs_a_run_folder(tmp_path):
    from taskneurons.experiments.finished_run import load_run

    with pytest.raises(FinishedRunError, match="no config.yaml"):
        load_run(tmp_path)
