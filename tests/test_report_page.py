"""``taskneurons report``: one self-contained HTML page per run, holding every table.

Oracles: the table files each stage wrote (``<table>.json``: header and rows, written by the
stage's ``save``, not by the page) and values read off the result objects; the page is parsed
(html5lib in strict mode where installed, else the standard library's parser).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from taskneurons.experiments.finished_run import load_run

import stage_outputs

pytestmark = pytest.mark.usefixtures("one_thread")


class _Page(HTMLParser):
    """The text of every table cell and every ``src``/``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: set[str] = set()
        self.urls: list[str] = []
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._cell = ""
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.add(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parsed(path: Path) -> _Page:
    text = path.read_text(encoding="utf-8")
    try:
        import html5lib
    except ImportError:  # pragma: no cover - html5lib is a dev dependency here
        pass
    else:
        html5lib.HTMLParser(strict=True).parse(text)  # raises on any parse error
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _shown(value, cells: set[str]) -> bool:
    if isinstance(value, float):
        return any(f"{value:.{d}f}" in cells for d in range(5)) or value != value
    return value is None or str(value) in cells


def missing_table_values(run: Path, page: _Page) -> list:
    """Every header and cell of the table files under ``run`` the page does not show."""
    missing = []
    for path in sorted(run.rglob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or set(data) - {"header", "rows", "meta", "checksum"}:
            continue  # not a table file
        if "rows" not in data:
            continue
        values = [*data["header"], *[v for row in data["rows"] for v in row]]
        missing += [(path.name, v) for v in values if not _shown(v, page.cells)]
    return missing


def check_page(run: Path) -> _Page:
    page = parsed(run / "report.html")
    assert page.urls, "the page has images"
    assert all(u.startswith("data:") or u.startswith("#") for u in page.urls), [
        u[:40] for u in page.urls if not u.startswith("data:")
    ]
    assert "http" not in " ".join(page.urls)
    missing = missing_table_values(run, page)
    assert not missing, missing[:10]
    return page


def test_a_run_writes_its_report_and_it_holds_every_table(
    tiny_folder, task_folders, tmp_path, capsys
):
    tasks = ",".join(str(f) for f in task_folders)
    out = tmp_path / "run"
    argv = ["deactivate", "--model", str(tiny_folder), "--tasks", tasks, "--k", "20"]
    assert main([*argv, "--n-examples", "2", "--n-test", "4", "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    page = check_page(out)
    result = load_run(out).results["deactivate"]
    for row in result.table.table_rows():  # the result object's values, as Table 1 prints them
        assert all(f"{v:.1f}" in page.cells for v in row[1:]) and row[0] in page.cells
    for row in result.table.change():
        assert all(f"{v:.1f}" in page.cells for v in row)
    text = (out / "report.html").read_text()
    assert result.specificity["score"].summary in text  # the statistics beside the heatmap
    assert 'class="heat"' in text


def test_report_command_lays_runs_side_by_side(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(f) for f in task_folders)
    runs = []
    for k in ("10", "30"):
        out = tmp_path / f"k{k}"
        argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--k", k]
        assert main([*argv, "--n-examples", "2", "--out", str(out)]) == 0
        runs.append(str(out))
    page_path = tmp_path / "both.html"
    assert main(["report", *runs, "--out", str(page_path)]) == 0
    text = page_path.read_text()
    assert text.count('<div class="run">') == 2 and "k10" in text and "k30" in text
    assert main(["report", str(tmp_path), "--out", str(page_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["report", runs[0], "--out", str(tmp_path / "x.txt")]) == 2


@pytest.mark.slow
def test_the_report_of_every_stage_is_valid_self_contained_and_complete(tmp_path):
    stage_outputs.run_all(tmp_path)  # every stage on a tiny model; each run writes its report
    for name in stage_outputs.experiments("m", {t: t for t in stage_outputs.TASKS}, tmp_path):
        page = check_page(tmp_path / name)
        for result in load_run(tmp_path / name).results.values():
            rows = getattr(result, "rows", None)  # e.g. the sweep grid's rows
            for row in rows if isinstance(rows, list) else []:
                assert all(_shown(v, page.cells) for v in row if not isinstance(v, list))


def test_a_continual_run_over_seeds_shows_its_intervals_and_paired_tests(
    tiny_folder, task_folders, tmp_path
):
    """The oracle: the ``seeds`` and ``seed_pairs`` tables the seeds' code wrote (their
    ``.json``); the page shows every value of them, under their titles, and FG_j once."""
    out = tmp_path / "run"
    train = {"lr": 0.01, "batch_size": 2, "epochs": 1}
    data = {
        "experiment": "continual", "model": str(tiny_folder), "seed": 0, "out": str(out),
        "tasks": [str(f) for f in task_folders], "prompt": {"max_length": 64},
        "continual": {"methods": ["seqft", "ncft"], "n_train": 4, "n_test": 4, "seeds": [0, 1],
                      "train": train, "single_train": train, "method": {"k": 20}},
    }  # fmt: skip
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "exp.yaml")]) == 0
    page = parsed(out / "report.html")
    for name in ("seeds", "seed_pairs", "table5"):
        table = json.loads((out / f"{name}.json").read_text())
        values = [*table["header"], *[v for row in table["rows"] for v in row]]
        assert [v for v in values if not _shown(v, page.cells)] == [], name
    text = (out / "report.html").read_text()
    assert "CL, BWT, FWT over 2 seeds: mean ± t(S-1)" in text
    assert "paired t-test, Holm-adjusted across the pairs" in text
    assert "(Table 5 layout) (mean over 2 seeds)" in text
    assert text.count('alt="forgetting.png"') == 1 and "FG_j curves" not in text
    assert "routing accuracy" not in text  # neither method weighs tasks: no empty table
