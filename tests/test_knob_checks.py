"""Knobs checked before anything loads (issue 22, root cause 4), through the command line.

Every case here is listed in docs/bad-inputs.md ("Stage settings checked before the model
loads"). The files name a model that does not exist: a refusal that names the setting shows it
came before the model was loaded, and no run folder is made.
"""

from __future__ import annotations

import json

import pytest
import yaml

from taskneurons.cli import main
from test_bad_inputs import refused

pytestmark = pytest.mark.usefixtures("one_thread")

MATRIX = "its task x task matrix and specificity statistics compare each task with the others"


def _file(tmp_path, task_folders, **settings) -> tuple:
    """An experiment file (model missing) with ``settings``; ``(path, run folder)``."""
    out = tmp_path / "run"
    data = {"model": str(tmp_path / "no-model"), "tasks": [str(f) for f in task_folders]}
    data.update(out=str(out), **settings)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, out


#: (settings of the experiment file, the message that follows its path); tests/test_probe.py
#: runs them too, with a model that loads
KNOB_CASES = [
    ({"experiment": "budget", "budget": {"tasks": ["sst2"]}},
     "budget.tasks: ['sst2'] are not among the tasks ['mood', 'answer']"),
    ({"experiment": "budget", "budget": {"tasks": []}},
     "budget: tasks: an empty list trains no task; give task ids, or null for all"),
    ({"experiment": "table2", "table2": {"tasks": ["sst2"]}},
     "table2.tasks: ['sst2'] are not among the tasks ['mood', 'answer']"),
    ({"experiment": "budget", "budget": {"n_boot": 0}}, "budget: n_boot must be >= 1, got 0"),
    ({"experiment": "deactivate", "deactivate": {"n_boot": 0}},
     "deactivate: n_boot must be >= 1, got 0"),
    ({"experiment": "deactivate", "deactivate": {"n_boot": -5}},
     "deactivate: n_boot must be >= 1, got -5"),
    ({"experiment": "deactivate", "deactivate": {"n_permutations": 0}},
     "deactivate: n_permutations must be >= 1, got 0"),
    ({"experiment": "crosstrain", "crosstrain": {"n_boot": 0}},
     "crosstrain: n_boot must be >= 1, got 0"),
    ({"experiment": "multitask", "multitask": {"deactivate": {"n_boot": 0}}},
     "multitask.deactivate: n_boot must be >= 1, got 0"),
    ({"experiment": "overlap", "groups": [{"name": "g", "train": ["mood"], "test": ["sst2"]}]},
     "overlap.groups: group 'g' names tasks ['sst2'] that are not among the run's tasks "
     "['mood', 'answer']; add them to tasks: or change the group"),
    ({"experiment": "continual", "continual": {"order": ["mood", "sst2"]}},
     "continual.order: ['sst2'] are not among the tasks ['mood', 'answer']"),
    ({"experiment": "continual", "continual": {"order": ["mood"]}},
     "continual.order: leaves out the tasks ['answer']; list every task of the run once"),
    ({"experiment": "continual", "continual": {"methods": []}},
     "continual: methods: an empty list runs no method; name one or more, or leave methods "
     "out to run method.name (default ncft)"),
    ({"experiment": "continual", "continual": {"methods": ["seqft", "epi", "seqft"]}},
     "continual: methods: ['seqft'] listed twice (each method has one results folder)"),
    ({"experiment": []}, "experiment: no stage to run; name one or a list of: detect, "),
    ({"experiment": "sweep", "sweep": {"k": []}},
     "sweep: k: an empty list sweeps nothing; give percentages, e.g. [1, 5, 10]"),
    ({"experiment": "sweep", "sweep": {"selections": []}},
     "sweep: selections must be a non-empty list of ('topk', 'specific', 'contrastive', "
     "'lape') (got [])"),
    ({"experiment": "sweep", "sweep": {"k": [5, 5.0]}},
     "sweep: k: a percentage is listed twice: [5.0, 5.0]"),
]  # fmt: skip


@pytest.mark.parametrize("settings, message", KNOB_CASES)
def test_stage_settings_refused_before_the_model(settings, message, tmp_path, task_folders, capsys):
    path, out = _file(tmp_path, task_folders, **settings)
    refused(capsys, ["run", str(path)], f"{path}: {message}")
    assert not out.exists()


@pytest.mark.parametrize("stage", ["deactivate", "sweep", "crosstrain", "multitask", "continual"])
def test_stages_that_compare_tasks_need_two(stage, tmp_path, task_folders, capsys):
    path, out = _file(tmp_path, task_folders[:1], experiment=stage)
    why = MATRIX if stage != "continual" else "BWT, FWT and forgetting compare tasks"
    refused(capsys, ["run", str(path)], f"{path}: tasks: {stage} needs at least 2 tasks ({why}")
    assert not out.exists()


def test_stage_commands_name_their_flags(tiny_folder, task_folders, tmp_path, capsys):
    out = str(tmp_path / "d")
    refused(
        capsys,
        ["deactivate", "-m", str(tmp_path / "no-model"), "-t", str(task_folders[0]), "--out", out],
        f"taskneurons deactivate: error: --tasks: deactivate needs at least 2 tasks ({MATRIX}); "
        f"got 1: ['mood']",
    )
    tasks = ",".join(str(f) for f in task_folders)
    refused(
        capsys,
        ["continual", "-m", str(tiny_folder), "-t", tasks, "--method", "seqft,seqft", "--out", out],
        "taskneurons continual: error: --method: ['seqft'] listed twice",
    )
    assert not (tmp_path / "d").exists()


def test_sizes_beyond_the_data_are_recorded_as_used(tiny_folder, task_folders, tmp_path):
    """``--n-test 5000`` on tasks of 6 test examples: the run uses and records 6."""
    detect = ["detect", "-m", str(tiny_folder), "-t", ",".join(str(f) for f in task_folders)]
    assert main([*detect, "--n-examples", "4", "--out", str(tmp_path / "sets")]) == 0
    argv = ["deactivate", "-m", str(tiny_folder), "-t", ",".join(str(f) for f in task_folders)]
    argv += ["--neurons", str(tmp_path / "sets"), "--out", str(tmp_path / "big")]
    assert main([*argv, "--n-test", "5000", "--set", "deactivate.n_boot=10"]) == 0
    resolved = yaml.safe_load((tmp_path / "big" / "config.yaml").read_text())
    assert resolved["deactivate"]["n_test"] == 6
    record = json.loads((tmp_path / "big" / "deactivate_config.json").read_text())
    assert record["config"]["n_test"] == 6
    argv[-1] = str(tmp_path / "exact")
    assert main([*argv, "--n-test", "6", "--set", "deactivate.n_boot=10"]) == 0
    for name in ("table1.json", "matrix.json", "evaluations.json"):  # the very same run
        big, exact = (_results(tmp_path / run / name) for run in ("big", "exact"))
        assert big == exact, name


def _results(path) -> dict:
    """A result file without its provenance (times, command, paths) and checksum."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("meta", "checksum")}
