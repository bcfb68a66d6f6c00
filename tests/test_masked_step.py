"""The masked optimizer step (issue 26, build 3): neuron training in the base weights.

Oracles: the NeuronDelta method (the same entries changed by the same amounts), the weights
before training (every entry outside the selection bit-identical), and one process (2
processes through Accelerate, and 2 FSDP shards, give the same weights).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taskneurons.training.loop import train
from taskneurons.training.methods import MaskedNeuronsMethod, make_method
from taskneurons.training.neuron_delta import selection_masks
from taskneurons.training.train_config import TrainConfig
from test_training import PROMPT, _free_port, param_state, random_set, toy_task

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

HELPER = Path(__file__).with_name("dist_masked.py")


@pytest.mark.parametrize(
    "opt", [dict(optimizer="sgd", momentum=0.9), dict(optimizer="adamw", weight_decay=0.1)]
)
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_masked_step_trains_only_the_selected_slices(family, opt):
    task, tok = toy_task(n=8), tiny_tokenizer()
    cfg = dict(lr=0.05, max_steps=3, batch_size=4, prompt=PROMPT, **opt)
    assert isinstance(
        make_method(TrainConfig(neuron_update="masked"), object()), MaskedNeuronsMethod
    )
    ref_model = tiny_model(family)
    neurons = random_set(ref_model, "ffn")
    ref = train(ref_model, tok, task, TrainConfig(**cfg), neurons=neurons, progress=False)
    model = tiny_model(family)
    before = param_state(model)
    res = train(model, tok, task, TrainConfig(neuron_update="masked", **cfg), neurons=neurons,
                progress=False)  # fmt: skip
    assert res.n_trainable == sum(m.numel() for m in selection_masks(model, neurons).values())
    for name, d in ref.delta.state_dict().items():  # the delta method's change
        torch.testing.assert_close(res.delta.state_dict()[name], d, rtol=1e-4, atol=1e-6)
    after = param_state(model)  # not merged: the base weights as they were
    assert all(torch.equal(after[n], t) for n, t in before.items())
    res.delta.detach()
    merged = train(model, tok, task, TrainConfig(neuron_update="masked", merge=True, **cfg),
                   neurons=neurons, progress=False)  # fmt: skip
    masks = selection_masks(model, neurons)
    now = param_state(merged.model)
    for n, t in before.items():
        if n in masks:
            assert torch.equal(now[n][~masks[n]], t[~masks[n]]), n
            assert not torch.equal(now[n][masks[n]], t[masks[n]]), n
        else:
            assert torch.equal(now[n], t), n


def _run(mode: str, tmp_path, processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TN_OUT": str(tmp_path), "TN_MODE": mode}
    cmd = [sys.executable, str(HELPER)]
    if processes > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                    "--master_port", str(_free_port())]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(tmp_path / f"{mode}_{processes}.pt")


@pytest.mark.slow
def test_masked_two_processes_equal_one(tmp_path):
    """torchrun --nproc_per_node 2 (Accelerate, gloo): the same delta and weights as 1."""
    one, two = _run("train", tmp_path, 1), _run("train", tmp_path, 2)
    assert any(float(t.abs().max()) > 0 for t in one["delta"].values())
    for key in ("delta", "params"):
        for n, t in one[key].items():
            torch.testing.assert_close(two[key][n], t, rtol=1e-5, atol=1e-6, msg=f"{key} {n}")


@pytest.mark.slow
def test_fsdp_masked_training(tmp_path):
    """FSDP (gloo, CPU, use_orig_params=True), 2 shards: every untrained entry bit-identical,
    the trained ones as in one process (no FSDP) within float rounding."""
    model = tiny_model("llama")
    before = dict(model.state_dict())
    masks = selection_masks(model, random_set(model, "ffn"))
    one, two = _run("fsdp", tmp_path, 1), _run("fsdp", tmp_path, 2)
    assert set(two) == set(before)
    for n, t in before.items():
        if n in masks:
            assert torch.equal(two[n][~masks[n]], t[~masks[n]]), n
            assert not torch.equal(two[n][masks[n]], t[masks[n]]), n
        else:
            assert torch.equal(two[n], t), n
        torch.testing.assert_close(two[n], one[n], rtol=1e-5, atol=1e-6, msg=n)
