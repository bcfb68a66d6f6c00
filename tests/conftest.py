"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real task data: ``$TASKNEURONS_SHARED_DATA``, else ``../shared/data``.

    Tests that use it are skipped when the folder is missing (the data is never in the repo),
    unless ``TASKNEURONS_REQUIRE_SHARED_DATA=1`` (set by CI): then they fail, so a CI run
    without the data cannot pass by skipping the real-data tests.
    """
    path = Path(os.environ.get("TASKNEURONS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        message = f"shared task data not found at {path} (set TASKNEURONS_SHARED_DATA)"
        if os.environ.get("TASKNEURONS_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{message}; TASKNEURONS_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _write_task(folder, task_id, pairs, labels):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(
        json.dumps(
            {
                "id": task_id,
                "name": task_id,
                "kind": "classification",
                "labels": labels,
                "instruction": "Classify the sentiment of the text .",
                "metric": "accuracy",
            }
        )
    )
    for split in ("train", "test"):
        lines = [json.dumps({"input": f"Text : {x}", "output": y}) for x, y in pairs]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def task_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    a = _write_task(
        root / "mood",
        "mood",
        [
            ("the movie was good", "good"),
            ("the film was bad", "bad"),
            ("I loved it", "good"),
            ("I hated it", "bad"),
            ("very fun story", "good"),
            ("boring plot", "bad"),
        ],
        ["good", "bad"],
    )
    b = _write_task(
        root / "answer",
        "answer",
        [
            ("is the cat on the mat", "yes"),
            ("is the dog red", "no"),
            ("is it blue", "yes"),
            ("was it sad", "no"),
            ("is she happy", "yes"),
            ("were they funny", "no"),
        ],
        ["yes", "no"],
    )
    return a, b


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = usefixtures("one_thread")``).

    Tiny models run far faster on one thread on a shared 2-core machine (no spin-waits).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    """The tiny test tokenizer (one per module)."""
    return tiny_tokenizer()
