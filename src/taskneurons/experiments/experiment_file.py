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
section that sets its own keeps it. ``seeds: [0, 1, 2]`` instead of ``seed`` repeats the whole
file once per seed into ``<out>/seed-<s>/`` and combines the specificity statistics over the
seeds (:mod:`~taskneurons.experiments.seed_repeats`). ``device_map: auto`` (or a mapping of
modules to devices, ``offload_folder:`` for ``disk``) spreads a model larger than one device
(:mod:`~taskneurons.models.device_map`). Unknown keys, wrong types and missing paths are
:class:`~taskneurons.config.ConfigError` naming the file and the key.

Example:
    >>> cfg = ExperimentFile.from_dict({"experiment": "detect", "tasks": ["sentiment"]})
    >>> cfg.stages(), cfg.detect.k
    (['detect'], 10.0)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taskneurons.config import (
    Config,
    ConfigError,
    DuplicateKeyError,
    build_section,
    deep_merge,
    load_yaml,
)
from taskneurons.config_fields import defaults_of, flag
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.experiments.generalization.groups import TaskGroup
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.experiments.stage import stages as registered_stages
from taskneurons.models.device_map import check_device_map

#: The experiment file of ``taskneurons demo`` (shipped with the package).
DEMO_FILE = Path(__file__).with_name("demo.yaml")

#: names that stand for several stages
ALIASES: dict[str, list[str]] = {"all": ["table2", "multitask"]}


