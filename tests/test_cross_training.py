"""The cross-training matrix on a tiny model: every (neurons, data) pair, gains, statistics."""

from __future__ import annotations

import json

import pytest
import torch

from taskneurons.data.load import load_task
from taskneurons.experiments.finetuning.cross_training import cross_training
from taskneurons.experiments.finetuning.crosstrain_stage import CrossTrainingConfig
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect import detect_neurons
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.models.loading import load_model


def test_cross_training_matrix(tiny_folder, task_folders, tmp_path):
    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(f)) for f in task_folders]
    sets = detect_neurons(
        RunContext.of(model, tok, tasks, progress=False),
        DetectConfig.from_dict({"k": 20, "attribution": {"n_examples": 4}}), tmp_path / "d",
    ).sets  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = CrossTrainingConfig.from_dict(
        {"n_train": 4, "n_test": 4, "n_boot": 20, "train": {"batch_size": 2, "lr": 0.05}}
    )
    ctx = RunContext.of(model, tok, tasks, progress=False, sets=sets)
    res = cross_training(ctx, config, tmp_path / "x")
    names = [t.id for t in tasks]
    assert res.table.names == names and set(res.runs) == {f"{i}/{j}" for i in names for j in names}
    zero = res.table.row("Zero-shot")
    gains = res.specificity.effects
    for a, i in enumerate(names):
        for b, j in enumerate(names):
            assert gains[a][b] == pytest.approx(res.table.matrix[i][j] - zero[j])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for name in ("cross_training.md", "cross_gain.png", "specificity.json", "specificity.md"):
        assert (tmp_path / "x" / name).is_file(), name
    saved = json.loads((tmp_path / "x" / "specificity.json").read_text())
    assert saved["gain"]["effects"] == gains
    assert "specificity of the gains" in res.markdown()


def test_needs_neuron_training():
    with pytest.raises(ValueError, match="trains neurons"):
        CrossTrainingConfig.from_dict({"train": {"method": "full"}})
