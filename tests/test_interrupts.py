"""Ctrl-C (issue 22, root cause 5): one line ``interrupted`` and exit status 130, from anywhere;
a resumable stage interrupted mid-run and resumed gives the uninterrupted run's results.

Listed in docs/bad-inputs.md ("Interrupts").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"
PROGRESS_BAR = re.compile(r"^[^|]*: *\d+%\|")  # a tqdm line: "eval mood (score):   0%|..."

#: a child process that runs ``taskneurons run FILE`` and sends itself a SIGINT at one point
CHILD = """
import os, signal, sys, time
from pathlib import Path

point, exp, flag = sys.argv[1], sys.argv[2], Path(sys.argv[3])
# a shell starts background jobs with SIGINT ignored, and Python then keeps it ignored: give the
# child the handler an interactive start gives it, whoever launched the tests
signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupt(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)  # the signal is handled before this ends


import taskneurons.cli as cli

if point == "parser":
    build = cli.build_parser
    cli.build_parser = lambda *a: (interrupt(), build(*a))[1]
elif point == "quiet":  # while transformers is imported
    cli._quiet_libraries = interrupt
elif point == "torch":  # inside the import of torch
    class Hook:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                interrupt()

    sys.meta_path.insert(0, Hook())
elif point == "model":  # while the model loads
    import taskneurons.experiments.runner as runner

    runner.load_model = interrupt
elif point == "stage":  # in the second stage of a continual run: wait for the parent's SIGINT
    import taskneurons.experiments.continual.method_run as method_run

    advance = method_run.advance

    def slow(method, tokenizer, ordered, test, state, j, derive):
        if j == 1:
            flag.touch()
            time.sleep(120)
        return advance(method, tokenizer, ordered, test, state, j, derive)

    method_run.advance = slow
sys.exit(cli.main(["run", exp]))
"""


def _child(tmp_path: Path, point: str, exp: Path) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, str(script), point, str(exp), str(tmp_path / "flag")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupted(proc: subprocess.Popen, started: bool = False) -> None:
    """The child ended with one line ``interrupted`` on stderr and status 130 (after the
    progress bars of its work, once ``started``)."""
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    lines = err.strip().splitlines()
    if started:
        assert "Traceback" not in err and lines[-1] == "interrupted", err[-3000:]
        lines = [line for line in lines if line.strip() and not PROGRESS_BAR.match(line)]
    assert lines == ["interrupted"], err[-3000:]


def _continual(tmp_path: Path, tiny_folder, task_folders, out: Path) -> Path:
    data = {
        "experiment": "continual", "model": str(tiny_folder),
        "tasks": [str(f) for f in task_folders], "out": str(out), "prompt": {"max_length": 64},
        "continual": {"methods": ["seqft"], "n_train": 4, "n_test": 4,
                      "train": {"lr": 0.01, "batch_size": 2},
                      "single_train": {"lr": 0.01, "batch_size": 2}},
    }  # fmt: skip
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("point", ["parser", "quiet", "torch", "model"])
def test_interrupt_at_start_up(point, tmp_path, tiny_folder, task_folders):
    exp = _continual(tmp_path, tiny_folder, task_folders, tmp_path / "run")
    _interrupted(_child(tmp_path, point, exp))


def _same_files(a: Path, b: Path, names: list[str]) -> None:
    """The result files ``names`` of the runs ``a`` and ``b`` hold the same results (their
    provenance aside: times, command, folders, and the checksum over them)."""
    for name in names:
        left, right = (json.loads((run / name).read_text()) for run in (a, b))
        if isinstance(left, dict):
            left, right = ({k: v for k, v in d.items() if k not in ("meta", "checksum")}
                           for d in (left, right))  # fmt: skip
        assert left == right, name


def test_interrupted_continual_run_resumes_to_the_same_results(
    tmp_path, tiny_folder, task_folders, capsys
):
    """A real SIGINT in the second stage; ``resume: true`` then ends as a run never stopped."""
    exp = _continual(tmp_path, tiny_folder, task_folders, tmp_path / "cut")
    proc = _child(tmp_path, "stage", exp)
    deadline = time.monotonic() + 300
    while not (tmp_path / "flag").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _interrupted(proc, started=True)
    assert (tmp_path / "cut" / "seqft" / "checkpoint" / "checkpoint.json").is_file()
    assert main(["run", str(exp), "--set", "resume=true"]) == 0
    whole = _continual(tmp_path, tiny_folder, task_folders, tmp_path / "whole")
    assert main(["run", str(whole)]) == 0
    names = ["table5.json", "seqft/matrix.json", "seqft/metrics.json", "seqft/tasks.json"]
    _same_files(tmp_path / "cut", tmp_path / "whole", names)


def test_interrupted_sweep_resumes_to_the_same_results(
    tmp_path, tiny_folder, task_folders, monkeypatch, capsys
):
    """Ctrl-C in the second cell of a sweep: one line, 130; the resumed sweep equals a whole one."""
    from taskneurons.experiments.specificity import sweep

    data = {
        "experiment": "sweep", "model": str(tiny_folder), "tasks": [str(f) for f in task_folders],
        "detect": {"k": 20, "attribution": {"n_examples": 4}},
        "deactivate": {"n_test": 4, "n_boot": 20, "n_permutations": 10},
        "sweep": {"k": [20, 40], "selections": ["topk"]},
    }  # fmt: skip
    exp = tmp_path / "sweep.yaml"
    exp.write_text(yaml.safe_dump({**data, "out": str(tmp_path / "cut")}))
    real, calls = sweep.deactivation_experiment, []

    def second_cell_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "deactivation_experiment", second_cell_interrupted)
    capsys.readouterr()
    assert main(["run", str(exp)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1:] == ["interrupted"]
    monkeypatch.setattr(sweep, "deactivation_experiment", real)
    assert main(["run", str(exp), "--set", "resume=true"]) == 0
    assert main(["run", str(exp), "--set", f"out={tmp_path / 'whole'}"]) == 0
    cells = [f"topk-k{k}/{n}" for k in (20, 40) for n in ("table1.json", "matrix.json")]
    _same_files(tmp_path / "cut", tmp_path / "whole", ["sweep.json", *cells])
