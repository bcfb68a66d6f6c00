"""The hooks that accumulate ``g·a`` at every neuron site during a relevance backward.

Two ways, with the same sums:

* :class:`ScoreAccumulator` (plain): a forward (pre-)hook keeps each activation and registers a
  tensor hook on it that multiplies it with its gradient during the backward;
* :class:`CheckpointedAccumulator` (with activation checkpointing, :func:`checkpointed_layers`):
  a forward (pre-)hook passes the activation through an identity autograd node that saves
  it and whose backward multiplies the gradient with it. Under checkpointing a layer's forward runs
  twice (once more during the backward, to rebuild what it saved); tensor hooks registered from
  a forward hook would be registered again at every recomputation (on a 7B model this exhausted
  139 GiB, the issue's pitfall), while only the first forward's node is ever reached by the
  backward. The activation is a saved tensor of that node, so checkpointing drops it in the
  forward and rebuilds it in the backward like any other.

Each product ``[batch, pos, units]`` is reduced at once (:func:`add_products`): masked to the
real tokens, summed over positions per example, then over examples (``abs`` per example for
``aggregate="example"``), added to float64 sums on the CPU: whatever the model's dtype (bf16,
fp16), the scores are accumulated in float64 from float32 products.

Example:
    >>> with ScoreAccumulator(space, "example") as acc:  # doctest: +SKIP
    ...     acc.set_token_mask(batch["attention_mask"])
    ...     per_example_loss(model, batch).sum().backward()
    ...     acc.end_batch()
    >>> acc.sums["ffn"].shape  # [layers, d_ff]  # doctest: +SKIP
    torch.Size([30, 1536])
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from taskneurons.models.adapters import get_adapter
from taskneurons.neurons.attribution_config import Aggregate
from taskneurons.neurons.sites import hook_sites
from taskneurons.neurons.space import NeuronSpace


def add_products(acc: ScoreAccumulator, grad: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``g·a`` of one site reduced to ``[units]`` (per ``acc.aggregate``), in float32.

    ``grad`` and ``value`` are ``[batch, pos, units]`` (or flattened ``[batch*pos, units]``).
    """
    prod = grad.float() * value.float()  # [batch, pos, units]
    if acc._token_mask is not None:
        # some families (OPT) run the FFN on flattened [batch*pos, units] states
        mask = acc._token_mask
        prod = prod.reshape(mask.shape[0], mask.shape[1], -1) * mask.to(prod.device, prod.dtype)
    if acc.aggregate == "token_abs":
        per_example = prod.abs().sum(dim=1)  # [batch, units]
    else:
        per_example = prod.sum(dim=1)  # [batch, units]
    if acc.aggregate == "example":
        return per_example.abs().sum(dim=0)  # [units]
    return per_example.sum(dim=0)  # [units]


class ScoreAccumulator:
    """Hooks that accumulate per-example-reduced ``g·a`` at every NeuronSpace site.

    Attributes:
        sums: module -> float64 ``[layers, units]`` on the CPU, summed over the batches.
    """

    def __init__(self, space: NeuronSpace, aggregate: Aggregate):
        self.space = space
        self.aggregate = aggregate
        # float64 running sums on CPU: [layers, units] per module (tiny next to activations)
        self.sums = space.zeros(torch.float64)
        self._token_mask: torch.Tensor | None = None  # [batch, pos, 1]
        self._acts: dict[tuple[int, str], torch.Tensor] = {}  # this batch's activations
        self._handles: list = []

    def __enter__(self) -> ScoreAccumulator:
        self._handles = hook_sites(
            self.space, lambda layer, module: lambda act: self._watch(act, layer, module)
        )
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def set_token_mask(self, attention_mask: torch.Tensor) -> None:
        """Start a batch: its padding mask ``[batch, pos]``."""
        self._token_mask = attention_mask[..., None]  # [batch, pos, 1]

    def end_batch(self) -> None:
        """Release the batch's tensors (activations not reached by the backward, the mask)."""
        self._acts.clear()
        self._token_mask = None

    def _keep(self, act: torch.Tensor, layer: int, module: str) -> torch.Tensor:
        """Make ``act`` a graph leaf if nothing upstream needs a gradient; keep its values."""
        if not act.requires_grad:
            # nothing upstream needs a gradient: this activation is a leaf, start the graph here
            act = act.detach().requires_grad_(True)
        value = act.detach()
        if self.space.site(module).kind == "output":
            # the model may add into a linear's output in place (Falcon: mlp_out += attn_out),
            # which would change a shared view; keep the activation's own values
            value = value.clone()
        # kept in a dict, not in a closure: a closure holding the tensor whose grad_fn holds the
        # closure is a reference cycle that only the cyclic garbage collector frees
        self._acts[(layer, module)] = value
        return act

    def _add(self, grad: torch.Tensor, layer: int, module: str) -> None:
        value = self._acts.pop((layer, module))
        self.sums[module][layer] += add_products(self, grad, value).to("cpu", torch.float64)

    def _watch(self, act: torch.Tensor, layer: int, module: str) -> torch.Tensor:
        act = self._keep(act, layer, module)
        act.register_hook(lambda grad: self._add(grad, layer, module))
        return act


