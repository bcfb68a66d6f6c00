"""trained(): the model is the trained one inside the block and bit-identical to before after it;
ModelSnapshot: weights, buffers, flags and modules put back exactly."""

from __future__ import annotations

import contextlib

import pytest
import torch
from peft import LoraConfig, get_peft_model

from taskneurons.training.loop import TrainOptions
from taskneurons.training.snapshot import ModelSnapshot, restored
from taskneurons.training.trained import trained
from test_training import cfg, random_set, toy_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: (method, family, extra config): merged and unmerged variants of neurons and LoRA
CASES = [
    ("neurons", "llama", {}),
    ("neurons", "gpt2", {"merge": True}),
    ("full", "llama", {}),
    ("full", "gpt2", {}),
    ("lora", "llama", {"lora_r": 2}),
    ("lora", "llama", {"lora_r": 2, "merge": True}),
]


class _Boom(Exception):
    pass


def everything(model) -> dict:
    """Independent copy of what must come back: tensors, buffers, flags, module names."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
        "attrs": sorted(vars(model)),
    }


def assert_same(model, before: dict) -> None:
    after = everything(model)
    assert after["modules"] == before["modules"]
    assert after["attrs"] == before["attrs"]
    assert after["flags"] == before["flags"]
    for kind in ("params", "buffers"):
        assert after[kind].keys() == before[kind].keys()
        for n, t in before[kind].items():
            assert torch.equal(after[kind][n], t), n


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits  # [1, 6, vocab]


IDS = torch.tensor([[1, 5, 9, 17, 33, 40]])


@pytest.mark.parametrize("raises", ["nowhere", "block", "training"])
@pytest.mark.parametrize(("method", "family", "extra"), CASES)
def test_trained_restores_bit_for_bit(tok, method, family, extra, raises):
    model = tiny_model(family)
    model.get_input_embeddings().weight.requires_grad_(False)  # a flag to keep
    before = everything(model)
    base_logits = logits(model, IDS)
    neurons = random_set(model, "ffn") if method == "neurons" else None
    config = cfg(method=method, lr=5e-2, max_steps=3, **extra)

    def on_step(step, record):
        assert not torch.allclose(logits(model, IDS), base_logits, atol=1e-4)  # trained
        if raises == "training" and step == 2:
            raise _Boom

    options = TrainOptions(on_step=on_step)
    with pytest.raises(_Boom) if raises != "nowhere" else contextlib.nullcontext():
        with trained(
            model, tok, toy_task(n=8), config, neurons=neurons, progress=False, options=options
        ) as res:
            assert res.steps == 3 and res.method == method
            assert not torch.allclose(logits(res.model, IDS), base_logits, atol=1e-4)
            if raises == "block":
                raise _Boom
    assert_same(model, before)
    assert torch.equal(logits(model, IDS), base_logits)


def test_trained_full_changes_the_weights_in_place(tok):
    model = tiny_model("llama")
    before = everything(model)
    with trained(model, tok, toy_task(n=8), cfg(method="full", max_steps=2), progress=False):
        changed = [
            n for n, p in model.named_parameters() if not torch.equal(p, before["params"][n])
        ]
        assert changed  # the very model object was trained
    assert_same(model, before)


def test_snapshot_undoes_peft_weights_and_flags():
    model = tiny_model("llama")
    before = everything(model)
    snap = ModelSnapshot.take(model)
    assert all(t.device.type == "cpu" for t in snap.state.values())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
            p.requires_grad_(False)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "down_proj"]))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    snap.restore(model)
    assert_same(model, before)
    # a second PEFT model on the restored model finds no adapter name taken
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert list(peft.peft_config) == ["default"]


def test_restored_on_error_and_the_weights_check():
    model = tiny_model("gpt2")
    before = everything(model)
    with pytest.raises(_Boom), restored(model):
        with torch.no_grad():
            next(model.parameters()).mul_(3.0)
        raise _Boom
    assert_same(model, before)
    # a snapshot whose tensors do not give back the hashed weights is refused
    model = tiny_model("llama")
    snap = ModelSnapshot.take(model)
    key = "model.layers.1.mlp.down_proj.weight"  # one of the hashed weights
    snap.state[key] = snap.state[key] + 1.0
    with pytest.raises(RuntimeError, match="not restored"):
        snap.restore(model)
