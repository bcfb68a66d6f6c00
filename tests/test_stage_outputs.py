"""Every stage's result files on tiny models are those recorded before the restructuring.

The golden file (``tests/golden/stage_outputs.json``) was written by ``python
tests/stage_outputs.py write`` at the commit before issue 21's restructuring; a stage whose
files change shows here, file by file and key by key (see ``stage_outputs.py``).
"""

from __future__ import annotations

import json

import pytest

import stage_outputs


@pytest.mark.slow
def test_every_stage_writes_the_files_it_wrote_before(tmp_path):
    stage_outputs.run_all(tmp_path)
    now = stage_outputs.reduce_runs(tmp_path)
    golden = json.loads(stage_outputs.GOLDEN.read_text())
    diff = stage_outputs.differences(golden, now)
    assert not diff, f"{len(diff)} differences, first ones:\n" + "\n".join(diff[:40])


def test_the_reduction_keeps_what_matters_and_drops_what_varies():
    text = stage_outputs.reduce_text("| topk-k20 | 50.0 | -1.00..-0.94 |; 2 s.")
    assert text == {"text": "| topk-k20 | # | #..# |; <T> s.", "numbers": [50.0, -1.0, -0.94]}
    record = {"created": "x", "config": {"lr": 0.1, "wall_s": 3.0}, "meta_sha256": "ab"}
    assert stage_outputs.reduce_json(record) == {"config": {"lr": 0.1}}
    assert stage_outputs.differences({"a": [1.0, "x"]}, {"a": [1.0 + 1e-9, "x"]}) == []
    assert stage_outputs.differences({"a": [1.0]}, {"a": [1.01]}) == [
        "/a[0]: 1.0 in the golden file, 1.01 now"
    ]
    assert stage_outputs.differences({"a": 1}, {"b": 1}) == [
        "/a: missing now",
        "/b: new (not in the golden file)",
    ]
