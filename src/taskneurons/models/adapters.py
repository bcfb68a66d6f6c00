"""FFN adapters: one declarative table from abstract FFN sites to each family's modules.

Every supported family is described by an :class:`FFNSpec` (as pyvene describes models): where
the decoder layers are, which linear layers form W1 (the parts that produce the intermediate
activation: ``gate``/``up`` for gated FFNs, ``up`` otherwise) and which one is W2 (``down``), and
whether a linear stores its weight transposed (GPT-2's ``Conv1D``, weight ``[in, out]``).
The intermediate activation of every family is the input of W2, so one forward pre-hook on W2
reads it (``[batch, pos, d_ff]``).

The family is chosen from ``model.config.model_type`` (the architecture the checkpoint
declares), never from the model's name.

Example:
    >>> adapter = get_adapter(model)  # doctest: +SKIP
    >>> adapter.family, adapter.n_layers, adapter.d_ff  # doctest: +SKIP
    ('llama', 30, 1536)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model's architecture is not in the adapter table."""


@dataclass(frozen=True)
class FFNLinear:
    """One linear layer of the FFN.

    Attributes:
        name: abstract site name (``gate``, ``up``, ``gate_up``, ``down``).
        path: attribute path inside one decoder layer (``mlp.gate_proj``).
        transposed: the weight is stored ``[in, out]`` (GPT-2 ``Conv1D``) instead of ``[out, in]``.
    """

    name: str
    path: str
    transposed: bool = False