@dataclass
class ExperimentFile(Config):
    """Everything an experiment file sets (see the module docstring).

    Attributes:
        experiment: a stage name, ``all``, or a list of stage names.
        model: model spec (``smollm2-135m``, a ``.gguf`` file, a folder, a hub id).
        dtype, device: how the model is loaded.
        device_map: spread a model too large for one device over several (Accelerate's
            big-model inference): ``auto``, ``balanced``, ``balanced_low_0``, ``sequential``
            or a mapping of module names to devices (``0``, ``cuda:1``, ``cpu``, ``disk``);
            ``None``: the whole model on ``device``. Not with stages that train, nor under
            several processes (refused before the model loads).
        offload_folder: where a ``device_map`` writes the modules it puts on ``disk``.
        tasks: task specs (folders, built-in names, ``hf:...``).
        seed: the default of every seed of the stages.
        prompt: the default prompt of every stage.
        out: the run folder.
        neurons: a detect output folder to take the neuron sets from (instead of detecting), or
            an exported file (LAPE ``.pth``, JSON; :mod:`~taskneurons.neurons.set_formats`);
            the ``sweep`` and generalization stages take its relevance scores (a run folder
            with ``scores/`` works too).
        strict: neuron sets from ``neurons`` must come from these very weights.
        resume: ``continual``: continue an interrupted run from its last finished stage;
            ``sweep``: reuse the scores and every finished (selection, k) cell in ``out``.
        overwrite: empty ``out`` first when it holds results of other settings (or files no
            run recorded); never written to ``config.yaml``, so a rerun of it empties nothing.
        groups: the task groups of every generalization stage that sets none (``None``: each
            section's own, by default PAPER.md Table 3).
        sections: each registered stage's knobs, by stage name (in a file: one top-level key
            per stage, ``detect: {k: 5}``); read as attributes, ``config.detect.k``.
    """

    experiment: str | list[str] = "detect"
    model: str = field(
        default="smollm2-135m",
        metadata=flag(
            "--model",
            "-m",
            kind="text",
            help="smollm2-135m (embedded), a .gguf file, a model folder or a hub id",
        ),
    )
    dtype: str = field(
        default="float32", metadata=flag("--dtype", help="float32 | bfloat16 | float16")
    )
    device: str = field(default="cpu", metadata=flag("--device", help="cpu, cuda, cuda:N or mps"))
    device_map: str | dict[str, Any] | None = field(
        default=None,
        metadata=flag(
            "--device-map",
            kind="text",
            help="spread the model over devices: auto, balanced, balanced_low_0, sequential "
            "(a mapping of modules to devices in the file)",
        ),
    )
    offload_folder: str | None = field(
        default=None,
        metadata=flag("--offload-folder", kind="text", help="where device_map's disk modules go"),
    )
    tasks: list[str] = field(
        default_factory=list,
        metadata=flag(
            "--tasks",
            "-t",
            kind="tasks",
            help="comma-separated task folders, built-in names or spec files",
        ),
    )
    seed: int = field(default=0, metadata=flag("--seed", help="seed of every random choice"))
    prompt: PromptConfig = field(default_factory=PromptConfig)
    out: str = field(default="runs/experiment", metadata=flag("--out", help="the run folder"))
    neurons: str | None = field(
        default=None,
        metadata=flag(
            "--neurons",
            help="a detect output folder to take the neuron sets (and scores) from, or a file "
            "taskneurons export wrote (LAPE .pth, JSON)",
        ),
    )
    strict: bool = field(
        default=True,
        metadata=flag(
            "--no-strict",
            negate=True,
            help="accept neuron sets detected on other weights of the same architecture",
        ),
    )
    resume: bool = field(
        default=False,
        metadata=flag("--resume", help="continue an interrupted run (continual, sweep)"),
    )
    overwrite: bool = field(
        default=False,
        metadata=flag(
            "--overwrite", help="empty the run folder first if it holds a run of other settings"
        ),
    )
    groups: list[TaskGroup] | None = None
    sections: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        names = [s.name for s in registered_stages()]
        unknown = sorted(set(self.sections) - set(names))
        if unknown:
            raise ValueError(f"unknown stage sections {unknown}; known: {', '.join(names)}")
        given = self.sections
        self.sections = {
            s.name: given[s.name] if s.name in given else s.config() for s in registered_stages()
        }
        super().__post_init__()

    def __getattr__(self, name: str) -> Any:  # a stage's section: config.detect
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The file's settings: the shared keys, then one section per stage (in stage order)."""
        out = super().to_dict()
        sections = out.pop("sections")
        return {**out, **sections}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> ExperimentFile:
        """Build from a file's mapping: shared keys and one section per registered stage."""
        shared = [f.name for f in dataclasses.fields(cls) if f.name != "sections"]
        names = [s.name for s in registered_stages()]
        unknown = sorted(set(data) - set(shared) - set(names))
        if unknown:
            here = f"{where}: " if where else "ExperimentFile: "
            keys = ", ".join(repr(k) for k in unknown)
            known = ", ".join(sorted([*shared, *names]))
            raise ConfigError(f"{here}unknown key {keys}; known: {known}")
        top = {k: v for k, v in data.items() if k in shared}
        sections = {
            s.name: build_section(s.config, data.get(s.name, {}), where, s.name)
            for s in registered_stages()
        }
        return super().from_dict({**top, "sections": sections}, where)

    def validate(self) -> None:
        stages = self.stages()
        if not stages:
            known = ", ".join([*(s.name for s in registered_stages()), *ALIASES])
            raise ValueError(f"experiment: no stage to run; name one or a list of: {known}")
        changing = [s for s in stages if stage_named(s).changes_model]
        if len(changing) > 1:
            raise ValueError(
                f"experiment: {' and '.join(repr(s) for s in changing)} both change the "
                "model; run only one of them (in its own run)"
            )
        if changing and stages[-1] != changing[0]:
            raise ValueError(f"experiment: {changing[0]!r} changes the model, so it must come last")
        if not self.tasks:
            raise ValueError("tasks: no tasks; list at least one task")
        try:
            check_device_map(self.device_map)
        except ValueError as exc:
            raise ValueError(f"device_map: {exc}") from None

    def stages(self) -> list[str]:
        """The stages to run, in order (aliases expanded, a needed ``detect`` added)."""
        names = [self.experiment] if isinstance(self.experiment, str) else list(self.experiment)
        known = [s.name for s in registered_stages()]
        out: list[str] = []
        for name in names:
            for stage in ALIASES.get(name, [name]):
                if stage not in known:
                    raise ValueError(
                        f"experiment: unknown stage {stage!r}; known: {', '.join([*known, *ALIASES])}"
                    )
                if stage not in out:
                    out.append(stage)
        needs_sets = any("sets" in stage_named(s).needs for s in out)
        if self.neurons is None and "detect" not in out and needs_sets:
            out.insert(0, "detect")
        return out

    @classmethod
    def read(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentFile:
        """Read an experiment file, apply ``--set key=value`` overrides, fill the defaults."""
        return cls.from_dict(with_defaults(read_settings(path, overrides)), where=str(path))


def read_settings(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """The settings of an experiment file with ``--set key=value`` overrides applied (no
    defaults filled: ``seeds:`` and the keys a file mentions stay visible).

    Example:
        >>> read_settings("exp.yaml", ["detect.k=5"])["detect"]["k"]  # doctest: +SKIP
        5
    """
    data = read_mapping(path)
    for item in overrides or []:
        set_key(data, item)
    return data


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
            data = load_yaml(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc}") from None
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
    """``data`` with the top-level ``seed``, ``prompt`` and ``groups`` as the stages' defaults.

    In every stage's section (and the configs nested in it), a field named ``seed`` or
    ``random_seed`` defaults to ``seed``, a :class:`PromptConfig` field to ``prompt`` and a
    ``groups`` field to ``groups``; a stage that inherits top-level sections (``multitask``:
    ``detect``, ``deactivate``) has them laid under its own. A section that sets a key keeps it.
    """
    seed, prompt = data.get("seed", 0), data.get("prompt", {})
    if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(prompt, Mapping):
        return dict(data)  # from_dict names the bad key
    shared = {"seed": seed, "random_seed": seed}
    if isinstance(data.get("groups"), list):
        shared["groups"] = data["groups"]
    defaults: dict[str, Any] = {}
    for s in registered_stages():
        section = defaults_of(s.config, shared, {PromptConfig: prompt}, skip=s.inherits)
        if section:
            defaults[s.name] = section
    merged = deep_merge(defaults, data)
    for s in registered_stages():
        if s.inherits:
            inherited = {name: merged.get(name, {}) for name in s.inherits}
            merged[s.name] = deep_merge(inherited, merged.get(s.name, {}))
    return merged


def to_yaml(config: ExperimentFile) -> str:
    """The resolved config as YAML (every knob, defaults filled; not ``overwrite``, an action
    on the folder rather than a setting: a rerun of the file must not empty it)."""
    data = {k: v for k, v in config.to_dict().items() if k != "overwrite"}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
