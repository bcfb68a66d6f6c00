"""The process group taskneurons starts is ended; one its caller started is left (issue 22,
root cause 7: a gloo group alive at interpreter exit made rank 1 abort now and then, SIGABRT
"terminate called without an active exception", after its work was done).

Each case runs in a child process launched as ``torchrun`` would launch rank 0 of one process
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): making an ``Accelerator`` there
starts a gloo group, as under ``torchrun --nproc_per_node 2``. The oracle is
``torch.distributed.is_initialized()`` itself, read by the child after the command and by an
``atexit`` handler the child registers first (so it runs after any handler registered later,
the tool's included). Listed in docs/bad-inputs.md ("Two-process runs").
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

CHILD = """
import atexit, json, sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, {tests!r})
mode, out, model, tasks, run = sys.argv[1:6]
report = {{}}


def at_exit():  # registered first, so it runs last: after the tool's handlers
    report["at_exit"] = dist.is_initialized()
    if dist.is_initialized():
        dist.destroy_process_group()  # the script's own group, ended by the script
    Path(out).write_text(json.dumps(report))


atexit.register(at_exit)
if mode == "user":  # the caller's own group, started before the tool runs
    dist.init_process_group("gloo")
if mode in ("train", "user"):
    from taskneurons.training.loop import TrainConfig, train
    from test_training import PROMPT, toy_task
    from tiny_models import tiny_model
    from tiny_tokenizer import tiny_tokenizer

    config = TrainConfig(lr=0.1, max_steps=1, batch_size=2, prompt=PROMPT, method="full")
    train(tiny_model("llama"), tiny_tokenizer(), toy_task(n=4), config, progress=False)
    report["after_train"] = dist.is_initialized()
if mode in ("cli", "user"):
    from taskneurons.cli import main

    argv = ["finetune", "-m", model, "-t", tasks, "--n-train", "4", "--n-test", "2"]
    argv += ["--n-examples", "2", "--max-length", "48", "--batch-size", "2", "--out", run]
    report["rc"] = main(argv)
    report["after_main"] = dist.is_initialized()
if mode == "cli":  # accelerate's state was reset with the group: a new one starts it again
    from accelerate import Accelerator

    Accelerator()
    report["again"] = dist.is_initialized()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank0(tmp_path: Path, mode: str, tiny_folder, task_folders) -> dict:
    """Run the child as rank 0 of a 1-process launch; its report (exit status 0 asserted)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(tests=str(TESTS))))
    launch = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    launch |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env = {**os.environ, **launch, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    tasks = ",".join(str(f) for f in task_folders)
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(script), mode, str(out), str(tiny_folder), tasks]
    res = subprocess.run(
        [*cmd, str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "terminate called" not in res.stderr
    return json.loads(out.read_text())


def test_training_ends_the_group_it_started_at_exit(tmp_path, tiny_folder, task_folders):
    """``train`` without an accelerator starts the group; it lives on for later uses in the
    process and is ended at interpreter exit, before the script's own exit handler runs."""
    report = _rank0(tmp_path, "train", tiny_folder, task_folders)
    assert report == {"after_train": True, "at_exit": False}


def test_a_command_ends_the_group_it_started(tmp_path, tiny_folder, task_folders):
    """``main([...])`` of a command that trains: the group its training started is ended when
    it returns, and an Accelerator made afterwards starts one again."""
    report = _rank0(tmp_path, "cli", tiny_folder, task_folders)
    assert report["rc"] == 0
    assert report["after_main"] is False
    assert report["again"] is True  # the script's own group then, ended by its handler
    assert (tmp_path / "run" / "table2" / "table2.json").is_file()


def test_a_group_the_caller_started_is_left_to_the_caller(tmp_path, tiny_folder, task_folders):
    """The caller's own group survives ``train`` and ``main`` and is still there at exit."""
    report = _rank0(tmp_path, "user", tiny_folder, task_folders)
    assert report == {"after_train": True, "rc": 0, "after_main": True, "at_exit": True}


@pytest.mark.slow
def test_a_command_under_torchrun_with_two_processes_exits_0(tmp_path, tiny_folder, task_folders):
    """``torchrun --nproc_per_node 2 -m taskneurons.cli finetune ...`` (detect + Table 2 on a
    tiny model, about 20 s): both ranks end cleanly, exit status 0, and the results are there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(_free_port()), "-m", "taskneurons.cli", "finetune"]
    cmd += ["-m", str(tiny_folder), "-t", ",".join(str(f) for f in task_folders)]
    cmd += ["--n-train", "4", "--n-test", "4", "--n-examples", "4", "--max-length", "48"]
    cmd += ["--batch-size", "2", "--out", str(tmp_path / "run")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "terminate called" not in res.stderr and "SIGABRT" not in res.stderr
    table = json.loads((tmp_path / "run" / "table2" / "table2.json").read_text())
    assert table["header"] == ["", "mood", "answer", "Avg"] and len(table["rows"]) == 3
