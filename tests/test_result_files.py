"""Every stage's result reads itself back from its folder, and writes the same files again.

The experiments of ``stage_outputs.py`` (every stage, tiny Llama, small task folders) run once
through the runner; for each stage the returned result is the oracle: ``load`` of its folder
must give the same tables, rows, matrices and statistics, and ``save`` of the loaded result into
a new folder must write the files the stage wrote, byte for byte (plots: that they exist).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

from taskneurons.experiments.continual.table5 import ContinualOrdersResult, continual_orders_table
from taskneurons.experiments.finished_run import load_run
from taskneurons.experiments.runner import run_file
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.store.run_folder import RunFolder

import stage_outputs

#: (experiment of stage_outputs, stage)
STAGES = [
    ("sets", "detect"), ("sets", "deactivate"), ("sets", "table2"), ("sweep", "sweep"),
    ("training", "crosstrain"), ("training", "budget"), ("training", "prompts"),
    ("generalization", "overlap"), ("generalization", "generalization"),
    ("generalization", "controlled_overlap"), ("generalization", "similarity"),
    ("continual", "continual"), ("multitask", "multitask"),
]  # fmt: skip

#: What a stage writes as it runs but is not part of its result (files below these folders
#: or with these names): training runs' folders, the relevance scores a stage shares with the
#: later ones (scores/), lape's activation probabilities, checkpoints, the reference cache and
#: the task vectors kept beside it, the
#: saved model, the multi-task training folder and an NCFT run's task sets (neurons/, written
#: by the run beside its result: taskneurons.experiments.continual.task_neurons).
NOT_RESULTS = ("runs", "scores", "checkpoint", "model", "multitask", "neurons")
NOT_RESULT_FILES = (
    "activation_probability.safetensors",
    "reference_cache.json",
    "task_vectors.json",
)

#: Fields a loaded result does not have as the stage had them (see each class's docstring):
#: the scores a stage passes on to the next ones of its run, what a budget grid's files do not
#: record (a difference's number of examples), and the time split (recorded to the ms).
NOT_LOADED = {"scored", "n", "timings"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``name -> RunResult`` of each experiment of stage_outputs, run once on first use."""
    base = tmp_path_factory.mktemp("runs")
    from tiny_models import tiny_model
    from tiny_tokenizer import tiny_tokenizer

    model_dir = base / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = stage_outputs.experiments(
        str(model_dir), stage_outputs.write_tasks(base / "tasks"), base
    )
    done: dict[str, Any] = {}

    def get(name: str):
        if name not in done:
            path = base / f"{name}.yaml"
            path.write_text(yaml.safe_dump({**data[name], "out": str(base / name)}))
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                done[name] = run_file(path, progress=False, echo=None)
            finally:
                torch.set_num_threads(threads)
        return done[name]

    return get


def plain(obj: Any) -> Any:
    """A comparable form: dataclasses as dicts (minus :data:`NOT_LOADED`), tensors and arrays
    as lists, ``nan`` as a string, tuples as lists, sets by definition and masks."""
    if isinstance(obj, NeuronSet):
        return ["NeuronSet", obj.definition, {m: t.tolist() for m, t in obj.masks.items()}]
    if isinstance(obj, NeuronScores):
        return ["NeuronScores", obj.definition, {m: t.tolist() for m, t in obj.scores.items()}]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in NOT_LOADED
        }
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor, np.generic)):
        return plain(obj.tolist())
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


def _no_times(text: str) -> str:
    """``text`` with its durations cut out (a loaded time split is rounded to the ms)."""
    return stage_outputs.DURATION.sub("<T> s", text)


def _tensors(path: Path) -> tuple[dict, dict]:
    """A safetensors file's header metadata and tensors (as lists)."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k).tolist() for k in f.keys()}  # noqa: SIM118


def _files(folder: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if rel.parts[0] in NOT_RESULTS or path.name in NOT_RESULT_FILES:
            continue
        if any(part in NOT_RESULTS for part in rel.parts[:-1]):
            continue
        out[rel.as_posix()] = path
    return out


@pytest.mark.slow
@pytest.mark.parametrize("experiment, stage", STAGES)
def test_a_result_loads_from_its_folder_and_saves_the_same_files(runs, tmp_path, experiment, stage):
    run = runs(experiment)
    result = run.results[stage]
    folder = RunFolder(run.out_dir).stage_dir(stage, list(run.results))
    loaded = type(result).load(folder)
    assert plain(loaded) == plain(result)
    if hasattr(result, "timings"):
        assert loaded.timings.to_dict() == result.timings.to_dict()
    assert _no_times(loaded.markdown()) == _no_times(result.markdown())

    loaded.save(tmp_path / "copy")
    wrote, before = _files(tmp_path / "copy"), _files(folder)
    if len(run.results) == 1:  # the run folder itself: not the runner's own files
        runner = ("config.yaml", "README.md", "run_settings.json")
        before = {k: v for k, v in before.items() if k not in runner}
    assert sorted(wrote) == sorted(before)
    for rel, path in wrote.items():
        if path.suffix == ".png":
            assert path.stat().st_size > 0, rel
        elif path.suffix == ".safetensors":  # its header's key order varies from save to save
            assert _tensors(path) == _tensors(before[rel]), rel
        else:
            assert path.read_bytes() == before[rel].read_bytes(), rel


@pytest.mark.slow
def test_a_finished_run_loads_stage_by_stage(runs):
    run = runs("sets")
    loaded = load_run(run.out_dir)
    assert list(loaded.results) == ["detect", "deactivate", "table2"]
    assert loaded.config == run.config
    for stage, result in run.results.items():
        assert plain(loaded.results[stage]) == plain(result), stage


@pytest.mark.slow
def test_table5_over_orders_loads_and_saves_the_same_files(runs, tmp_path):
    run = runs("continual")
    result = continual_orders_table([run.out_dir], tmp_path / "table5")
    loaded = ContinualOrdersResult.load(tmp_path / "table5")
    assert plain(loaded) == plain(result) | {"out_dir": tmp_path / "table5"}
    assert loaded.markdown() == result.markdown()
    loaded.save(tmp_path / "copy")
    for name in ("table5_orders", "forgetting_orders"):
        for suffix in (".md", ".csv", ".json"):
            copy, first = (tmp_path / d / (name + suffix) for d in ("copy", "table5"))
            assert copy.read_bytes() == first.read_bytes(), name + suffix
    assert (tmp_path / "copy" / f"forgetting_{run.out_dir.name}.png").stat().st_size > 0
