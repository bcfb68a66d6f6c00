"""A finished tiny continual suite of NCFT, W-NCFT and W-NCFT inferred (for the temperature
tests: the sweep on the test split and the choice on the validation split)."""

from __future__ import annotations

from pathlib import Path

import yaml

from taskneurons.cli import main


def finished_wncft_suite(root: Path, model: Path, tasks: list[Path], n: int, train: dict) -> Path:
    """Run NCFT, W-NCFT and W-NCFT inferred on ``tasks`` (``n`` train and test examples each,
    ``train`` for every stage) through ``taskneurons run``; the run's folder."""
    data = {
        "experiment": "continual", "model": str(model), "seed": 0, "out": str(root / "run"),
        "tasks": [str(f) for f in tasks], "prompt": {"max_length": 64},
        "continual": {"methods": ["ncft", "wncft", "wncft-inferred"], "n_train": n, "n_test": n,
                      "train": train, "single_train": train,
                      "method": {"k": 20, "attribution": {"n_examples": 4},
                                 "vector_source": "trained", "n_vector_samples": n}},
    }  # fmt: skip
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 0
    return root / "run"
