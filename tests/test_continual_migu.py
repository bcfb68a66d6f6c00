"""MIGU: each step updates only the units of the linear layers with the largest outputs."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from taskneurons.continual.base import run_stage
from taskneurons.continual.registry import METHODS, make_method
from taskneurons.continual.strategies.migu import linear_layers
from taskneurons.losses import loss_width
from taskneurons.training.batches import TrainData
from test_continual import PROMPT, TRAIN, method_config, mood_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

FRACTION = 0.3


def _expected_rows(model, tok, task, cfg, units: dict) -> dict[str, torch.Tensor]:
    """The oracle: top-30 % units of every linear layer by sum |output| over the real tokens
    of the one batch (padding left out), from a plain forward of the same examples."""
    data = TrainData.encode(tok, [task], cfg)
    _step, _epoch, chunk = next(data.steps(0))
    sums: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor] = []
    hooks = [
        mod.register_forward_hook(
            lambda _m, _i, out, name=name: sums.__setitem__(
                name, sums.get(name, 0) + (out.abs() * mask[-1][..., None]).sum(dim=(0, 1))
            )
        )
        for name, mod in model.named_modules()
        if isinstance(mod, (torch.nn.Linear, Conv1D)) and name != "lm_head"
    ]
    with torch.no_grad():
        for batch in data.micro_batches(chunk, 0, 1):
            width = loss_width(batch["labels"])  # the training forward stops at the last target
            mask.append(batch["attention_mask"][:, :width].float())
            model(input_ids=batch["input_ids"][:, :width], attention_mask=mask[-1].long())
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
