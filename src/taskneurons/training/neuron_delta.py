"""Neuron-level fine-tuning: small trainable deltas for the parameter slices of a NeuronSet.

A :class:`NeuronDelta` holds one trainable tensor per FFN parameter that a NeuronSet touches,
with only the selected slices in it (``NeuronSpace.parameter_slices``):

* ``ffn`` definition: for each selected intermediate unit ``j``, row ``j`` of every W1 part
  (``gate``/``up``, or both chunks of a fused ``gate_up``) with its bias entry, and column
  ``j`` of W2;
* ``linear`` definition: for each selected output unit of a linear, its weight row and bias
  entry.

The deltas live outside the model: a forward hook on every affected linear adds their
contribution to the linear's output, so the base weights are never written (they can stay
frozen, and in a lower precision than the deltas). For a linear ``y = x W^T + b`` (``W`` as
``[out, in]``) with a row delta ``D_r`` (``[n, in]``, units ``R``), a bias delta ``d_b``
(``[n]``) and a column delta ``D_c`` (``[out, n]``, input units ``C``) the hook returns::

    y' = y  +  scatter_R(x D_r^T + d_b)  +  x[..., C] D_c^T   ==   x (W + Δ)^T + (b + Δb)

computed in the delta dtype and cast back to ``y``'s dtype. The hook of W2 reads W2's actual
input, i.e. the intermediate activation already changed by the W1 row deltas, so the hooks
compose exactly like running the model with the merged weights ``W + Δ`` (tests check the
logits agree to 1e-5). GPT-2's ``Conv1D`` stores its weight ``[in, out]``; the
:class:`~taskneurons.models.adapters.ParamSlice` ``dim`` of each slice says which raw axis a unit
indexes, and each delta is kept in the raw layout (``param.index_select(dim, positions)``), so
merging is one ``index_copy_``. Leading dimensions are free: OPT's FFN runs on flattened
``[batch*pos, d]`` states.

The slice layout and the forward hooks live in :mod:`taskneurons.training.delta_hooks`, the
file format in :mod:`taskneurons.training.delta_io`.

Example:
    >>> delta = NeuronDelta(model, task_neurons)  # doctest: +SKIP
    >>> delta.attach()  # model(...) now includes the (zero) deltas  # doctest: +SKIP
    >>> opt = torch.optim.AdamW(delta.parameters(), lr=1e-4)  # doctest: +SKIP
    >>> ...  # train: only the deltas get gradients
    >>> delta.save("out/sst2_delta")  # delta.safetensors + delta.json  # doctest: +SKIP
    >>> delta.merge()  # write W + Δ into the weights, remove the hooks  # doctest: +SKIP
    >>> delta.unmerge()  # bit-exact original weights again, hooks back  # doctest: +SKIP
    >>> fresh = NeuronDelta.load("out/sst2_delta", base_model)  # attached to base_model  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from taskneurons.neurons.neuron_set import NeuronSet, space_for
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.training.delta_hooks import (
    DeltaEntry,
    check_float_dtype,
    collect_slices,
    make_hook,
    plan_linears,
)
from taskneurons.training.delta_io import FORMAT as FORMAT
from taskneurons.training.delta_io import delta_state, read_delta, write_delta


def selection_masks(
    model: nn.Module, neurons: NeuronSet, space: NeuronSpace | None = None
) -> dict[str, torch.Tensor]:
    """Boolean masks of the parameter entries owned by the selected neurons.

    Args:
        model: the model.
        neurons: the selected neurons.
        space: the model's space under ``neurons.definition`` (built when omitted).

    Returns:
        Parameter name (as in ``model.named_parameters()``) -> ``torch.bool`` tensor of the
        parameter's shape, ``True`` where a selected neuron owns the entry. Parameters with no
        selected entry are absent.

    Example:
        >>> masks = selection_masks(model, task_neurons)  # doctest: +SKIP
        >>> masks["model.layers.0.mlp.down_proj.weight"].shape  # [d_model, d_ff]  # doctest: +SKIP
        torch.Size([576, 1536])
    """
    space = space_for(model, neurons, space, "train")
    out: dict[str, torch.Tensor] = {}
    for name, param, dim, positions in collect_slices(space, neurons):
        mask = torch.zeros(param.shape, dtype=torch.bool, device=param.device)
        mask.index_fill_(dim, positions.to(param.device), True)
        out[name] = mask
    return out


class NeuronDelta:
    """Trainable deltas for the parameter slices of a NeuronSet, applied by forward hooks.

    Args:
        model: a Hugging Face causal LM of a family in the adapter table.
        neurons: the neurons to train (a non-empty :class:`NeuronSet` of this model).
        space: the model's :class:`NeuronSpace` under ``neurons.definition`` (built if omitted).
        dtype: dtype of the deltas and of the extra matmuls (``float32`` also on a bf16 base).
        strict: require the NeuronSet's recorded model fingerprint to match the weights too
            (``False``: the architecture only, e.g. to train a set found on the base model on a
            model already fine-tuned on earlier tasks).

    Attributes:
        model, neurons, space, dtype.
        fingerprint: ``model_fingerprint(model)`` of the base weights at construction.
        attached: hooks are registered.
        merged: the deltas are written into the base weights.

    Raises:
        ValueError: the NeuronSet selects no neuron (``k = 0``).
        NeuronSetMismatchError: the NeuronSet belongs to another model (layout or fingerprint).

    Example:
        >>> delta = NeuronDelta(model, task_neurons)  # doctest: +SKIP
        >>> with delta:  # hooks on inside the block  # doctest: +SKIP
        ...     loss = model(input_ids=ids, labels=ids).loss
        >>> delta.num_trainable()  # e.g. 10% of SmolLM2-135M's FFN neurons  # doctest: +SKIP
        7962624
    """

    def __init__(
        self,
        model: nn.Module,
        neurons: NeuronSet,
        space: NeuronSpace | None = None,
        dtype: torch.dtype = torch.float32,
        strict: bool = True,
    ):

        if not isinstance(neurons, NeuronSet):
            raise TypeError(f"neurons must be a NeuronSet, got {type(neurons).__name__}")
        if len(neurons) == 0:
            raise ValueError(
                f"the NeuronSet selects no neurons ({neurons.describe_shape()}, k="
                f"{neurons.meta.get('k', '?')}); there is nothing to train"
            )
        check_float_dtype(dtype)
        self.model = model
        self.space = space_for(model, neurons, space, "train")
        neurons.check_model(model, strict=strict)
        self.neurons = neurons
        self.dtype = dtype
        self.fingerprint = model_fingerprint(model)
        self._entries: dict[str, DeltaEntry] = {}
        for name, param, dim, positions in collect_slices(self.space, neurons):
            positions = positions.to(param.device)
            shape = param.index_select(dim, positions).shape
            delta = nn.Parameter(torch.zeros(shape, dtype=dtype, device=param.device))
            self._entries[name] = DeltaEntry(name, param, dim, positions, delta)
        self._linears = plan_linears(self.space, self._entries)
        self._hooks: list[RemovableHandle] = []
        # parameter name -> original values of its selected slices, while merged
        self._saved: dict[str, torch.Tensor] = {}

    # -- layout ------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Names of the base parameters that have a delta (``model.named_parameters()`` names)."""
        return list(self._entries)

    def positions(self, name: str) -> tuple[int, torch.Tensor]:
        """``(dim, positions [n])``: the raw axis and selected indices of parameter ``name``."""
        e = self._entries[name]
        return e.dim, e.positions

    def parameters(self) -> list[nn.Parameter]:
        """The trainable delta tensors (for the optimizer), in :attr:`names` order."""
        return [e.delta for e in self._entries.values()]

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(base parameter name, delta)`` pairs."""
        return [(n, e.delta) for n, e in self._entries.items()]

    def num_trainable(self) -> int:
        """Number of trainable scalars (sum of the deltas' sizes)."""
        return sum(e.delta.numel() for e in self._entries.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Base parameter name -> detached delta (raw layout ``param.index_select(dim, pos)``)."""
        return {n: e.delta.detach() for n, e in self._entries.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy deltas in (same names and shapes as :meth:`state_dict`; else ``ValueError``)."""
        if set(state) != set(self._entries):
            extra = sorted(set(state) - set(self._entries))[:5]
            missing = sorted(set(self._entries) - set(state))[:5]
            raise ValueError(
                f"delta state does not fit this NeuronDelta: unexpected {extra}, missing {missing}"
            )
        with torch.no_grad():
            for n, e in self._entries.items():
                t = state[n]
                if tuple(t.shape) != tuple(e.delta.shape):
                    raise ValueError(
                        f"delta {n}: shape {tuple(t.shape)} != expected {tuple(e.delta.shape)}"
                    )
                e.delta.copy_(t.to(e.delta.device, e.delta.dtype))

    def __repr__(self) -> str:
        state = "merged" if self.merged else ("attached" if self.attached else "detached")
        return (
            f"NeuronDelta({len(self.neurons)} neurons, {self.neurons.definition!r}, "
            f"{len(self._entries)} parameters, {self.num_trainable()} trainable, {state})"
        )

    # -- hooks -------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    @property
    def merged(self) -> bool:
        return bool(self._saved)

    def attach(self) -> NeuronDelta:
        """Register the forward hooks (idempotent). Not allowed while merged."""
        if self.merged:
            raise RuntimeError("the deltas are merged into the weights; call unmerge() first")
        if self.attached:
            return self
        for plan in self._linears:
            hook = make_hook(plan, self.dtype)
            self._hooks.append(plan.module.register_forward_hook(hook, with_kwargs=True))
        return self

    def detach(self) -> NeuronDelta:
        """Remove the forward hooks (idempotent); the model is the base model again."""
        if self.merged:
            raise RuntimeError(
                "the deltas are merged into the weights; call unmerge() to restore the base model"
            )
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        return self

    def __enter__(self) -> NeuronDelta:
        return self.attach()

    def __exit__(self, *exc) -> None:
        if self.merged:
            self.unmerge()
        self.detach()

    # -- merging -----------------------------------------------------------------------------
    def merge(self) -> NeuronDelta:
        """Write ``W + Δ`` into the selected slices of the base weights and remove the hooks.

        The sum is taken in the wider of the two dtypes and cast to the parameter's dtype. The
        original slices are kept, so :meth:`unmerge` restores them bit-exactly.
        """
        if self.merged:
            raise RuntimeError("the deltas are already merged")
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        with torch.no_grad():
            for n, e in self._entries.items():
                original = e.param.index_select(e.dim, e.positions).clone()
                wide = torch.promote_types(original.dtype, e.delta.dtype)
                new = original.to(wide) + e.delta.detach().to(original.device, wide)
                self._saved[n] = original
                e.param.index_copy_(e.dim, e.positions, new.to(e.param.dtype))
        return self

    def unmerge(self) -> NeuronDelta:
        """Copy the original slices back (bit-exact) and re-attach the hooks."""
        if not self.merged:
            raise RuntimeError("the deltas are not merged")
        with torch.no_grad():
            for n, original in self._saved.items():
                e = self._entries[n]
                e.param.index_copy_(e.dim, e.positions, original)
        self._saved.clear()
        return self.attach()

    # -- saving ------------------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        meta: Mapping | None = None,
        dtype: torch.dtype | None = None,
    ) -> Path:
        """Save the deltas: ``.safetensors`` (deltas, positions, NeuronSet masks) + JSON sidecar.

        Args:
            path: a ``.safetensors`` file (the sidecar is the same name with ``.json``) or a
                folder (``delta.safetensors`` and ``delta.json`` inside it).
            meta: extra JSON-ready entries for the sidecar (task, training config, ...).
            dtype: store the deltas in this floating dtype (``None``: the delta dtype, exact).
                ``torch.bfloat16`` or ``torch.float16`` halve the file; loading casts them back
                to the delta dtype, so the loaded deltas are the rounded ones.

        The sidecar records the format, the definition, the delta dtype, the stored dtype, the
        NeuronSet's meta, the base model's fingerprint and each parameter's axis and count.
        Size: the trainable scalars times the stored dtype's bytes. 10 % of SmolLM2-135M's
        ``ffn`` neurons are 4608 neurons x 3 x 576 = 8.0 M values: 32 MB in float32, 16 MB in
        bfloat16.

        Example:
            >>> delta.save("out/sst2_delta", dtype=torch.bfloat16)  # doctest: +SKIP
            PosixPath('out/sst2_delta/delta.safetensors')

        Returns:
            The path of the ``.safetensors`` file.
        """

        stored = self.dtype if dtype is None else check_float_dtype(dtype)
        return write_delta(
            path, self._entries, self.neurons, self.fingerprint, self.dtype, meta, stored
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: nn.Module,
        strict: bool = True,
        attach: bool = True,
    ) -> NeuronDelta:
        """Load deltas written by :meth:`save` onto ``model`` (a fresh copy of the base model).

        Args:
            path: the ``.safetensors`` file or the folder it was saved into.
            model: the base model the deltas were trained on (not one with them merged).
            strict: require the base model's weight checksum to match (``False``: architecture
                only).
            attach: register the hooks (the model then behaves as the trained one).

        Raises:
            FileNotFoundError: the file or its sidecar is missing.
            ValueError: not a NeuronDelta file, or its tensors disagree with the model's layout.
            NeuronSetMismatchError: the deltas were trained on another model.

        Example:
            >>> delta = NeuronDelta.load("out/sst2_delta", base_model)  # doctest: +SKIP
            >>> delta.attached  # doctest: +SKIP
            True
        """

        tensor_path, neurons, dtype, tensors = read_delta(path, model, strict)
        out = cls(model, neurons, dtype=dtype, strict=False)  # fingerprint checked above
        state = delta_state(tensor_path, tensors, out._entries)
        out.load_state_dict(state)
        if attach:
            out.attach()
        return out
