"""``taskneurons export``: a detection's neuron sets as files other tools read.

``taskneurons export RUN --out sets.pth`` writes LAPE's format (a list per task, one tensor of
unit indices per layer; one task: the list alone), ``--out sets.json`` the plain JSON form with
each set's provenance (:mod:`~taskneurons.neurons.set_formats`). Either file is accepted back
by ``neurons:`` and ``--neurons``. No model is loaded.

Example:
    >>> run_export(argparse.Namespace(source=Path("runs/detect"), out=Path("s.json"),
    ...                               tasks=None, general=False))  # doctest: +SKIP
    exported 2 sets (sst2, boolq) to s.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from taskneurons._io import folder_problem
from taskneurons.experiments.common import GENERAL_FILE, detect_folder
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.set_formats import LAPE_SUFFIXES, write_set_file
from taskneurons.store.run_folder import RunFolder

#: the suffixes ``--out`` may have
SUFFIXES = (*LAPE_SUFFIXES, ".json")


def check_out(out: Path) -> None:
    """``--out`` names a ``.pth``/``.pt``/``.json`` file in a folder that can be written."""
    if out.suffix not in SUFFIXES:
        raise ValueError(
            f"--out {out}: name a .pth or .pt file (LAPE's format) or a .json file, got "
            f"{out.suffix or 'no suffix'}"
        )
    problem = folder_problem(out.parent)
    if problem:
        raise ValueError(f"--out: {problem}")


def sets_to_export(args: argparse.Namespace) -> dict[str, NeuronSet]:
    """The sets of ``args.source`` (a detect or run folder), those of ``args.tasks`` only when
    given, with the general set as ``general`` when ``args.general``."""
    folder = RunFolder(detect_folder(args.source))
    found = folder.set_tasks()
    if not found:
        raise ValueError(f"{args.source}: holds no neuron sets (run taskneurons detect there)")
    wanted = found if not args.tasks else args.tasks
    missing = [t for t in wanted if t not in found]
    if missing:
        raise ValueError(f"--tasks: no set for {missing} in {folder.path}; it holds {found}")
    sets = {t: NeuronSet.load(folder.set_path(t)) for t in wanted}
    if args.general:
        general = folder.path / GENERAL_FILE
        if not general.is_file():
            raise ValueError(
                f"--general: {folder.path} holds no general set (detect --selection specific)"
            )
        sets["general"] = NeuronSet.load(general)
    return sets


def run_export(args: argparse.Namespace) -> int:
    """Write the sets; print what was written."""
    check_out(args.out)
    sets = sets_to_export(args)
    path = write_set_file(sets, args.out)
    print(f"exported {len(sets)} set(s) ({', '.join(sets)}) to {path}")
    return 0
