"""What an experiment file's ``device_map:`` may say, checked without torch (before a model loads).

``device_map`` spreads a model that does not fit one device over several (Accelerate's big-model
inference, through ``from_pretrained(..., device_map=...)``): a strategy name (``auto``,
``balanced``, ``balanced_low_0``, ``sequential``) or a mapping of module names to a device
(``0``, ``"cuda:1"``, ``"cpu"``, or ``"disk"``, which needs ``offload_folder``). The hooks of
the library follow each module's device (:mod:`~taskneurons.models.placement`); training
needs every weight on one device, so a run that trains is refused (:func:`placement_problem`).

Example:
    >>> check_device_map({"model.layers.0": 0, "lm_head": "disk"})
    >>> check_device_map("everywhere")
    Traceback (most recent call last):
    ...
    ValueError: 'everywhere' is not a device map; use auto, balanced, balanced_low_0, sequential or a mapping of module names to devices (0, 'cuda:1', 'cpu', 'disk')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: the strategies Accelerate infers a map by
PRESETS: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")
_HINT = "a mapping of module names to devices (0, 'cuda:1', 'cpu', 'disk')"


def check_device_map(value: Any) -> None:
    """Refuse a ``device_map`` value that is neither a strategy name nor a module mapping.

    Raises:
        ValueError: one line naming what is wrong.

    Example:
        >>> check_device_map("auto"); check_device_map(None)
    """
    if value is None:
        return
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(
                f"{value!r} is not a device map; use {', '.join(PRESETS[:-1])}, "
                f"{PRESETS[-1]} or {_HINT}"
            )
        return
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"expected a strategy name ({', '.join(PRESETS)}) or {_HINT}")
    for module, device in value.items():
        if not isinstance(module, str):
            raise ValueError(f"module names are strings, got {module!r}")
        ok = isinstance(device, str) or (isinstance(device, int) and not isinstance(device, bool))
        if not ok or (isinstance(device, int) and device < 0):
            raise ValueError(
                f"{module}: expected a device (0, 'cuda:1', 'cpu', 'disk'), got {device!r}"
            )


def needs_disk(value: Any) -> bool:
    """Whether a mapping puts a module on ``"disk"`` (then ``offload_folder`` is needed)."""
    return isinstance(value, Mapping) and "disk" in value.values()


def placement_problem(value: Any, training: Sequence[str], world_size: int) -> str | None:
    """Why ``device_map`` cannot be used for this run (``None``: it can).

    Args:
        value: the ``device_map`` (``None``: nothing to check).
        training: the run's stages that train the model (every weight on one device).
        world_size: processes of the run (``WORLD_SIZE``; ``accelerate launch``, ``torchrun``).

    Example:
        >>> placement_problem("auto", ["table2"], 1)[:40]
        "stage 'table2' trains the model, which n"
    """
    if value is None:
        return None
    if training:
        names = ", ".join(repr(s) for s in training)
        return (
            f"stage {names} trains the model, which needs all its weights on one device; "
            "run it in another run without device_map (device: cuda)"
        )
    if world_size > 1:
        return (
            f"{world_size} processes: device_map spreads one model over this process's "
            "devices, so run it in one process (not under accelerate launch or torchrun)"
        )
    return None


@dataclass(frozen=True)
class Placement:
    """How a model too large for one device is spread: Accelerate's ``device_map``.

    Attributes:
        device_map: ``None`` (the whole model on ``load_model``'s ``device``), a strategy
            (``auto``, ``balanced``, ``balanced_low_0``, ``sequential``) or a mapping of
            module names to devices (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``).
        offload_folder: where modules mapped to ``"disk"`` are written (needed for them).

    Example:
        >>> Placement({"model": "cpu", "lm_head": "disk"}, "/tmp/off").kwargs("folder")
        {'device_map': {'model': 'cpu', 'lm_head': 'disk'}, 'offload_folder': '/tmp/off'}
    """

    device_map: str | dict | None = None
    offload_folder: str | None = None

    def kwargs(self, spec: str, embedded: Sequence[str] = ()) -> dict:
        """``from_pretrained``'s placement arguments (``{}`` without a map) for ``spec``
        (``embedded``: the names of the embedded GGUF models).

        Raises:
            ValueError: a bad map, ``disk`` without ``offload_folder``, or a map for an
                embedded model or ``.gguf`` file (they are loaded whole).
        """
        if self.device_map is None:
            return {}
        try:
            check_device_map(self.device_map)
        except ValueError as exc:
            raise ValueError(f"device_map: {exc}") from None
        if spec in embedded or spec.endswith(".gguf"):
            raise ValueError(
                f"device_map: {spec} is a GGUF model, loaded whole on one device; use a "
                "model folder or hub id with device_map"
            )
        if needs_disk(self.device_map) and self.offload_folder is None:
            raise ValueError("device_map: modules on 'disk' need offload_folder (where they go)")
        out: dict = {"device_map": self.device_map}
        if self.offload_folder is not None:
            out["offload_folder"] = str(self.offload_folder)
        return out
