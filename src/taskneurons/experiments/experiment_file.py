"""Experiment files: one typed schema for every experiment the runner runs.

An experiment file (YAML or JSON) names its stages and sets the shared things (model, tasks,
seed, prompt, output folder) at the top, and each stage's knobs in a section named after it::

    experiment: table2              # or a list: [detect, deactivate, table2]
    model: smollm2-135m
    tasks: [../shared/data/sst2, ../shared/data/agnews]
    seed: 0                         # the default of every seed below
    prompt: {max_length: 256}       # the default prompt of every stage
    out: runs/table2
    detect: {k: 10, attribution: {n_examples: 128}}
    table2: {n_train: 256, n_test: 200, train: {lr: 0.0005}}

Stages: ``detect``, ``deactivate`` (Table 1 rows + matrix), ``table2`` (neuron training),
``sweep`` (deactivation over k x selection), ``budget`` (Table 2 over optimizer x steps x k x
seeds, learning curves), ``crosstrain`` (task i's neurons trained on task j's data),
``prompts`` (zero-shot scores under prompt variants, paired differences), ``overlap``
(Table 8), ``generalization`` (Figure 2 + Table 8), ``controlled_overlap`` (Tables 9-11),
``similarity`` (Figure 3 + Table 4),
``continual`` (methods learning the tasks in order), ``multitask`` (Table 1 on a multi-task
fine-tuned model); ``all`` means ``[table2, multitask]``. The generalization stages take
their task groups from their section or from the top-level ``groups`` (default PAPER.md
Table 3) and their selection from ``detect``. A stage that needs neuron sets reads them from ``neurons:`` (a detect folder) or
gets a ``detect`` stage run before it. The top-level ``seed`` and ``prompt`` are defaults: a
section that sets its own keeps it. Unknown keys, wrong types and missing paths are
:class:`~taskneurons.config.ConfigError` naming the file and the key.

Example:
    >>> cfg = ExperimentFile.from_dict({"experiment": "detect", "tasks": ["sentiment"]})
    >>> cfg.stages(), cfg.detect.k
    (['detect'], 10.0)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taskneurons.config import Config, ConfigError, deep_merge
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.experiments.continual.suite import ContinualSuiteConfig
from taskneurons.experiments.finetuning.budget_grid import BudgetGridConfig
from taskneurons.experiments.finetuning.cross_training import CrossTrainingConfig
from taskneurons.experiments.finetuning.table2 import NeuronTrainingConfig
from taskneurons.experiments.generalization.controlled_overlap import ControlledOverlapConfig
from taskneurons.experiments.generalization.overlap import OverlapConfig
from taskneurons.experiments.generalization.proportion_sweep import GeneralizationConfig
from taskneurons.experiments.generalization.similarity import SimilarityConfig
from taskneurons.experiments.generalization.task_groups import TaskGroup
from taskneurons.experiments.specificity.deactivation import DeactivateConfig
from taskneurons.experiments.specificity.detect import DetectConfig
from taskneurons.experiments.specificity.multitask import MultitaskConfig
from taskneurons.experiments.specificity.sweep import SweepConfig
from taskneurons.experiments.zero_shot.prompt_variants import PromptVariantsConfig

#: Stage names in the order a run does them, and the ones that need neuron sets.
STAGES: tuple[str, ...] = (
    "detect", "deactivate", "table2", "sweep", "budget", "crosstrain", "prompts", "overlap",
    "generalization", "controlled_overlap", "similarity", "continual", "multitask",
)  # fmt: skip
#: The generalization stages (PAPER.md §3): their sections take the top-level ``groups``.
GROUP_STAGES: tuple[str, ...] = ("overlap", "generalization", "controlled_overlap", "similarity")
NEEDS_SETS: tuple[str, ...] = ("deactivate", "table2", "crosstrain")
#: Stages that change the model's weights, so nothing may run after them.
CHANGES_MODEL: tuple[str, ...] = ("continual", "multitask")
ALIASES: dict[str, list[str]] = {"all": ["table2", "multitask"]}


@dataclass
class ExperimentFile(Config):
    """Everything an experiment file sets (see the module docstring).

    Attributes:
        experiment: a stage name, ``all``, or a list of stage names.
        model: model spec (``smollm2-135m``, a ``.gguf`` file, a folder, a hub id).
        dtype, device: how the model is loaded.
        tasks: task specs (folders, built-in names, ``hf:...``).
        seed: the default of every seed of the stages.
        prompt: the default prompt of every stage.
        out: the run folder.
        neurons: a detect output folder to take the neuron sets from (instead of detecting);
            the ``sweep`` and generalization stages take its relevance scores (a run folder
            with ``scores/`` works too).
        strict: neuron sets from ``neurons`` must come from these very weights.
        resume: ``continual``: continue an interrupted run from its last finished stage;
            ``sweep``: reuse the scores and every finished (selection, k) cell in ``out``.
        groups: the task groups of every generalization stage that sets none (``None``: each
            section's own, by default PAPER.md Table 3).
        detect, deactivate, table2, sweep, budget, crosstrain, prompts, continual, multitask,
            overlap, generalization, controlled_overlap, similarity: each stage's knobs.
    """

    experiment: str | list[str] = "detect"
    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "cpu"
    tasks: list[str] = field(default_factory=list)
    seed: int = 0
    prompt: PromptConfig = field(default_factory=PromptConfig)
    out: str = "runs/experiment"
    neurons: str | None = None
    strict: bool = True
    detect: DetectConfig = field(default_factory=DetectConfig)
    deactivate: DeactivateConfig = field(default_factory=DeactivateConfig)
    resume: bool = False
    table2: NeuronTrainingConfig = field(default_factory=NeuronTrainingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    budget: BudgetGridConfig = field(default_factory=BudgetGridConfig)
    crosstrain: CrossTrainingConfig = field(default_factory=CrossTrainingConfig)
    prompts: PromptVariantsConfig = field(default_factory=PromptVariantsConfig)
    continual: ContinualSuiteConfig = field(default_factory=ContinualSuiteConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    groups: list[TaskGroup] | None = None
    overlap: OverlapConfig = field(default_factory=OverlapConfig)
    generalization: GeneralizationConfig = field(default_factory=GeneralizationConfig)
    controlled_overlap: ControlledOverlapConfig = field(default_factory=ControlledOverlapConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def validate(self) -> None:
        stages = self.stages()
        changing = [s for s in stages if s in CHANGES_MODEL]
        if len(changing) > 1:
            raise ValueError(
                f"experiment: {' and '.join(repr(s) for s in changing)} both change the "
                "model; run only one of them (in its own run)"
            )
        if changing and stages[-1] != changing[0]:
            raise ValueError(f"experiment: {changing[0]!r} changes the model, so it must come last")
        if not self.tasks:
            raise ValueError("tasks: no tasks; list at least one task")

    def stages(self) -> list[str]:
        """The stages to run, in order (aliases expanded, a needed ``detect`` added)."""
        names = [self.experiment] if isinstance(self.experiment, str) else list(self.experiment)
        out: list[str] = []
        for name in names:
            for stage in ALIASES.get(name, [name]):
                if stage not in STAGES:
                    known = ", ".join([*STAGES, *ALIASES])
                    raise ValueError(f"experiment: unknown stage {stage!r}; known: {known}")
                if stage not in out:
                    out.append(stage)
        if self.neurons is None and "detect" not in out and set(out) & set(NEEDS_SETS):
            out.insert(0, "detect")
        return out

    @classmethod
    def read(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentFile:
        """Read an experiment file, apply ``--set key=value`` overrides, fill the defaults."""
        data = read_mapping(path)
        for item in overrides or []:
            set_key(data, item)
        return cls.from_dict(with_defaults(data), where=str(path))


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (``ConfigError`` naming the file and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: experiment file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read an experiment file ({exc})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file is a mapping of settings")
    return data


def set_key(data: dict[str, Any], item: str) -> None:
    """Apply one ``key.sub=value`` override (the value is read as YAML: numbers, lists...)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. detect.k=5")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    put_key(data, key.strip(), value)


def put_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` (``table2.train.lr``) in nested ``data``, making sections."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def with_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the top-level ``seed``/``prompt``/``detect``/``deactivate`` as defaults.

    Every stage's seeds default to ``seed``, every stage's prompt to ``prompt``, the
    multi-task stage's detection and deactivation to the ``detect``/``deactivate`` sections,
    and the generalization stages' groups to the top-level ``groups``.
    """
    seed, prompt = data.get("seed", 0), data.get("prompt", {})
    if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(prompt, Mapping):
        return dict(data)  # from_dict names the bad key
    train = {"seed": seed, "prompt": prompt}
    evals = {"prompt": prompt}
    defaults: dict[str, Any] = {
        "detect": {"attribution": {"seed": seed, "prompt": prompt}},
        "deactivate": {"seed": seed, "random_seed": seed, "eval": evals},
        "table2": {"seed": seed, "random_seed": seed, "train": train, "eval": evals},
        "budget": {"seed": seed, "train": train, "eval": evals},
        "crosstrain": {"seed": seed, "train": train, "eval": evals},
        "prompts": {"seed": seed, "eval": evals},
        "multitask": {"seed": seed, "train": train},
        "continual": {
            "seed": seed,
            "train": train,
            "single_train": train,
            "eval": evals,
            "method": {"seed": seed, "attribution": {"seed": seed, "prompt": prompt}},
        },
    }
    for stage in GROUP_STAGES:
        defaults[stage] = (
            {"seed": seed, "train": train, "eval": evals} if stage != "overlap" else {}
        )
        if isinstance(data.get("groups"), list):
            defaults[stage]["groups"] = data["groups"]
    merged = deep_merge(defaults, data)
    merged["multitask"] = deep_merge(
        {"detect": merged["detect"], "deactivate": merged["deactivate"]}, merged["multitask"]
    )
    return merged


def to_yaml(config: ExperimentFile) -> str:
    """The resolved config as YAML (every knob, defaults filled)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
