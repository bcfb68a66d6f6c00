"""The report page in a real browser (headless Chromium): it loads, logs nothing to the console
and asks the network for nothing. Pages with a script error and with an ``http`` image show
that both checks can fail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from taskneurons.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import report_screenshots  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        report_screenshots.browser() is None,
        reason="no chromium on PATH (Debian: apt-get install -y chromium; .ci/run installs it)",
    ),
]


def test_the_checks_see_console_errors_and_requests(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>t</title><script>console.error('boom')</script>")
    lines, _ = report_screenshots.console_messages(bad)
    assert any("boom" in line for line in lines)
    net = tmp_path / "net.html"
    net.write_text('<!DOCTYPE html><title>t</title><img src="http://example.com/x.png">')
    assert report_screenshots.page_requests(net) == ["http://example.com/x.png"]


def test_a_report_loads_in_the_browser_without_console_errors(tiny_folder, task_folders, tmp_path):
    tasks = ",".join(str(f) for f in task_folders)
    out = tmp_path / "run"
    argv = ["deactivate", "--model", str(tiny_folder), "--tasks", tasks, "--k", "20"]
    assert main([*argv, "--n-examples", "2", "--n-test", "4", "--out", str(out)]) == 0
    page = out / "report.html"
    lines, dom = report_screenshots.console_messages(page)
    assert lines == []
    assert "taskneurons report: run" in dom and "Deactivate-Task" in dom  # it loaded
    assert report_screenshots.page_requests(page) == []
    shots = tmp_path / "shots"
    assert report_screenshots.main([str(page), "--out", str(shots)]) == 0
    assert (shots / "report-overview.png").stat().st_size > 10_000
    assert (shots / "report-cards.png").is_file()
