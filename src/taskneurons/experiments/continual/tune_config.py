"""The grid and the rule that choose each continual method's training values (no torch).

:class:`TuneConfig` is the ``tune`` section of a continual suite, fixed in the experiment file
before running; :func:`candidates` is a method's grid and :func:`choose` the rule
``final_mean``: the best mean validation score after the last task, ties (within ``ties``
points) to the smallest values key by key in the grid's order (``lr`` first: the smaller
learning rate). Running the grid and freezing the choice: :mod:`.lr_choice`.

Example:
    >>> choose([{"values": {"lr": 1e-4}, "score": 60.0}, {"values": {"lr": 1e-3}, "score": 61.0}])
    {'lr': 0.001}
    >>> choose([{"values": {"lr": 1e-4}, "score": 60.5}, {"values": {"lr": 1e-3}, "score": 61.0}],
    ...        ties=1.0)
    {'lr': 0.0001}
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from taskneurons.config import Config
from taskneurons.training.train_config import TrainConfig

#: the choice file's name when ``choice_file`` is not given (in the run's folder)
CHOICE_FILE = "lr_choice.json"
#: the methods whose training is a LoRA adapter (the only ones a ``lora_*`` grid key applies to)
LORA_METHODS = ("seqlora", "olora", "epi")


@dataclass
class TuneConfig(Config):
    """How each method's training values are chosen (see the module docstring).

    Attributes:
        grid: ``TrainConfig`` key -> candidate values (their product is the grid), e.g.
            ``{lr: [1e-5, 1e-4, 1e-3], lora_r: [8]}``; ``lora_*`` keys apply to LoRA methods only.
        method_grid: method label -> its own grid instead of ``grid``.
        rule: ``"final_mean"``: the best mean validation score after the last task.
        ties: scores within this many points of the best count as tied (smallest values win).
        order: the task order tuned on (``None``: the run's own order); the first order.
        n_val: validation examples per task.
        choice_file: where the choice is written and read back (``None``:
            ``<out>/lr_choice.json``); name one file in every order's experiment file.
        only: run the grid, write the choice and stop: no run on the test split (the stage's
            tables are each method's chosen candidate, scored on the validation split). Not
            part of the choice's record: a later run with ``only: false`` reads it back.
    """

    grid: dict[str, list[Any]] = field(default_factory=lambda: {"lr": [1e-5, 1e-4, 1e-3]})
    method_grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    rule: Literal["final_mean"] = "final_mean"
    ties: float = 0.0
    order: list[str] | None = None
    n_val: int = 100
    choice_file: str | None = None
    only: bool = False

    def validate(self) -> None:
        known = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "prompt"}
        for where, grid in [("grid", self.grid), *self.method_grid.items()]:
            for key, values in grid.items():
                if key not in known:
                    raise ValueError(f"tune.{where}: {key!r} is not a training key")
                if not isinstance(values, list) or not values:
                    raise ValueError(f"tune.{where}.{key}: give a non-empty list of values")
        if self.ties < 0:
            raise ValueError(f"tune.ties must be >= 0, got {self.ties}")
        if self.n_val < 1:
            raise ValueError(f"tune.n_val must be >= 1, got {self.n_val}")


def candidates(tune: TuneConfig, label: str) -> list[dict[str, Any]]:
    """The grid of method ``label``: every combination, ``lora_*`` keys for LoRA methods only.

    Example:
        >>> candidates(TuneConfig(grid={"lr": [1e-4, 1e-3], "lora_r": [4, 8]}), "ncft")
        [{'lr': 0.0001}, {'lr': 0.001}]
    """
    grid = tune.method_grid.get(label, tune.grid)
    if label.partition("-")[0] not in LORA_METHODS:
        grid = {k: v for k, v in grid.items() if not k.startswith("lora_")}
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def choice_path(tune: TuneConfig, out: Path) -> Path:
    """The choice file of a suite run in ``out``: ``choice_file``, else ``out/lr_choice.json``."""
    return Path(tune.choice_file) if tune.choice_file else Path(out) / CHOICE_FILE


def candidate_tag(values: dict[str, Any]) -> str:
    """A folder name for a candidate, e.g. ``lr=0.001,lora_r=8``."""
    return ",".join(f"{k}={v}" for k, v in values.items())


def candidate_folder(tune: TuneConfig, out: Path, label: str, values: dict[str, Any]) -> Path:
    """Where the grid candidate ``values`` of run label ``label`` runs (and is read back):
    ``<choice file's folder>/tune/<label>/<tag>``.

    Example:
        >>> candidate_folder(TuneConfig(), Path("run"), "ncft", {"lr": 0.001}).as_posix()
        'run/tune/ncft/lr=0.001'
    """
    return choice_path(tune, out).parent / "tune" / label / candidate_tag(values)


def choose(rows: Sequence[dict[str, Any]], ties: float = 0.0) -> dict[str, Any]:
    """The rule ``final_mean``: the values of the best ``score`` (``nan`` counts as worst);
    among the rows within ``ties`` of it, the smallest values key by key in the rows' order.

    Args:
        rows: ``{"values": {key: value}, "score": float}`` per candidate (same keys).
        ties: the tie margin in score points.
    """
    if not rows:
        raise ValueError("no candidate to choose from")

    def score(row):
        return -math.inf if math.isnan(row["score"]) else row["score"]

    best = max(score(r) for r in rows)
    tied = [r for r in rows if score(r) >= best - ties]
    return dict(min(tied, key=lambda r: tuple(r["values"].values()))["values"])


def tuning_label(label: str, labels: Sequence[str]) -> str:
    """The label whose choice ``label`` takes: W-NCFT's for W-NCFT inferred when both run."""
    return "wncft" if label == "wncft-inferred" and "wncft" in labels else label