class _Tap(torch.autograd.Function):
    """Identity in the forward; in the backward, ``g·a`` of the activation to the accumulator.

    A graph node made during the forward, not a hook on a tensor: under checkpointing the
    recomputed layer makes another node that no backward ever reaches, so each product is
    taken once. The activation is a saved tensor of the node, so under checkpointing it is
    not kept during the forward: unpacking it in the backward recomputes the layer.
    """

    @staticmethod
    def forward(ctx, act: torch.Tensor, acc: CheckpointedAccumulator, key: tuple) -> torch.Tensor:
        ctx.acc, ctx.key = acc, key
        ctx.save_for_backward(act)
        # output sites: a copy, which the model may change in place (Falcon adds into it)
        return act.view_as(act) if acc.space.site(key[1]).kind == "input" else act.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (value,) = ctx.saved_tensors  # [batch, pos, units]
        layer, module = ctx.key
        contrib = add_products(ctx.acc, grad, value)  # [units]
        ctx.acc.sums[module][layer] += contrib.to("cpu", torch.float64)
        return grad, None, None


class CheckpointedAccumulator(ScoreAccumulator):
    """The same sums, safe under activation checkpointing (:func:`checkpointed_layers`).

    The forward hook passes the activation through :class:`_Tap`, whose backward multiplies
    the gradient with the activation. (A module backward hook on the site would do the same
    for most families, but it wraps the module's output in a view that Falcon then changes in
    place: "Output 0 of BackwardHookFunction is a view and is being modified inplace"; and an
    output site's gradient can arrive before the recomputation that rebuilds its value.)
    """

    def _watch(self, act: torch.Tensor, layer: int, module: str) -> torch.Tensor:
        if not act.requires_grad:
            act = act.detach().requires_grad_(True)  # nothing upstream needs a gradient
        return _Tap.apply(act, self, (layer, module))


@contextlib.contextmanager
def checkpointed_layers(model: nn.Module) -> Iterator[None]:
    """Run every decoder layer of ``model`` under activation checkpointing (non-reentrant).

    Each layer keeps only its inputs during the forward and runs again during the backward.
    Independent of ``model.training`` (Transformers' own checkpointing needs training mode) and
    of the family: the layers are the adapter's. Early stopping of the recomputation is off,
    so every hook of a recomputed layer runs.

    Example:
        >>> with checkpointed_layers(model):  # doctest: +SKIP
        ...     per_example_loss(model, batch).sum().backward()
    """
    layers = get_adapter(model).layers
    patched = []  # (layer, its own forward attribute or None): Accelerate's, under a device_map
    try:
        for layer in layers:
            forward = layer.forward
            own = vars(layer).get("forward")
            layer.forward = functools.partial(checkpoint, forward, use_reentrant=False)
            patched.append((layer, own))
        with set_checkpoint_early_stop(False):
            yield
    finally:
        for layer, own in patched:
            if own is None:
                del layer.forward
            else:
                layer.forward = own
