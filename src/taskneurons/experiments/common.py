"""Pieces shared by the experiments: test subsets, neuron-set folders, provenance records."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons.data.tasks import Example, Task, examples_hash, subset
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.selection.selection_config import own_keys
from taskneurons.neurons.set_formats import fit_sets, read_set_file
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import fingerprint_of, model_fingerprint, provenance
from taskneurons.store.run_folder import RunFolder, read_record
from taskneurons.store.settings import SettingsKey, flatten


def eval_examples(task: Task, n: int | None, seed: int) -> list[Example]:
    """``n`` test examples of ``task`` (label-stratified, seeded; ``None``: all of them)."""
    exs = task.test
    if n is not None and n < len(exs):
        exs = subset(
            exs, n, seed=seed, labels=task.labels if task.kind == "classification" else None
        )
    return list(exs)


def limited(task: Task, n_train: int | None, seed: int) -> Task:
    """``task`` with ``n_train`` train examples (label-stratified, seeded; ``None``: all)."""
    return task.limit(n_train=n_train, seed=seed) if n_train is not None else task


def experiment_meta(config, model, tasks, test, neuron_sets, controls, **extra) -> dict:
    """The provenance record written beside a deactivation or neuron-training experiment."""
    return provenance(
        config=config.to_dict(),
        model=model_fingerprint(model),
        metric={t.id: t.metric for t in tasks},
        data_hash={t.id: examples_hash(test[t.id]) for t in tasks},
        neuron_sets={t.id: neuron_sets[t.id].meta for t in tasks},
        random_overlap={t.id: controls[t.id].meta.get("n_overlap", 0) for t in tasks},
        **extra,
    )


def check_sets_cover(tasks: list[Task], neuron_sets: Mapping[str, NeuronSet]) -> None:
    """Raise ``ValueError`` unless every task has a neuron set."""
    missing = [t.id for t in tasks if t.id not in neuron_sets]
    if missing:
        raise ValueError(f"no neuron set for tasks {missing}; have {sorted(neuron_sets)}")


def detect_folder(folder: str | os.PathLike) -> Path:
    """The folder holding ``<task>/neurons.safetensors``: ``folder`` or its ``detect/``
    (:meth:`~taskneurons.store.run_folder.RunFolder.detect_dir`)."""
    return RunFolder(folder).detect_dir()


def load_neuron_sets(
    folder: str | os.PathLike, tasks: list[Task], model: nn.Module, strict: bool = True
) -> dict[str, NeuronSet]:
    """Load ``folder/<task>/neurons.safetensors`` for every task, checked against ``model``.

    ``folder`` is a ``detect`` output folder, or a run folder holding one as ``detect/``, or a
    file ``taskneurons export`` wrote (LAPE ``.pth``, JSON; see
    :mod:`~taskneurons.neurons.set_formats`). The
    sets must come from one detection: the same detect settings (k, scope, definition, model,
    attribution knobs) in every set, and those of the folder's ``detect_config.json``.

    Raises:
        FileNotFoundError: the folder or a task's set is missing.
        ValueError: a set is damaged or edited, or the sets mix detect settings (the message
            names the folder and the settings that differ).
    """
    if Path(folder).is_file():  # a LAPE .pth or JSON export (taskneurons export)
        return _sets_from_file(folder, tasks, model, strict)
    run = RunFolder(detect_folder(folder))
    folder, sets = run.path, {}
    for t in tasks:
        path = run.set_path(t.id)
        if not path.is_file():
            raise FileNotFoundError(
                f"no neuron set for task {t.id!r} at {path}; run `taskneurons detect` first"
            )
        sets[t.id] = NeuronSet.load(path, model=model, strict=strict)
    check_same_detection(folder, sets)
    return sets


def check_sets_dtype(folder: str | os.PathLike, tasks: list[Task], dtype: str) -> None:
    """Refuse, before the model loads, sets of ``folder`` made with the model loaded as another
    dtype than ``dtype`` (the run's, e.g. ``"bfloat16"``): their model's weights were rounded
    otherwise. A task without a set, or a set without a fingerprint, is left to
    :func:`load_neuron_sets` once the model is loaded.

    Raises:
        NeuronSetMismatchError: the first such set (the message names it and both dtypes).
        ValueError: a set is damaged or edited (the message names the file).

    Example:
        >>> check_sets_dtype("runs/detect", tasks, "bfloat16")  # doctest: +SKIP
    """
    if Path(folder).is_file():  # an exported set file: checked against the model on load
        return
    run = RunFolder(detect_folder(folder))
    for t in tasks:
        path = run.set_path(t.id)
        recorded = fingerprint_of(NeuronSet.load(path).meta) if path.is_file() else None
        was = (recorded or {}).get("dtype", "float32")
        if recorded is not None and was != dtype:
            raise NeuronSetMismatchError(
                f"neuron set {path} was made with the model loaded as {was}, but this run loads "
                f"it as {dtype}, so its weights are rounded otherwise: load the model with "
                f"dtype={was}"
            )


def _sets_from_file(
    path: str | os.PathLike, tasks: list[Task], model: nn.Module, strict: bool
) -> dict[str, NeuronSet]:
    """Each task's set from an exported file, fitted to ``model``'s space (a recorded model
    fingerprint is checked as for a detect folder's sets)."""
    found = read_set_file(path)
    sets = fit_sets(found, lambda d: NeuronSpace(model, d), [t.id for t in tasks])
    for s in sets.values():
        s.check_model(model, strict=strict)
    return sets


# -- one detection per folder -----------------------------------------------------------------------
#: Detect knobs that change only float rounding or speed, not which neurons are found.
_IGNORED_SETTINGS = ("attribution.batch_size", "attribution.group_by_length")

#: The name of the record of a detection's settings in its folder.
DETECT_CONFIG = "detect_config.json"
#: the general set of a ``specific`` detection, beside the task folders
GENERAL_FILE = "general_neurons.safetensors"


def detect_settings(config: Mapping[str, Any], fingerprint: Mapping[str, Any] | None) -> dict:
    """The settings that decide a detection's sets, flat (``attribution.seed``, ``model.arch``).

    ``config`` is a ``DetectConfig.to_dict()``; ``fingerprint`` the model's fingerprint.
    """
    out: dict[str, Any] = {"k": config.get("k"), "scope": config.get("scope")}
    attribution = config.get("attribution")
    out["definition"] = attribution.get("definition") if isinstance(attribution, Mapping) else None
    out.update(flatten(attribution if isinstance(attribution, Mapping) else {}, "attribution."))
    selection = config.get("selection")
    # a record written when one config held every method's options: only the method's count
    out.update(flatten(own_keys(selection) if isinstance(selection, Mapping) else {}, "selection."))
    out.update(_model_keys(fingerprint))
    return {k: v for k, v in out.items() if k not in _IGNORED_SETTINGS}


def set_settings(meta: Mapping[str, Any]) -> dict:
    """The detect settings recorded in a neuron set's meta (``None`` where not recorded)."""
    out: dict[str, Any] = {key: meta.get(key) for key in ("k", "scope", "definition")}
    if meta.get("rank_modules", "together") != "together":
        out["rank_modules"] = meta.get("rank_modules")
    scores = meta.get("scores_meta")
    attribution = scores.get("config") if isinstance(scores, Mapping) else None
    out.update(flatten(attribution if isinstance(attribution, Mapping) else {}, "attribution."))
    selection = meta.get("selection")
    out["selection.method"] = selection.get("method") if isinstance(selection, Mapping) else "topk"
    fp = meta.get("model_fingerprint")
    out.update(_model_keys(fp if isinstance(fp, Mapping) else None))
    return {k: v for k, v in out.items() if k not in _IGNORED_SETTINGS}


def read_detect_config(folder: Path) -> dict | None:
    """``folder/detect_config.json`` as a dict, or ``None`` when there is none."""
    path = folder / DETECT_CONFIG
    return read_record(path, "detect record", ValueError) if path.is_file() else None


def settings_of_record(record: Mapping[str, Any]) -> dict:
    """:func:`detect_settings` of a ``detect_config.json`` record, plus its ``tasks``."""
    config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
    model = record.get("model") if isinstance(record.get("model"), Mapping) else None
    out = detect_settings(config, model)
    tasks = record.get("tasks")
    out["tasks"] = sorted(tasks) if isinstance(tasks, list) else tasks
    return out


def differences(a: Mapping[str, Any], b: Mapping[str, Any], keys=None) -> list[str]:
    """``key: A vs B`` for each key (default: all of both, sorted) whose values differ
    (:meth:`~taskneurons.store.settings.SettingsKey.changes`)."""
    keys = keys if keys is not None else sorted(set(a) | set(b))
    return SettingsKey(dict(b)).changes(a, keys)


def check_same_detection(folder: Path, sets: Mapping[str, NeuronSet]) -> None:
    """Raise ``ValueError`` unless every set of ``folder`` comes from one detection.

    Every set must record the same detect settings; with a ``detect_config.json`` in the
    folder, each set's recorded settings must be the record's and its task among its tasks.
    """
    names = list(sets)
    settings = {name: set_settings(sets[name].meta) for name in names}
    first = names[0] if names else None
    for name in names[1:]:
        diff = differences(settings[first], settings[name])
        if diff:
            raise ValueError(
                f"{folder}: the neuron sets of {first!r} and {name!r} were detected with other "
                f"settings ({'; '.join(diff)}); detect all tasks again into one empty folder"
            )
    record = read_detect_config(folder)
    if record is None:
        return
    expected = settings_of_record(record)
    for name in names:
        shared = [k for k in settings[name] if k in expected and settings[name][k] is not None]
        diff = differences(settings[name], expected, shared)
        if isinstance(expected["tasks"], list) and name not in expected["tasks"]:
            diff.append(f"task {name!r} not among the tasks {expected['tasks']}")
        if diff:
            raise ValueError(
                f"{folder / name / 'neurons.safetensors'} does not come from the detection "
                f"recorded in {folder / DETECT_CONFIG} ({'; '.join(diff)}); detect all tasks "
                "again into one empty folder"
            )


def check_detect_out(
    folder: Path, config: Mapping[str, Any], tasks: list[str], fingerprint: Mapping[str, Any]
) -> None:
    """Refuse to detect into ``folder`` when it holds sets of a detection with other settings.

    A folder without neuron sets is always fine; one with sets must have been made with the
    same settings (:func:`detect_settings`), model and task list.

    Raises:
        ValueError: ``folder/detect_config.json`` records other settings or tasks (the message
            names the folder and the keys), or ``folder`` holds neuron sets of other tasks
            without such a record.
    """
    hint = "pass another --out (out: in an experiment file) or delete it"
    held = RunFolder(folder).set_tasks()
    if not held:
        return  # nothing to mix with
    record = read_detect_config(folder)
    if record is None:
        strays = [name for name in held if name not in tasks]
        if strays:
            raise ValueError(
                f"{folder} already holds neuron sets of other tasks {strays} (no "
                f"{DETECT_CONFIG} says how they were made); {hint}"
            )
        return
    now = {**detect_settings(config, fingerprint), "tasks": sorted(tasks)}
    diff = differences(settings_of_record(record), now)
    if diff:
        raise ValueError(
            f"{folder} already holds a detection with other settings ({'; '.join(diff)}; "
            f"earlier vs now); its sets would be mixed with the new ones: {hint}"
        )


# -- runs analysed together -------------------------------------------------------------------------
#: knobs of an evaluation or attribution that change speed (and float rounding), not results
SPEED_KEYS = ("batch_size", "sort_by_length", "group_by_length")


def result_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (flat dotted keys) without the speed knobs of evaluations and attributions
    (:data:`SPEED_KEYS`): what runs analysed together must share.

    Example:
        >>> result_settings({"eval.batch_size": 8, "train.batch_size": 2, "n_test": 4})
        {'train.batch_size': 2, 'n_test': 4}
    """

    def speed(key: str) -> bool:
        *parents, name = key.split(".")
        return name in SPEED_KEYS and ("eval" in parents or "attribution" in parents)

    return {k: v for k, v in settings.items() if not speed(k)}


def first_mismatch(
    runs: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[str, str, list[str]] | None:
    """``(first label, other label, differences)`` of the first of ``runs`` (label, flat
    settings) whose settings are not the first run's, else ``None``.

    Example:
        >>> first_mismatch([("a", {"n": 4}), ("b", {"n": 4}), ("c", {"n": 3})])
        ('a', 'c', ['n: 4 vs 3'])
    """
    if not runs:
        return None
    first, base = runs[0]
    for label, settings in runs[1:]:
        diff = differences(base, settings)
        if diff:
            return first, label, diff
    return None


def _model_keys(fingerprint: Mapping[str, Any] | None) -> dict[str, Any]:
    fp = fingerprint or {}
    return {"model.arch": fp.get("arch"), "model.weights": fp.get("weights")}
