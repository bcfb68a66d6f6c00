"""docs/architecture.md's "how to add a stage", done: a toy stage is this one file.

Its config, run function and record live here; registering the record is all it takes for the
runner, the experiment-file schema, the run README and the command line to know it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from taskneurons.config import Config, ConfigError
from taskneurons.config_fields import flag
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.runner import run_file
from taskneurons.experiments.stage import Stage, register, stages, unregister


@dataclass
class CountConfig(Config):
    """Knobs of the toy stage: how many test examples to count, and a label."""

    n_test: int | None = field(
        default=3, metadata=flag("--n-test", kind="count", help="test examples per task")
    )
    label: str = field(default="toy", metadata=flag("--label", help="a name for the counts"))


@dataclass
class CountResult:
    """Test examples per task (at most ``n_test``)."""

    label: str
    counts: dict[str, int]

    def markdown(self) -> str:
        return "\n".join(f"{self.label} {task}: {n}" for task, n in self.counts.items())


def run_count(ctx, config: CountConfig, folder: Path) -> CountResult:
    """Count each task's test examples (up to ``config.n_test``) and write ``counts.json``."""
    counts = {t.id: min(len(t.test), config.n_test or len(t.test)) for t in ctx.tasks}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "counts.json").write_text(json.dumps(counts))
    return CountResult(config.label, counts)


STAGE = Stage(
    name="count",
    config=CountConfig,
    run=f"{__name__}:run_count",
    title="count each task's test examples (a toy stage)",
    order=1000,
    files={"counts.json": "test examples per task"},
)


@pytest.fixture
def toy_stage():
    register(STAGE)
    yield STAGE
    unregister(STAGE.name)


def test_a_stage_in_one_file_runs_from_an_experiment_file(
    toy_stage, tiny_folder, task_folders, tmp_path
):
    path = tmp_path / "exp.yaml"
    tasks = [str(t) for t in task_folders]
    out = tmp_path / "run"
    settings = {"experiment": "count", "model": str(tiny_folder), "tasks": tasks, "out": str(out)}
    path.write_text(yaml.safe_dump({**settings, "count": {"n_test": 2, "label": "few"}}))
    run = run_file(path, progress=False, echo=None)
    assert run.results["count"].counts == {"mood": 2, "answer": 2}
    assert json.loads((out / "counts.json").read_text()) == {"mood": 2, "answer": 2}
    assert yaml.safe_load((out / "config.yaml").read_text())["count"] == {
        "n_test": 2,
        "label": "few",
    }
    assert "| `counts.json` | test examples per task |" in (out / "README.md").read_text()
    with pytest.raises(ConfigError, match=r"count.n_test: expected a whole number"):
        ExperimentFile.from_dict({**settings, "count": {"n_test": "many"}})


def test_a_stage_in_one_file_has_its_command(
    toy_stage, tiny_folder, task_folders, tmp_path, capsys
):
    assert "count" in [s.name for s in stages()]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "count each task's test examples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["count", "--help"])
    assert "--label" in capsys.readouterr().out
    tasks = ",".join(str(t) for t in task_folders)
    argv = ["count", "-m", str(tiny_folder), "-t", tasks, "--n-test", "1", "--label", "one"]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert "one mood: 1" in capsys.readouterr().out
    assert main(["count", "-t", tasks, "--n-test", "0"]) == 2  # checked by the flag's kind
    assert "argument --n-test: must be at least 1" in capsys.readouterr().err


def test_without_its_record_the_stage_is_unknown(tiny_folder):
    assert "count" not in [s.name for s in stages()]
    with pytest.raises(ConfigError, match="unknown stage 'count'"):
        ExperimentFile.from_dict({"experiment": "count", "tasks": ["x"]})


def test_the_docs_list_the_registered_stages():
    from taskneurons.experiments.stage import stages_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    listed = docs.split("<!-- stages:", 1)[1].split("\n", 1)[1].split("<!-- /stages -->")[0]
    assert listed.strip() == stages_markdown()
