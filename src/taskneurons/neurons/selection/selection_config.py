"""The family of selection configs: one small config per method, chosen by ``method``.

:class:`SelectionConfig` is the family base (a :class:`~taskneurons.config.Variant`); each
method (``topk``, ``specific``, ``contrastive``, ``lape``, ...) is one module of
:mod:`taskneurons.neurons.selection.algorithms` holding its config (a subclass registered by
name, with only its own options) and its function. The modules are imported on the first
lookup of a name, so a new selection is one new module there. A section naming one method and
an option of another is refused, naming the key.

No torch here: the command line reads the configs without loading it.

Example:
    >>> from taskneurons.config import ConfigError, build
    >>> build(SelectionConfig, {"method": "specific", "m": 3}).m
    3
    >>> build(SelectionConfig, {"method": "contrastive", "m": 3}, where="exp.yaml")
    Traceback (most recent call last):
    ...
    taskneurons.config.ConfigError: exp.yaml: unknown key 'm'; known: eps, method, mode, normalize, task_norm
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from taskneurons.config import Variant
from taskneurons.config_fields import flag

#: per-layer normalisations of the scores before ranking (see ``normalize_layers``)
NORMALIZE: tuple[str | None, ...] = (None, "layer", "layer_z")


@dataclass
class SelectionConfig(Variant):
    """Which neurons each task keeps, from the scores of all tasks (computed once).

    Attributes:
        method: the selection's name (``topk`` when a section names none).
        normalize: ``None``, ``layer`` (divide each layer's scores by its mean) or ``layer_z``
            (z-score within each layer) before ranking.

    Class attributes of a method:
        ranks: what it ranks: ``"scores"`` (relevance, ``[layers, units]`` per module) or
            ``"probabilities"`` (activation probabilities, measured with
            :meth:`measurement`'s settings).
        measured_by: the fields that say how the probabilities are measured.
        order: its place in listings and in a sweep's default grid.
    """

    tag: ClassVar[str] = "method"
    default: ClassVar[str] = "topk"
    family: ClassVar[str] = "selection"
    package: ClassVar[str | None] = "taskneurons.neurons.selection.algorithms"
    ranks: ClassVar[Literal["scores", "probabilities"]] = "scores"
    measured_by: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 100

    method: str = ""
    normalize: Literal["layer", "layer_z"] | None = field(
        default=None, metadata=flag("--normalize", help="normalise each layer's scores first")
    )

    def validate(self) -> None:
        super().validate()
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {self.normalize!r}")

    @classmethod
    def names(cls) -> list[str]:
        """The registered methods, in their ``order`` (then by name).

        Example:
            >>> SelectionConfig.names()[:4]
            ['topk', 'specific', 'contrastive', 'lape']
        """
        return sorted(super().names(), key=lambda n: (cls.variants[n].order, n))

    def select(self, inputs: Mapping[str, Any], k: float, scope: str = "model") -> Any:
        """Each task's neurons: a ``TaskSelection`` from what the method ranks, per task.

        ``inputs``: task id -> ``NeuronScores`` (relevance, or activation probabilities when
        :attr:`ranks` says so), ``[layers, units]`` per module, one layout for all tasks.
        """
        raise NotImplementedError(f"selection {self.method!r} does not say how it selects")

    def keywords(self) -> dict[str, Any]:
        """The method's options as its function takes them (all fields but ``method`` and the
        measurement settings)."""
        skip = {self.tag, *self.measured_by}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }

    def measurement(self) -> dict[str, Any]:
        """How the activation probabilities are measured (empty when it ranks scores)."""
        return {name: getattr(self, name) for name in self.measured_by}

    def record(self, scope: str) -> dict[str, Any]:
        """What a record says of the selection: ``method``, ``scope`` and :meth:`keywords`."""
        return {"method": self.method, "scope": scope, **self.keywords()}

    def inputs(
        self, scores: Mapping[str, Any], probabilities: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any]:
        """What this selection ranks: ``scores``, or ``probabilities`` when :attr:`ranks` says so.

        Raises:
            ValueError: it ranks activation probabilities and none are given.
        """
        if self.ranks == "scores":
            return scores
        if not probabilities:
            raise ValueError(f"selection {self.method!r} needs the tasks' activation probabilities")
        return probabilities

    def with_method(self, name: str) -> SelectionConfig:
        """This selection when it is ``name``; else ``name``'s defaults with this ``normalize``.

        Example:
            >>> SelectionConfig.make("specific", m=2).with_method("topk").to_dict()
            {'method': 'topk', 'normalize': None}
        """
        if name == self.method:
            return self
        return SelectionConfig.make(name, normalize=self.normalize)  # type: ignore[return-value]


def own_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded selection section with only the keys its method holds.

    Records written while one config held every method's options list them all; the options
    of the other methods were not used, so they are dropped (an unknown method is kept whole).

    Example:
        >>> own_keys({"method": "topk", "normalize": None, "m": None, "mode": "difference"})
        {'method': 'topk', 'normalize': None}
    """
    try:
        cls = SelectionConfig.variant(section.get("method", SelectionConfig.default))
    except ValueError:
        return dict(section)
    keys = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in section.items() if k in keys}


__all__ = ["NORMALIZE", "SelectionConfig", "own_keys"]