@dataclass(frozen=True)
class FFNSpec:
    """Declarative description of one architecture family's FFN.

    Attributes:
        family: family name shown to users.
        model_types: ``config.model_type`` values that use this layout.
        layers: attribute path from the model root to the ``ModuleList`` of decoder layers.
        linears: the FFN's linear layers, W1 parts first, W2 last.
        w1: the W1 parts as ``(linear name, chunk)``: rows ``chunk*d_ff ... (chunk+1)*d_ff`` of
            that linear's output produce this part of the intermediate (chunk > 0 only for fused
            ``gate_up`` projections).
        w2: name of the W2 (down) linear; its input is the intermediate activation.
        gated: intermediate is ``f(x Wg) * (x Wu)`` rather than ``f(x W1)``.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    linears: tuple[FFNLinear, ...]
    w1: tuple[tuple[str, int], ...]
    w2: str
    gated: bool


def _gated(family: str, model_types: tuple[str, ...], layers: str = "model.layers") -> FFNSpec:
    return FFNSpec(
        family=family,
        model_types=model_types,
        layers=layers,
        linears=(
            FFNLinear("gate", "mlp.gate_proj"),
            FFNLinear("up", "mlp.up_proj"),
            FFNLinear("down", "mlp.down_proj"),
        ),
        w1=(("gate", 0), ("up", 0)),
        w2="down",
        gated=True,
    )


def _plain(
    family: str,
    model_types: tuple[str, ...],
    layers: str,
    up: str,
    down: str,
    transposed: bool = False,
) -> FFNSpec:
    return FFNSpec(
        family=family,
        model_types=model_types,
        layers=layers,
        linears=(FFNLinear("up", up, transposed), FFNLinear("down", down, transposed)),
        w1=(("up", 0),),
        w2="down",
        gated=False,
    )


#: The adapter table: one entry per family. Add a family by adding a line here.
ADAPTER_TABLE: tuple[FFNSpec, ...] = (
    _gated("llama", ("llama", "granite", "olmo", "olmo2")),
    _gated("mistral", ("mistral",)),
    _gated("qwen2", ("qwen2", "qwen3")),
    _gated("gemma", ("gemma", "gemma2", "gemma3_text")),
    _gated("stablelm", ("stablelm",)),
    _plain("gpt2", ("gpt2",), "transformer.h", "mlp.c_fc", "mlp.c_proj", transposed=True),
    _plain("gpt_bigcode", ("gpt_bigcode",), "transformer.h", "mlp.c_fc", "mlp.c_proj"),
    _plain("starcoder2", ("starcoder2",), "model.layers", "mlp.c_fc", "mlp.c_proj"),
    _plain("gpt_neox", ("gpt_neox",), "gpt_neox.layers", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    _plain("gptj", ("gptj", "codegen"), "transformer.h", "mlp.fc_in", "mlp.fc_out"),
    _plain("bloom", ("bloom",), "transformer.h", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    _plain("opt", ("opt",), "model.decoder.layers", "fc1", "fc2"),
    _plain("falcon", ("falcon",), "transformer.h", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    _plain("phi", ("phi",), "model.layers", "mlp.fc1", "mlp.fc2"),
    FFNSpec(
        family="phi3",
        model_types=("phi3",),
        layers="model.layers",
        linears=(FFNLinear("gate_up", "mlp.gate_up_proj"), FFNLinear("down", "mlp.down_proj")),
        w1=(("gate_up", 0), ("gate_up", 1)),
        w2="down",
        gated=True,
    ),
)


def supported_families() -> list[str]:
    """Family names of the adapter table, in table order."""
    return [s.family for s in ADAPTER_TABLE]


def spec_for_model_type(model_type: str) -> FFNSpec:
    """The table entry for a ``config.model_type``; :class:`UnsupportedModelError` if none."""
    for spec in ADAPTER_TABLE:
        if model_type in spec.model_types:
            return spec
    families = ", ".join(f"{s.family} ({'/'.join(s.model_types)})" for s in ADAPTER_TABLE)
    raise UnsupportedModelError(
        f"unsupported architecture {model_type!r}: taskneurons supports these families "
        f"(config.model_type in brackets): {families}"
    )


def _get(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


@dataclass(frozen=True)
class ParamSlice:
    """Where a module's units live inside one parameter tensor.

    Unit ``u`` of the module is ``param.narrow(dim, offset + u, 1)`` (a row or a column of a
    weight, or an entry of a bias).
    """

    name: str  # parameter name relative to the model root
    param: nn.Parameter
    dim: int
    offset: int


class FFNAdapter:
    """The FFN sites of one loaded model, resolved from its :class:`FFNSpec`.

    Attributes:
        spec: the table entry.
        n_layers: number of decoder layers.
        d_ff: width of the intermediate activation (units per layer under the ``ffn`` definition).
    """

    def __init__(self, model: nn.Module, spec: FFNSpec):
        self.model = model
        self.spec = spec
        self.family = spec.family
        base = model
        # accept both the *ForCausalLM wrapper and, where applicable, a PEFT-wrapped model
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            base = model.get_base_model()
        try:
            self.layers: nn.ModuleList = _get(base, spec.layers)
        except AttributeError as exc:
            raise UnsupportedModelError(
                f"model of type {type(base).__name__} declares family {spec.family!r} "
                f"(config.model_type {model.config.model_type!r}) but has no '{spec.layers}' "
                "module list; pass the causal LM (AutoModelForCausalLM), not its bare backbone"
            ) from exc
        self._root = base
        self._linear_by_name = {lin.name: lin for lin in spec.linears}
        # id(parameter) -> (parameter, name in model.named_parameters()); filled by param_name
        self._param_names: dict[int, tuple[nn.Parameter, str]] = {}
        self.n_layers = len(self.layers)
        widths = {self.in_features(i, spec.w2) for i in range(self.n_layers)}
        if len(widths) != 1:
            raise UnsupportedModelError(
                f"layers of this {spec.family} model have different FFN widths {sorted(widths)}; "
                "taskneurons needs one d_ff for all layers"
            )
        self.d_ff = widths.pop()
        self.d_model = self.out_features(0, spec.w2)

    # -- modules ---------------------------------------------------------------------------
    def linear(self, layer: int, name: str) -> nn.Module:
        """The linear module ``name`` (``gate``/``up``/``down``/...) of decoder layer ``layer``."""
        return _get(self.layers[layer], self._linear_by_name[name].path)

    def w2(self, layer: int) -> nn.Module:
        """W2 (down projection) of ``layer``; its input is the intermediate activation."""
        return self.linear(layer, self.spec.w2)

    def is_transposed(self, name: str) -> bool:
        return self._linear_by_name[name].transposed

    def weight_out_in(self, layer: int, name: str) -> torch.Tensor:
        """The weight of linear ``name`` as a ``[out, in]`` view (transposed for Conv1D)."""
        w = self.linear(layer, name).weight
        return w.t() if self.is_transposed(name) else w

    def out_features(self, layer: int, name: str) -> int:
        return self.weight_out_in(layer, name).shape[0]

    def in_features(self, layer: int, name: str) -> int:
        return self.weight_out_in(layer, name).shape[1]

    def param_name(self, layer: int, name: str, which: str = "weight") -> str:
        """Full parameter name (as in ``model.named_parameters()``) of a linear's weight/bias.

        Found by identity of the parameter, so a wrapper that moves it is named right: PEFT's
        LoRA keeps ``mlp.gate_proj.weight`` as ``mlp.gate_proj.base_layer.weight``.

        Example:
            >>> adapter.param_name(0, "down")  # doctest: +SKIP
            'model.layers.0.mlp.down_proj.weight'
        """
        param = getattr(self.linear(layer, name), which)
        entry = self._param_names.get(id(param))
        if entry is None or entry[0] is not param:  # parameters replaced since the last lookup
            self._param_names = {id(p): (p, n) for n, p in self.model.named_parameters()}
            entry = self._param_names.get(id(param))
        if entry is None:
            path = f"{self.spec.layers}.{layer}.{self._linear_by_name[name].path}.{which}"
            raise LookupError(f"{path} is not a parameter of the model (named_parameters)")
        return entry[1]

    # -- parameter slices ----------------------------------------------------------------------
    def output_slices(self, layer: int, name: str, offset: int = 0) -> list[ParamSlice]:
        """Slices holding output unit ``u`` of linear ``name``: weight row (and bias entry)."""
        module = self.linear(layer, name)
        t = self.is_transposed(name)
        out = [ParamSlice(self.param_name(layer, name), module.weight, 1 if t else 0, offset)]
        if getattr(module, "bias", None) is not None:
            out.append(ParamSlice(self.param_name(layer, name, "bias"), module.bias, 0, offset))
        return out

    def input_slices(self, layer: int, name: str) -> list[ParamSlice]:
        """Slices holding input unit ``j`` of linear ``name``: a weight column."""
        module = self.linear(layer, name)
        t = self.is_transposed(name)
        return [ParamSlice(self.param_name(layer, name), module.weight, 0 if t else 1, 0)]

    def neuron_slices(self, layer: int) -> list[ParamSlice]:
        """Slices of intermediate unit ``j`` (``ffn`` definition): W1 rows (+ biases), W2 column."""
        out: list[ParamSlice] = []
        for name, chunk in self.spec.w1:
            out.extend(self.output_slices(layer, name, offset=chunk * self.d_ff))
        out.extend(self.input_slices(layer, self.spec.w2))
        return out


def get_adapter(model: nn.Module) -> FFNAdapter:
    """Resolve the FFN adapter of a loaded Hugging Face causal LM.

    Raises:
        UnsupportedModelError: the model's ``config.model_type`` is not in :data:`ADAPTER_TABLE`.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no config.model_type; taskneurons needs a Hugging Face "
            f"model of one of these families: {', '.join(supported_families())}"
        )
    spec = spec_for_model_type(model_type)
    if (
        model_type == "bloom"
        and getattr(config, "pretraining_tp", 1) > 1
        and getattr(config, "slow_but_exact", False)
    ):
        raise UnsupportedModelError(
            "bloom with pretraining_tp > 1 and slow_but_exact=True bypasses dense_4h_to_h's "
            "forward; load it with slow_but_exact=False"
        )
    return FFNAdapter(model, spec)
