"""Stages declare themselves: one :class:`Stage` record each, in one registry.

An experiment file names stages (``experiment: [detect, deactivate]``) and holds a section of
knobs per stage. Each stage is declared once, by a record in a torch-free module of
``taskneurons.experiments`` whose name ends in ``_stage`` (found on first use), or by any code
calling :func:`register`::

    STAGE = register(Stage(
        name="deactivate",                    # the name in `experiment:` and the section key
        config=DeactivateConfig,              # the section's dataclass (a Config)
        run=".deactivation:run_deactivate",   # beside this module; imported when it runs
        title="deactivate each task's neurons vs as many random ones (Table 1)",
        order=20,                             # where its section and command are listed
        needs=("sets",),                      # neuron sets: a detect stage runs first unless
    ))                                        # the file names a `neurons:` folder

The runner, the experiment-file schema, the command line (its choices and help) and the stage
list in the docs all read :func:`stages`; nothing else lists stages. ``run`` is a path
``"module:function"`` imported when the stage runs, so the registry (and ``taskneurons
--help``) loads no torch; the function is called as ``run(ctx, config, folder)`` with the
run's :class:`~taskneurons.experiments.run_context.RunContext`, this stage's section and the
folder to write into, and returns a result with a ``markdown()`` method.

Example:
    >>> [s.name for s in stages()][:3]
    ['detect', 'deactivate', 'table2']
    >>> stage("sweep").needs
    ()
"""

from __future__ import annotations

import importlib
import pkgutil
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: what a stage may need or produce
NEEDS = ("sets",)


@dataclass(frozen=True)
class Stage:
    """One stage an experiment file can name.

    Attributes:
        name: the name in ``experiment:`` and the key of its section.
        config: the section's config dataclass (a :class:`~taskneurons.config.Config`).
        run: ``"module:function"`` (``".module:function"``: beside the config's module); the
            function is ``run(ctx, config, folder) -> result``.
        title: one line: what the stage does (headers, the run's README, ``--help``, docs).
        order: stages of a file run in this order (and their sections are written in it).
        needs: ``"sets"``: each task's neuron set, from this run's detect stage or the file's
            ``neurons:`` folder (a detect stage is added before it when there is neither).
        changes_model: the stage changes the model's weights, so it must come last.
        inherits: top-level sections laid under this stage's section as its defaults (a
            stage whose config holds a ``detect`` config takes the file's ``detect:``).
        uses: other stages' sections it reads (the sweep reads ``detect`` and ``deactivate``);
            its command offers their flags too.
        files: the files it writes (name or stem, ``folder/`` for a folder) -> what each holds,
            for the run's README; or the same as text, one ``name: what it holds`` per line.
        result: ``"module:Class"`` of the result ``run`` returns; the class reads a finished
            stage's folder back (``Class.load(folder)``) and writes it (``result.save(folder)``).
        check: ``"module:function"`` of what the stage refuses once the model is loaded, called
            as ``check(ctx, config, folder)`` before the run writes anything (``folder``:
            where the stage will write; ``None`` when the run empties the folder first).
        check_folder: ``"module:function"`` of what the stage refuses from its folder and
            settings alone, before the model loads, when the run takes a folder of results of
            the same settings: ``check_folder(config, folder, resume)`` (``folder``: where
            the stage writes), e.g. a continual run's checkpoints without ``resume``.
        extends: keys of its section holding lists a resumed run may lengthen (the sweep's
            ``k`` and ``selections``): the run folder then holds the longer grid.
    """

    name: str
    config: type
    run: str
    title: str
    order: int
    needs: tuple[str, ...] = ()
    changes_model: bool = False
    inherits: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    files: Mapping[str, str] | str = field(default_factory=dict)
    result: str = ""
    check: str = ""
    check_folder: str = ""
    extends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.files, str):
            object.__setattr__(self, "files", _notes(self.files))
        unknown = sorted(set(self.needs) - set(NEEDS))
        if unknown:
            raise ValueError(f"stage {self.name!r}: unknown needs {unknown}; known: {NEEDS}")
        named = (("run", self.run), ("result", self.result or ":"), ("check", self.check or ":"))
        for key, value in (*named, ("check_folder", self.check_folder or ":")):
            if ":" not in value:
                raise ValueError(f"stage {self.name!r}: {key} must be 'module:name', got {value!r}")

    def sections(self) -> tuple[str, ...]:
        """The sections a run of this stage reads: its own, those it inherits or uses, and
        ``detect`` when it needs neuron sets."""
        extra = ("detect",) if "sets" in self.needs and self.name != "detect" else ()
        return tuple(dict.fromkeys((self.name, *self.inherits, *self.uses, *extra)))

    def runner(self) -> Callable[..., Any]:
        """The run function (its module imported now)."""
        return self._named(self.run)

    def checker(self) -> Callable[..., Any] | None:
        """The check function (its module imported now), or ``None`` when it declares none.

        Example:
            >>> stage("sweep").checker() is None
            True
        """
        return self._named(self.check) if self.check else None

    def folder_checker(self) -> Callable[..., Any] | None:
        """The ``check_folder`` function (imported now), or ``None`` when it declares none."""
        return self._named(self.check_folder) if self.check_folder else None

    def result_class(self) -> type:
        """The class of the stage's result (its module imported now).

        Raises:
            ValueError: the stage declares no ``result``.
        """
        if not self.result:
            raise ValueError(f"stage {self.name!r} declares no result class")
        return self._named(self.result)

    def _named(self, path: str) -> Any:
        """The object at ``"module:name"``; a module that starts with ``.`` is relative to the
        package of the module that defines the stage's config."""
        module, _, name = path.partition(":")
        package = self.config.__module__.rpartition(".")[0]
        return getattr(importlib.import_module(module, package=package), name)


