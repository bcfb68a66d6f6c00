"""MIGU: each step updates only the units of the linear layers with the largest outputs."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from taskneurons.continual.base import run_stage
from taskneurons.continual.registry import METHODS, make_method
from taskneurons.continual.strategies.migu import MagnitudeMask, linear_layers
from taskneurons.data.tasks import Example, Task
from taskneurons.losses import loss_width
from taskneurons.training.batches import TrainData
from test_continual import PROMPT, TRAIN, method_config, mood_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

FRACTION = 0.3


def _expected_rows(model, tok, task, cfg, units: dict) -> dict[str, torch.Tensor]:
    """The oracle: top-30 % units of every linear layer by sum |output| over the step's
    examples, each run alone (no padding) up to its last position that predicts a target."""
    data = TrainData.encode(tok, [task], cfg)
    _step, _epoch, chunk = next(data.steps(0))
    sums: dict[str, torch.Tensor] = {}
    hooks = [
        mod.register_forward_hook(
            lambda _m, _i, out, name=name: sums.__setitem__(
                name, sums.get(name, 0) + out.abs().sum(dim=(0, 1))
            )
        )
        for name, mod in model.named_modules()
        if isinstance(mod, (torch.nn.Linear, Conv1D)) and name != "lm_head"
    ]
    with torch.no_grad():
        for batch in data.micro_batches(chunk, 0, 1):
            for row in range(batch["input_ids"].shape[0]):  # each example alone
                n = int(batch["attention_mask"][row].sum())
                ids, labels = (
                    batch["input_ids"][row : row + 1, :n],
                    batch["labels"][row : row + 1, :n],
                )
                model(input_ids=ids[:, : loss_width(labels)])
    for h in hooks:
        h.remove()
    units.update({n: s.numel() for n, s in sums.items()})
    return {
        n: torch.topk(s, math.ceil(FRACTION * s.numel())).indices.sort().values
        for n, s in sums.items()
    }


@pytest.mark.parametrize(
    "family,optimizer", [("llama", "adamw"), ("llama", "sgd"), ("gpt2", "adamw")]
)
def test_migu_updates_only_the_selected_fraction(tok, family, optimizer):
    assert "migu" in METHODS
    task = mood_task()
    # one step over all 12 train examples (the oracle sees the same batch)
    cfg = TRAIN.replace(max_steps=1, batch_size=16, optimizer=optimizer, lr=0.5, prompt=PROMPT)
    model = tiny_model(family)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    units: dict[str, int] = {}  # layer -> its output units
    expected = _expected_rows(tiny_model(family), tok, task, cfg, units)
    method = make_method(method_config(name="migu", fraction=FRACTION), model, tok, cfg)
    summary = run_stage(method, task, 0)
    layers = linear_layers(model)
    assert len(layers) == len(expected) > 0
    for name, p in model.named_parameters():
        changed = p.detach() != before[name]
        owner = name.rsplit(".", 1)[0]
        if owner not in layers:
            assert not changed.any(), f"{name} is not a linear layer's and changed"
            continue
        if isinstance(layers[owner], Conv1D) and name.endswith(".weight"):
            changed = changed.T  # [in, out] -> [out, in]
        rows = changed.reshape(changed.shape[0], -1).any(1).nonzero().flatten()
        want = expected[name.rsplit(".", 1)[0]]
        assert torch.equal(rows, want), f"{name}: rows {rows.tolist()} != top {want.tolist()}"
    assert summary["updated_share"] == pytest.approx(
        sum(len(v) for v in expected.values()) / sum(units.values())
    )


def _varied_task() -> Task:
    """12 examples of 12 different lengths: micro-batches of them are padded."""
    train = [
        Example(
            f"the film was {'really ' * i}{'good' if i % 2 else 'bad'}", "good" if i % 2 else "bad"
        )
        for i in range(12)
    ]
    return Task(id="varied", kind="classification", instruction="Classify", labels=["good", "bad"],
                metric="accuracy", train=train, test=train[:4])  # fmt: skip


def _alone_sums(model, tok, task, cfg) -> dict[str, torch.Tensor]:
    """sum |output| per unit over the examples of the first step, each run alone (no padding)
    up to its last position that predicts a target."""
    data = TrainData.encode(tok, [task], cfg)
    _step, _epoch, chunk = next(data.steps(0))
    sums: dict[str, torch.Tensor] = {}
    hooks = [
        mod.register_forward_hook(
            lambda _m, _i, out, name=name: sums.__setitem__(
                name, sums.get(name, 0) + out.abs().sum(dim=(0, 1))
            )
        )
        for name, mod in linear_layers(model).items()
    ]
    with torch.no_grad():
        for example in data.micro_batches(chunk, 0, 1):
            for row in range(example["input_ids"].shape[0]):
                n = int(example["attention_mask"][row].sum())
                labels = example["labels"][row : row + 1, :n]
                model(input_ids=example["input_ids"][row : row + 1, : loss_width(labels)])
    for h in hooks:
        h.remove()
    return sums


@pytest.mark.parametrize("batch_size,grad_accum", [(12, 1), (4, 3), (1, 12)])
def test_migu_magnitudes_do_not_depend_on_the_micro_batches(
    tok, monkeypatch, batch_size, grad_accum
):
    """One step over 12 examples of different lengths, cut into micro-batches three ways: the
    summed magnitudes are those of the examples run alone (padding and the positions after an
    example's last target, which a longer neighbour makes the batch run, left out)."""
    task = _varied_task()
    cfg = TRAIN.replace(max_steps=1, batch_size=batch_size, grad_accum=grad_accum, prompt=PROMPT)
    want = _alone_sums(tiny_model("llama"), tok, task, cfg)
    seen: list[dict[str, torch.Tensor]] = []
    real = MagnitudeMask.before_step
    monkeypatch.setattr(
        MagnitudeMask, "before_step", lambda self: seen.append(self.summed()) or real(self)
    )
    method = make_method(
        method_config(name="migu", fraction=FRACTION), tiny_model("llama"), tok, cfg
    )
    run_stage(method, task, 0)
    assert len(seen) == 1 and set(seen[0]) == set(want)
    for name, sums in want.items():
        torch.testing.assert_close(seen[0][name], sums, rtol=1e-4, atol=1e-4, msg=name)
