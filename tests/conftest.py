"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real task data: ``$TASKNEURONS_SHARED_DATA``, else ``../shared/data``.

    Tests that use it are skipped when the folder is missing (the data is never in the repo).
    """
    path = Path(os.environ.get("TASKNEURONS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared task data not found at {path} (set TASKNEURONS_SHARED_DATA)")
    return path
