"""A run folder holds the results of one set of settings: a run into it resumes them, is refused
naming the keys that differ, or (``overwrite``) empties the folder and starts afresh; never a mix.

When a run is accepted, ``<out>/run_settings.json`` records the settings that decide its results
(:func:`run_settings`: the stages, the model spec, dtype, device, seed, prompt, ``neurons:``,
``strict``, ``groups``, the sections the stages read, the task ids in order and a digest of each
task's definition and data; not ``out``, ``resume`` or ``overwrite``), before any result is
written. A run into a folder goes through two steps:

1. :func:`claim_folder`, before the model loads: a folder without results is taken; one with
   results and a record of the same settings is taken too (its stages resume or redo their work
   as each stage does); one whose record names other settings, or with results but no record,
   is refused (``ConfigError`` naming the keys), unless ``overwrite``. With ``resume``, a list a
   stage declares extendable (``Stage.extends``: the sweep's ``k``) may grow.
2. :meth:`FolderClaim.accept`, once the model is loaded: each stage's ``check`` runs and the
   ``neurons:`` sets are loaded (checked against the model); then the keys left for now are
   compared too (:func:`deferred`: ``max_length``, fitted to the model, and the section of a
   stage that checks its own folder, so that ``detect`` names a detection of other settings in
   its own words); only then is the folder emptied (``overwrite``) and the record and
   ``config.yaml`` written.

A refused run leaves the folder as it was.

Example:
    >>> claim = claim_folder(config, tasks, "exp.yaml")  # doctest: +SKIP
    >>> folder = claim.accept(RunContext(config, model, tok, tasks))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskneurons._io import check_record, read_json, write_json_sealed, write_text_atomic
from taskneurons.config import ConfigError
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.experiments.experiment_file import ExperimentFile, to_yaml
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.provenance import provenance
from taskneurons.store.run_folder import RUN_RECORD, RunFolder
from taskneurons.store.settings import SettingsKey, flatten, normal

#: top-level keys of an experiment file that are not settings of its results (``tasks`` is
#: recorded as the task ids and a digest of each task instead of the specs; ``offload_folder``
#: is where a device_map's disk modules go, a place like ``out``)
NOT_SETTINGS = ("experiment", "out", "resume", "overwrite", "tasks", "offload_folder")
#: how many differing keys a refusal names
SHOWN = 8
#: how a refusal says to start afresh
OVERWRITE = "pass --overwrite (overwrite: true) to empty it and start afresh"


def task_digest(task: Task) -> str:
    """16 hex digits identifying a task's definition and data: kind, instruction, labels,
    metric and both splits.

    Example:
        >>> task_digest(load_task("sentiment"))  # doctest: +SKIP
        '3f9c...'
    """
    key = SettingsKey.of(
        kind=task.kind, instruction=task.instruction, labels=task.labels, metric=task.metric,
        train=examples_hash(task.train), test=examples_hash(task.test),
    )  # fmt: skip
    return key.digest()[:16]


def run_settings(config: ExperimentFile, tasks: Sequence[Task]) -> dict[str, Any]:
    """The settings that decide the results of a run of ``config`` on ``tasks``, as dotted keys.

    ``stages`` (resolved), ``tasks`` (their ids, sorted) and ``task_order`` (in the file's
    order), the top-level settings but :data:`NOT_SETTINGS`, every key of the sections the
    stages read (``sweep.k``, ``deactivate.eval.batch_size``) and ``data.<task>``
    (:func:`task_digest`).

    Example:
        >>> run_settings(ExperimentFile.from_dict({"tasks": ["sentiment"]}), tasks)["stages"]  # doctest: +SKIP
        ['detect']
    """
    data = config.to_dict()
    stages = config.stages()
    top = {k: v for k, v in data.items() if k not in NOT_SETTINGS and k not in config.sections}
    ids = [t.id for t in tasks]
    out: dict[str, Any] = {"stages": stages, "tasks": sorted(ids), "task_order": ids}
    out.update(flatten(top))
    for name in dict.fromkeys(s for stage in stages for s in stage_named(stage).sections()):
        out.update(flatten(data[name], f"{name}."))
    out.update({f"data.{t.id}": task_digest(t) for t in tasks})
    return normal(out)


def setting_changes(
    held: Mapping[str, Any], now: Mapping[str, Any], skip: Sequence[str] = (),
    grown: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """``key: held vs now`` for each key both hold with other values (a key only one holds: a
    section of a stage only one ran, whose ``stages`` differ, or a knob of another version).

    ``skip``: keys not compared; ``grown``: list keys whose held items are all in the list now
    (a longer grid) are not changes.

    Example:
        >>> setting_changes({"k": [1], "n": 4}, {"k": [1, 2], "n": 3}, grown=["k"])
        ['n: 4 vs 3']
    """

    def changed(key: str) -> bool:
        before, after = held[key], now[key]
        longer = isinstance(before, list) and isinstance(after, list) and key in grown
        return before != after and not (longer and all(item in after for item in before))

    keys = [k for k in now if k in held and k not in skip and changed(k)]
    return SettingsKey(dict(now)).changes(held, keys)


def listed(changes: Sequence[str]) -> str:
    """The first :data:`SHOWN` changes, ``; ``-separated, and how many more there are.

    Example:
        >>> listed([f"k{i}: {i} vs 0" for i in range(10)]).split("; ")[-2:]
        ['k7: 7 vs 0', 'and 2 more']
    """
    more = len(changes) - SHOWN
    return "; ".join(changes[:SHOWN]) + (f"; and {more} more" if more > 0 else "")


@dataclass
class FolderClaim:
    """A run's claim on its folder (:func:`claim_folder`), accepted once the model is loaded.

    Attributes:
        config: the run's settings (as read; :meth:`accept` takes the fitted ones).
        source: where the settings came from (the file, ``taskneurons detect``), for messages.
        held: the settings the folder's results were made with; ``None``: the run starts the
            folder afresh (it holds no results, or ``overwrite``).
    """

    config: ExperimentFile
    source: str
    held: dict[str, Any] | None = None

    def compare(self, now: Mapping[str, Any], skip: Sequence[str] = ()) -> None:
        """Refuse settings ``now`` other than :attr:`held` (``ConfigError`` naming the keys).

        Example:
            >>> claim.compare(run_settings(config, tasks))  # doctest: +SKIP
        """
        if self.held is None:
            return
        stages = self.config.stages()
        grown = [f"{s}.{key}" for s in stages for key in stage_named(s).extends]
        changes = setting_changes(self.held, now, skip, grown if self.config.resume else ())
        if changes:
            raise ConfigError(
                f"{self.source}: out: {self.config.out} holds a run of other settings "
                f"({listed(changes)}; the folder's vs now): rerun with its settings to resume "
                f"it, choose another out, or {OVERWRITE}"
            )

    def accept(self, ctx: RunContext) -> RunFolder:
        """Check what needs the model, then write the record and ``config.yaml``: the folder.

        ``ctx.config`` holds the settings fitted to the model (``max_length``). The stages'
        checks run first (:func:`check_stages`: a stage that checks its folder names what
        differs in its own words), then every setting is compared, before the folder is
        emptied (``overwrite``) or anything is written.

        Raises:
            ValueError: a stage's check refuses (its message), the ``neurons:`` sets do not fit.
            ConfigError: the fitted settings differ from the folder's; the folder cannot be
                made.
        """
        config = ctx.config
        folder = RunFolder(config.out)
        check_stages(ctx, None if config.overwrite else folder)
        now = run_settings(config, ctx.tasks)
        self.compare(now)  # every key now: the fitted max_length, the checked stages' sections
        if config.overwrite:
            folder.clear()
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{self.source}: out: cannot create {folder.path} ({exc.strerror})"
            ) from None
        if self.held != now:
            write_json_sealed(folder.run_record_path, provenance(settings=now))
        write_text_atomic(folder.config_path, to_yaml(config))
        return folder


def claim_folder(config: ExperimentFile, tasks: Sequence[Task], source: str) -> FolderClaim:
    """The run's claim on ``config.out``, checked before the model loads (module docstring).

    Raises:
        ConfigError: the folder holds results of other settings (naming the keys, the
            ``max_length`` ones compared once the model is loaded), or results without a
            record; with ``overwrite``, a folder that holds the working directory, the home
            folder or an input of the run.
        ValueError: a file of a folder of the same settings refuses it
            (:func:`check_held_files`).
    """
    folder = RunFolder(config.out)
    held_files = folder.entries()
    if config.overwrite:
        problem = overwrite_problem(config, folder.path) if folder.path.is_dir() else None
        if problem:
            raise ConfigError(f"{source}: out: will not empty {config.out}: {problem}")
        return FolderClaim(config, source)
    if not held_files:
        return FolderClaim(config, source)
    held = folder.held_settings()
    if held is None:
        names = ", ".join(p.name for p in held_files[:3]) + (", ..." if len(held_files) > 3 else "")
        raise ConfigError(
            f"{source}: out: {config.out} holds files ({names}) but no {RUN_RECORD} saying "
            "which settings made them (a run folder of an older taskneurons, or not a run "
            f"folder): choose another out, or {OVERWRITE}"
        )
    claim = FolderClaim(config, source, held)
    now = run_settings(config, tasks)
    claim.compare(now, skip=[k for k in now if deferred(config, k)])
    check_held_files(config, folder)
    return claim


def check_held_files(config: ExperimentFile, folder: RunFolder) -> None:
    """What a folder of results of the same settings refuses from its files alone, before the
    model loads: with ``resume``, a JSON file cut short or changed since it was written (the
    run would read it back); each stage's ``check_folder``.

    Raises:
        ValueError: naming the file (``ChangedFileError`` for a changed one), or the stage's.

    Example:
        >>> check_held_files(config, RunFolder("runs/sweep"))  # doctest: +SKIP
    """
    if config.resume:
        for path in sorted(folder.path.rglob("*.json")):
            data = read_json(path) if not path.name.startswith(".") else None
            if isinstance(data, dict):
                check_record(data, path)
    stages = config.stages()
    for name in stages:
        check = stage_named(name).folder_checker()
        if check is not None:
            check(getattr(config, name), folder.stage_dir(name, stages), config.resume)


def deferred(config: ExperimentFile, key: str) -> bool:
    """Whether settings ``key`` is compared only once the model is loaded: a ``max_length``
    (fitted to the model), or a key of the section of a stage that checks its own folder
    (``Stage.check``: ``detect`` names a detection of other settings in its own words).

    Example:
        >>> deferred(ExperimentFile.from_dict({"tasks": ["sentiment"]}), "detect.k")
        True
    """
    checked = [s for s in config.stages() if stage_named(s).check]
    return key.rsplit(".", 1)[-1] == "max_length" or key.split(".", 1)[0] in checked


def overwrite_problem(config: ExperimentFile, out: Path) -> str | None:
    """Why ``overwrite`` must not empty ``out`` (``None``: it may): it holds the working
    directory, the home folder, or a task, the model or the ``neurons:`` folder of the run.

    Example:
        >>> overwrite_problem(config, Path("data"))  # doctest: +SKIP
        'it holds tasks[0] (data/mood), which this run reads; choose another out'
    """
    root = out.resolve()
    places = {"the working directory": Path.cwd(), "the home folder": Path.home()}
    for what, path in places.items():
        if path.resolve().is_relative_to(root):
            return f"it holds {what}; choose another out"
    inputs = {f"tasks[{i}] ({spec})": spec for i, spec in enumerate(config.tasks)}
    inputs.update(
        {f"model ({config.model})": config.model, f"neurons ({config.neurons})": config.neurons}
    )
    for what, spec in inputs.items():
        if spec and Path(spec).exists() and Path(spec).resolve().is_relative_to(root):
            return f"it holds {what}, which this run reads; choose another out"
    return None


def check_stages(ctx: RunContext, folder: RunFolder | None) -> None:
    """What the stages refuse once the model is loaded, before the run writes anything: the
    ``neurons:`` sets of the stages that need them (loaded, checked against the model), and
    each stage's ``check`` (``folder``: the run folder, ``None`` when it will be emptied).

    Example:
        >>> check_stages(RunContext(config, model, tok, tasks), RunFolder("runs/x"))  # doctest: +SKIP
    """
    config, stages = ctx.config, ctx.config.stages()
    needs_sets = any("sets" in stage_named(s).needs for s in stages)
    if config.neurons is not None and needs_sets and "detect" not in stages:
        ctx.neuron_sets()
    for name in stages:
        check = stage_named(name).checker()
        if check is not None:
            where = None if folder is None else folder.stage_dir(name, stages)
            check(ctx, getattr(config, name), where)
