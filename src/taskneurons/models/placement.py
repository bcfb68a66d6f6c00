"""Where a model's tensors are: one device, or spread by a ``device_map`` (Accelerate).

A model loaded with ``device_map`` (:func:`~taskneurons.models.loading.load_model`) carries
Accelerate's ``AlignDevicesHook`` on its modules: each module runs on its own execution device
(inputs are moved there), and a module offloaded to the CPU or to disk holds its parameters on
the ``meta`` device between calls (its weights live in the hook's ``weights_map``). The
library's code asks this module instead of ``next(model.parameters()).device``:

* :func:`input_device`: where to put a batch (the map's first accelerator, else the CPU);
* :func:`module_device`: where a module runs (masks for it are made there);
* :func:`real_device`: a device a tensor made for a module may live on (``meta`` -> CPU);
* :func:`onloaded`: a module's offloaded weights loaded for reading (fingerprints);
* :func:`offloaded`: whether a parameter is a ``meta`` placeholder (cannot be written);
* :func:`grad_free`: ``torch.inference_mode()``, or ``torch.no_grad()`` for a model placed by
  a map: Accelerate makes the offloaded parameters anew at every call, and under inference
  mode they would be inference tensors that a later backward (relevance scores) refuses.

Example:
    >>> model = torch.nn.Linear(2, 3)
    >>> input_device(model), real_device(torch.empty(0, device="meta"))
    (device(type='cpu'), device(type='cpu'))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

#: device-map entries that are not an execution device (modules there run on the main device)
_STORAGE = ("cpu", "disk", "meta")


def input_device(model: nn.Module) -> torch.device:
    """The device a batch for ``model`` goes to.

    With ``hf_device_map``: the first accelerator of the map (Accelerate's main device: the
    ``cpu``/``disk`` entries are offloaded and run there too), else the CPU; without one: the
    first parameter's device that is not ``meta`` (``cpu`` when there is none).
    """
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        for device in device_map.values():
            if isinstance(device, int):
                return torch.device("cuda", device)
            if str(device) not in _STORAGE:
                return torch.device(device)
        return torch.device("cpu")
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` runs: its Accelerate hook's execution device, else its first
    parameter's device (the CPU for an offloaded or parameterless module).

    Example:
        >>> module_device(torch.nn.Linear(2, 3))
        device(type='cpu')
    """
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return real_device(next(module.parameters(), None))


def real_device(tensor: torch.Tensor | None) -> torch.device:
    """``tensor``'s device, the CPU for an offloaded (``meta``) or missing one."""
    if tensor is None or tensor.device.type == "meta":
        return torch.device("cpu")
    return tensor.device


def offloaded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``meta`` placeholder of weights kept elsewhere (device_map)."""
    return tensor.device.type == "meta"


def is_dispatched(model: nn.Module) -> bool:
    """Whether ``model`` was placed by a ``device_map`` (its modules carry Accelerate hooks)."""
    return bool(getattr(model, "hf_device_map", None))


@contextlib.contextmanager
def onloaded(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with its offloaded parameters loaded (a no-op for a module not offloaded).

    Example:
        >>> with onloaded(adapter.w2(31)) as w2:  # doctest: +SKIP
        ...     values = w2.weight.detach().cpu()  # [d_model, d_ff], not meta
    """
    if not any(offloaded(p) for p in module.parameters(recurse=False)):
        yield module
        return
    from accelerate.utils import align_module_device

    with align_module_device(module):
        yield module


def grad_free(model: nn.Module) -> contextlib.AbstractContextManager:
    """The context evaluation runs ``model`` in (see the module docstring).

    Example:
        >>> with grad_free(model):  # doctest: +SKIP
        ...     logits = model(input_ids=ids).logits
    """
    return torch.no_grad() if is_dispatched(model) else torch.inference_mode()
