"""MIGU: magnitude-based gradient updating (Du et al. 2024), one model, no task ids, no replay.

Every optimizer step updates only the output units (rows of ``W``, entries of the bias) of
each linear layer (``nn.Linear``; GPT-2's ``Conv1D``) whose outputs on the step's batch have
the largest L1 magnitude: forward
hooks sum ``|y|`` per output unit over the step's examples and their tokens (``[out]`` per
layer, all micro-batches of the step; each example's real tokens up to its last position that
predicts a loss token, so the sums do not depend on how the step is cut into micro-batches or
padded), and a ``before_step`` hook of the
one training loop (:class:`~taskneurons.training.loop.TrainOptions`) keeps the gradients of
the top ``fraction`` of each layer's units (``ceil(fraction * out)``, at least one) and zeroes
the rest before clipping and the optimizer step. The trained tensors are the weights and
biases of the model's linear layers but the LM head; embeddings and norms stay frozen.

A unit left out of a step gets a zero gradient in that step. With SGD (no momentum, no weight
decay) it is then unchanged by that step; with AdamW the moments of earlier steps still move
it a little (as in MIGU's own code, which masks gradients the same way). Under several
processes (``torchrun``, ``accelerate launch``) the magnitudes are summed across them before
the selection (one ``all_reduce`` per step), so each step keeps the units one process would
keep on the whole step's batch.

Example:
    >>> method = MIGU(model, tok, MethodConfig.make("migu", fraction=0.3), TrainConfig())  # doctest: +SKIP
    >>> run_stage(method, sst2, 0)["updated_share"]  # mean share of units kept per step  # doctest: +SKIP
    0.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from transformers.pytorch_utils import Conv1D

from taskneurons.continual.method_config import MethodConfig
from taskneurons.continual.strategies.seqft import SeqFT
from taskneurons.data.tasks import Task
from taskneurons.training.loop import TrainOptions, train


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's linear layers by name (``nn.Linear``, and GPT-2's ``Conv1D`` whose weight is
    ``[in, out]``), the LM head (output embeddings) left out.

    Example:
        >>> sorted(linear_layers(model))[:1]  # doctest: +SKIP
        ['model.layers.0.mlp.down_proj']
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, (nn.Linear, Conv1D)) and mod is not head
    }


def _unit_axis(layer: nn.Module) -> int:
    """The weight's axis of the output units: 0 for ``nn.Linear`` ``[out, in]``, 1 for
    ``Conv1D`` ``[in, out]``."""
    return 1 if isinstance(layer, Conv1D) else 0


class MagnitudeMask:
    """Per step, the units of each linear layer with the largest summed ``|output|``.

    Use as a context manager (it adds the forward hooks, and takes them off on exit) and pass
    :meth:`before_step` to the training loop. ``selected[name]`` is the last step's unit mask
    ``[out]`` of each layer; ``shares`` the kept share of all units, per step.
    """

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module], fraction: float) -> None:
        self.model = model
        self.layers = layers
        self.fraction = fraction
        self.sums: dict[str, torch.Tensor] = {}  # name -> [out] float32
        self.selected: dict[str, torch.Tensor] = {}  # name -> [out] bool
        self.shares: list[float] = []
        self._handles: list[Any] = []
        self._mask: torch.Tensor | None = None  # [b, pos] of the current forward

    def __enter__(self) -> MagnitudeMask:
        self._handles.append(
            self.model.register_forward_pre_hook(self._read_mask, with_kwargs=True)
        )
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._adder(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _read_mask(self, _module: nn.Module, _args: Any, kwargs: dict) -> None:
        """The positions counted: real tokens up to each example's last position that predicts
        a loss token (``logits_to_keep`` as :func:`~taskneurons.losses.per_example_loss`
        passes it), the positions the example's forward alone covers, whatever batch it is in."""
        mask = kwargs.get("attention_mask")  # [b, pos]
        keep = kwargs.get("logits_to_keep")  # [b, pos] bool, or an int (no per-example mask)
        if mask is not None and isinstance(keep, torch.Tensor) and keep.shape == mask.shape:
            pos = torch.arange(keep.shape[1], device=keep.device)  # [pos]
            last = torch.where(keep.bool(), pos, -1).amax(1, keepdim=True)  # [b, 1]
            mask = mask.bool() & (pos <= last)  # [b, pos]
        self._mask = mask

    def _adder(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            y = output.detach().float().abs()  # [b, pos, out]
            mask = self._mask
            if mask is not None and tuple(mask.shape) == tuple(y.shape[:2]):
                y = y * mask.to(y.device, y.dtype).unsqueeze(-1)  # real tokens only
            total = y.reshape(-1, y.shape[-1]).sum(0)  # [out]
            self.sums[name] = self.sums[name] + total if name in self.sums else total

        return hook

    def summed(self) -> dict[str, torch.Tensor]:
        """The step's ``|output|`` sums, added across processes when several run (every
        layer, zeros where this process saw no example: every process joins the sum)."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.sums
        device = next(iter(self.layers.values())).weight.device
        sizes = [layer.weight.shape[_unit_axis(layer)] for layer in self.layers.values()]
        parts = [
            self.sums.get(name, torch.zeros(n, device=device)).to(device)
            for name, n in zip(self.layers, sizes, strict=True)
        ]
        flat = torch.cat(parts)  # [sum of out]
        dist.all_reduce(flat)
        return dict(zip(self.layers, flat.split(sizes), strict=True))

    def before_step(self) -> None:
        """Zero the gradients of every unit outside its layer's top ``fraction``; reset."""
        kept = total = 0
        step_sums = self.summed()
        for name, layer in self.layers.items():
            sums = step_sums.get(name)
            if sums is None or layer.weight.grad is None:
                continue
            n = sums.numel()
            keep = torch.zeros(n, dtype=torch.bool, device=sums.device)  # [out]
            keep[torch.topk(sums, max(1, math.ceil(self.fraction * n))).indices] = True
            drop = ~keep.to(layer.weight.grad.device)
            layer.weight.grad.index_fill_(_unit_axis(layer), drop.nonzero().flatten(), 0.0)
            if layer.bias is not None and layer.bias.grad is not None:
                layer.bias.grad[drop] = 0
            self.selected[name] = keep.cpu()
            kept += int(keep.sum())
            total += n
        self.sums = {}
        self.shares.append(kept / max(total, 1))


class MIGU(SeqFT):
    """One model; each step trains only the largest-magnitude units of every linear layer."""

    name = "migu"

    def train_task(self, task: Task, stage: int) -> dict:
        layers = linear_layers(self.model)
        if not layers:
            raise ValueError("MIGU: the model has no linear layer besides the LM head")
        params = {f"{n}.{k}": p for n, m in layers.items() for k, p in m.named_parameters()}
        trainable = set(map(id, params.values()))
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        cfg = self.stage_config(stage, method="full", merge=False)
        try:
            with MagnitudeMask(self.model, layers, self.config.fraction) as mask:
                opts = TrainOptions(params=params, before_step=mask.before_step)
                res = train(
                    self.model, self.tokenizer, [task], cfg, progress=self.progress, options=opts
                )
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        share = sum(mask.shares) / max(len(mask.shares), 1)
        return {**res.summary(), "fraction": self.config.fraction, "updated_share": share}


@dataclass
class MiguConfig(MethodConfig, name="migu"):
    """MIGU's option.

    Attributes:
        fraction: share of each linear layer's output units updated per step (those with the
            largest L1 output magnitude on the step's batch), in ``(0, 1]``.
    """

    method_class: ClassVar[Any] = MIGU

    name: str = "migu"
    fraction: float = 0.3

    def validate(self) -> None:
        super().validate()
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
