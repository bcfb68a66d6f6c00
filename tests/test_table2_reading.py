"""Table 2's one-line reading: paired differences over the same test examples, by hand."""

from __future__ import annotations

from taskneurons.experiments.finetuning.table2 import paired_differences, reading


def test_paired_differences_and_their_line():
    examples = {
        "Zero-shot": {"a": [0.0, 0.0, 100.0, 0.0]},
        "Train-Random": {"a": [0.0, 100.0, 0.0, 0.0]},
        "Train-Task": {"a": [100.0, 100.0, 100.0, 0.0]},
    }
    pairs = paired_differences(examples, seed=0)["a"]
    random, zero = pairs["Train-Task - Train-Random"], pairs["Train-Task - Zero-shot"]
    assert random["mean"] == 50.0 and zero["mean"] == 50.0  # (100 + 0 + 100 + 0) / 4
    assert random["n"] == 4 and 0.0 <= random["low"] <= 50.0 <= random["high"] <= 100.0
    # sign flips of (100, 0, 100, 0): |mean| >= 50 in 2 of the 4 equally likely sign pairs
    assert 0.3 < random["p_value"] < 0.7
    line = reading("a", pairs)
    assert line.startswith("a: Train-Task - Train-Random +50.0 points (95 % CI ")
    assert "4 test examples, one training run each" in line


def test_the_iou_line_of_a_detection():
    import torch

    from taskneurons.experiments.specificity.detect import DetectionResult
    from taskneurons.neurons.neuron_set import NeuronSet

    a = torch.zeros(2, 10, dtype=torch.bool)
    a[0, :2] = True  # 2 of 20 neurons: f = 0.1
    b = torch.zeros(2, 10, dtype=torch.bool)
    b[0, 1:3] = True  # shares 1 of 3: IoU 1/3
    sets = {"a": NeuronSet("ffn", {"ffn": a}), "b": NeuronSet("ffn", {"ffn": b})}
    result = DetectionResult(sets, {}, [[1.0, 1 / 3], [1 / 3, 1.0]], ".")
    line = result.iou_reading().strip()
    # random sets of a share f overlap by f^2 / (2f - f^2) = f / (2 - f) = 0.1 / 1.9
    assert line.startswith("mean pairwise IoU 0.333, against 0.053 for two random sets of 10.0 %")