def _notes(text: str) -> dict[str, str]:
    """``{name: note}`` of ``name: note`` lines (a more indented line continues the note)."""
    notes: dict[str, str] = {}
    name = ""
    for line in textwrap.dedent(text).strip("\n").splitlines():
        if line.startswith(" ") and name:
            notes[name] += " " + line.strip()
        else:
            name, _, note = line.partition(": ")
            notes[name] = note
    return notes


_REGISTRY: dict[str, Stage] = {}
_DISCOVERED: list[bool] = []


def register(stage: Stage) -> Stage:
    """Add ``stage`` to the registry (again under the same name: replaced) and return it."""
    _REGISTRY[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    """Remove a stage (for tests that register a toy one)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every ``*_stage`` module under ``taskneurons.experiments`` once."""
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    package = importlib.import_module("taskneurons.experiments")
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1].endswith("_stage"):
            importlib.import_module(info.name)


def stages() -> list[Stage]:
    """Every registered stage, in run order."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def stage(name: str) -> Stage:
    """The stage called ``name`` (``ValueError`` naming the known ones)."""
    _discover()
    if name not in _REGISTRY:
        known = ", ".join(s.name for s in stages())
        raise ValueError(f"unknown stage {name!r}; known: {known}")
    return _REGISTRY[name]


def stages_markdown() -> str:
    """The registered stages as a Markdown table (docs/architecture.md holds this very table).

    Example:
        >>> stages_markdown().splitlines()[0]
        '| stage | section | what it does | needs, reads | config |'
    """
    rows = ["| stage | section | what it does | needs, reads | config |", "|---|---|---|---|---|"]
    for s in stages():
        section = s.config.__module__.split(".")[-2]
        reads = [*(f"`{u}:`" for u in (*s.inherits, *s.uses))]
        needs = ", ".join([*("neuron sets" for _ in s.needs), *reads]) or "-"
        if s.changes_model:
            needs += "; changes the model (runs last)"
        rows.append(f"| `{s.name}` | `{section}/` | {s.title} | {needs} | `{s.config.__name__}` |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m taskneurons.experiments.stage: the docs' stage table
    # the registry lives in the imported module, not in this __main__ copy of it
    print(importlib.import_module("taskneurons.experiments.stage").stages_markdown())
