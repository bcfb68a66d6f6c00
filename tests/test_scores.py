"""NeuronScores file round-trip keeps values, meta and the module (neuron-id) order."""

import pytest
import torch

from taskneurons.neurons.scores import NeuronScores


def test_round_trip_keeps_module_order(tmp_path):
    s = NeuronScores(
        "linear",
        {"gate": torch.rand(2, 8), "up": torch.rand(2, 8), "down": torch.rand(2, 3)},
        {"task": "t", "n": 3},
    )
    path = s.save(tmp_path / "scores.safetensors")
    back = NeuronScores.load(path)
    assert back.modules == ["gate", "up", "down"]
    assert back.meta == {"task": "t", "n": 3}
    assert torch.equal(back.flat(), s.flat())
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_rejects_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a taskneurons scores file"):
        NeuronScores.load(tmp_path / "x.safetensors")
