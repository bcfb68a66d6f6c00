"""PAPER.md Table 5 over task orders: each method's CL on every order, and their mean.

A finished ``experiment: continual`` run writes ``suite.json`` (the rows of its Table 5 for one
order). :func:`continual_orders_table` reads several such runs and lays them side by side: a row
per method, a CL column per run (in the order given), the mean CL over the runs, and the mean
BWT and final FG_N (the share of the earlier tasks' single-task scores kept after the last task,
%). Each CL has the half-width of its 95 % normal-approximation CI from the final accuracies and
the run's ``n_test`` (binomial errors, independent test sets) -- or, for a run with seeds,
the half-width over seeds and test examples of its ``seeds.json``; each BWT, one from the
method's accuracy matrix (``<run>/<method>/matrix.json``; conservative, see
:func:`~taskneurons.analysis.continual_metrics.bwt_half_width`), or again ``seeds.json``'s. A method missing from a run has
no entry there and no mean. The result is written as
``table5_orders.{md,csv,json}``, whose meta names every run folder, its task order and its
``suite.json`` hash, beside the FG_j curves (PAPER.md Figure 4): ``forgetting_orders.{md,csv,json}``
(a row per run and method, FG_j per stage j = 2..N, %) and ``forgetting_<run>.png`` per run.

Example:
    >>> res = continual_orders_table(["runs/continual-order1", "runs/continual-order4"],
    ...                              "runs/table5")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskneurons._io import check_record
from taskneurons.analysis.continual_metrics import bwt_half_width, cl_half_width
from taskneurons.experiments.common import first_mismatch, result_settings
from taskneurons.provenance import provenance
from taskneurons.report.plots import forgetting_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import RunFolder, read_record
from taskneurons.store.settings import flatten, model_identity, normal
from taskneurons.store.stored_result import StoredResult

#: The file an ``experiment: continual`` run writes its Table 5 rows to.
SUITE_FILE = "suite.json"


class ContinualRunError(ValueError):
    """A folder that holds no finished continual run (the message says which and why)."""


@dataclass
class ContinualOrdersResult(StoredResult):
    """Table 5 across runs: ``cl[method][r]`` is the CL (score points) of ``method`` on run ``r``.

    ``cl_pm`` is the half-width of its 95 % normal-approximation CI
    (:func:`~taskneurons.analysis.continual_metrics.cl_half_width`; ``nan`` without ``n_test``).

    ``bwt`` (with ``bwt_pm``, its conservative 95 % half-width) and ``final_forgetting`` (FG_N,
    %) are indexed the same way; ``nan`` where a method did not run, or where the value is
    undefined (FG_N when some A(i) <= 0; a half-width without ``n_test`` or the matrix file).

    ``meta`` names every run folder, its order and its ``suite.json`` hash. :meth:`save` writes
    ``table5_orders.*``, ``forgetting_orders.*`` and ``forgetting_<run>.png``; :meth:`load`
    reads the two tables back (FG_1, undefined, as ``nan``).

    Example:
        >>> ContinualOrdersResult.load("runs/table5").rows()  # doctest: +SKIP
    """

    runs: list[str]
    orders: list[list[str]]
    cl: dict[str, list[float]] = field(default_factory=dict)
    cl_pm: dict[str, list[float]] = field(default_factory=dict)
    bwt: dict[str, list[float]] = field(default_factory=dict)
    bwt_pm: dict[str, list[float]] = field(default_factory=dict)
    final_forgetting: dict[str, list[float]] = field(default_factory=dict)
    #: run -> method -> FG_j per stage j = 1..N (%; ``nan`` at j = 1, where it is undefined)
    forgetting: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict, repr=False)
    out_dir: Path | None = None

    def forgetting_header(self) -> list[str]:
        """``run, method, FG_2 .. FG_N`` with N the longest order."""
        n = max((len(o) for o in self.orders), default=1)
        return ["run", "method", *(f"FG_{j}" for j in range(2, n + 1))]

    def forgetting_rows(self) -> list[list[Any]]:
        """A row per run and method: FG_j for j = 2..N (``nan`` past a shorter order)."""
        width = len(self.forgetting_header()) - 2
        return [
            [run, method, *curve[1:], *[math.nan] * (width - len(curve) + 1)]
            for run, curves in self.forgetting.items()
            for method, curve in curves.items()
        ]

    def forgetting_markdown(self) -> str:
        """The FG_j curves as one Markdown table (a row per run and method)."""
        return markdown_table(self.forgetting_header(), self.forgetting_rows())

    def header(self) -> list[str]:
        per_run = [h for r in self.runs for h in (f"CL {r}", f"± {r}", f"BWT {r}", f"BWT ± {r}")]
        return ["method", *per_run, "mean CL", "mean BWT", "mean FG_N"]

    def rows(self) -> list[list[Any]]:
        out = []
        for method, cls in self.cl.items():
            means = [_mean(v[method]) for v in (self.cl, self.bwt, self.final_forgetting)]
            per_run = zip(
                cls, self.cl_pm[method], self.bwt[method], self.bwt_pm[method], strict=True
            )
            pairs = [v for values in per_run for v in values]
            out.append([method, *pairs, *means])
        return out

    def markdown(self) -> str:
        legend = "\n".join(
            f"- {run}: {' -> '.join(order)}"
            for run, order in zip(self.runs, self.orders, strict=True)
        )
        return markdown_table(self.header(), self.rows()) + "\n\n" + legend

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``table5_orders.*``, ``forgetting_orders.*`` and a Figure 4 plot per run into
        ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        tables = {
            "table5_orders": (self.header(), self.rows(), "Continual learning over task orders: "
                              "CL per order and means (Table 5 layout)"),
            "forgetting_orders": (self.forgetting_header(), self.forgetting_rows(), "FG_j per "
                                  "stage (% of the earlier tasks' single-task scores kept; Figure 4)"),
        }  # fmt: skip
        for stem, (header, rows, title) in tables.items():
            write_table(out / stem, header, rows, meta=self.meta, title=title)
        for run, order in zip(self.runs, self.orders, strict=True):
            title = f"FG_j, {run}\n{' > '.join(order)}"
            forgetting_plot(self.forgetting[run], out / f"forgetting_{run}.png", title)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ContinualOrdersResult:
        """The table written into ``folder``.

        Raises:
            FinishedRunError: ``table5_orders.json`` or ``forgetting_orders.json`` is missing.
        """
        path = Path(folder)
        table = read_record(path / "table5_orders.json")
        meta = table["meta"]
        runs = [Path(r["folder"]).name for r in meta["runs"]]
        result = cls(runs, [list(r["order"]) for r in meta["runs"]], meta=meta, out_dir=path)
        for row in table["rows"]:
            per_run = [row[1 + 4 * r : 5 + 4 * r] for r in range(len(runs))]
            for n, values in enumerate((result.cl, result.cl_pm, result.bwt, result.bwt_pm)):
                values[row[0]] = [float(v[n]) for v in per_run]
        length = dict(zip(runs, map(len, result.orders), strict=True))
        result.forgetting = {run: {} for run in runs}
        for run, method, *fg in read_record(path / "forgetting_orders.json")["rows"]:
            result.forgetting[run][method] = [math.nan, *fg[: length[run] - 1]]
        result.final_forgetting = {
            m: [result.forgetting[run].get(m, [math.nan])[-1] for run in runs] for m in result.cl
        }
        return result


def _mean(values: Sequence[float]) -> float:
    """Mean of ``values``; ``nan`` if any is ``nan`` (a method must run on every order)."""
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    return sum(values) / len(values)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def read_suite(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``suite.json`` of a finished continual run in ``folder`` (a run of the continual
    stage alone, or a run whose ``continual/`` folder holds it), with its ``sha256`` and the
    ``folder`` that holds it.

    Raises:
        ContinualRunError: no ``suite.json`` there (not a continual run, or not finished; a run
            over seeds counts as finished once all its seeds are), or one without the
            ``header``/``rows``/``forgetting`` it should hold.
    """
    path = RunFolder(folder).find(SUITE_FILE)
    if path is None:
        raise ContinualRunError(
            f"{folder}: no {SUITE_FILE}; give the folder of a finished `experiment: continual` run"
        )
    if path.parent != Path(folder) and re.fullmatch(r"seed\d+", path.parent.name):
        done = sorted(p.parent.name for p in Path(folder).glob(f"seed*/{SUITE_FILE}"))
        raise ContinualRunError(
            f"{folder}: a run over seeds that has not finished (only {', '.join(done)} "
            f"have a {SUITE_FILE}); resume it, or give one seed's folder"
        )
    try:
        data = check_record(json.loads(path.read_text(encoding="utf-8")), path)
        header, _, _ = data["header"], data["rows"], data["forgetting"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ContinualRunError(f"{path}: not a continual suite file ({exc})") from exc
    if "CL" not in header or "BWT" not in header:
        raise ContinualRunError(f"{path}: its header {header} has no CL/BWT columns")
    data["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    data["folder"] = path.parent
    return data


def _collect(suites: list[dict[str, Any]], folders: Sequence[Path]) -> ContinualOrdersResult:
    methods: list[str] = []
    for suite in suites:
        methods += [row[0] for row in suite["rows"] if row[0] not in methods]
    names = [f.name for f in folders]
    result = ContinualOrdersResult(runs=names, orders=[])
    result.forgetting = {n: _curves(s) for n, s in zip(names, suites, strict=True)}
    for name in methods:
        for table in (result.cl, result.cl_pm, result.bwt, result.bwt_pm, result.final_forgetting):
            table[name] = []
    for suite in suites:
        header = suite["header"]
        result.orders.append(header[1 : header.index("CL")])
        rows = {row[0]: row for row in suite["rows"]}
        over_seeds = _seed_half_widths(suite["folder"])
        for name in methods:
            row = rows.get(name)
            fg = suite["forgetting"].get(name) or [None]
            result.cl[name].append(_number(row[header.index("CL")]) if row else math.nan)
            cl_pm = over_seeds.get((name, "CL")) or (_half_width(suite, row) if row else math.nan)
            result.cl_pm[name].append(cl_pm if row else math.nan)
            result.bwt[name].append(_number(row[header.index("BWT")]) if row else math.nan)
            bwt_pm = over_seeds.get((name, "BWT"))
            if bwt_pm is None:
                bwt_pm = _bwt_half_width(suite["folder"] / name, suite) if row else math.nan
            result.bwt_pm[name].append(bwt_pm if row else math.nan)
            result.final_forgetting[name].append(_number(fg[-1]) if row else math.nan)
    return result


def _seed_half_widths(folder: Path) -> dict[tuple[str, str], float]:
    """``(method, "CL" | "BWT") ->`` the 95 % half-width over seeds and test examples of a run
    with seeds (its ``seeds.json``, :mod:`~taskneurons.experiments.continual.seeds`); ``{}``
    for a run without seeds."""
    path = folder / "seeds.json"
    if not path.is_file():
        return {}
    rows = read_record(path, "seed table", ContinualRunError)["rows"]
    return {(r[0], r[1]): _number(r[3]) for r in rows if r[1] in ("CL", "BWT")}


def _bwt_half_width(method_dir: Path, suite: dict[str, Any]) -> float:
    """BWT's conservative 95 % half-width from ``method_dir/matrix.json`` (else ``nan``)."""
    n_test = suite.get("meta", {}).get("config", {}).get("n_test")
    path = method_dir / "matrix.json"
    if not isinstance(n_test, int) or not path.is_file():
        return math.nan
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    a = [[_number(v) for v in row[1:]] for row in rows]  # [task, stage]
    if any(math.isnan(a[i][i]) or math.isnan(a[i][-1]) for i in range(len(a))):
        return math.nan
    return bwt_half_width(a, [n_test] * len(a))


def _curves(suite: dict[str, Any]) -> dict[str, list[float]]:
    """method -> FG_j per stage from a suite file (``None`` read as ``nan``)."""
    return {m: [_number(v) for v in fg] for m, fg in suite["forgetting"].items() if fg}


def _half_width(suite: dict[str, Any], row: list) -> float:
    """The CL's 95 % half-width from the final scores and the run's ``n_test`` (else ``nan``)."""
    n_test = suite.get("meta", {}).get("config", {}).get("n_test")
    header = suite["header"]
    final = [_number(v) for v in row[1 : header.index("CL")]]
    if not isinstance(n_test, int) or any(math.isnan(v) for v in final):
        return math.nan
    return cl_half_width(final, [n_test] * len(final))


#: suite settings that differ between the orders of one experiment (or name a file)
ORDER_KEYS = ("order", "methods", "reference_cache")


def suite_settings(suite: dict[str, Any]) -> dict[str, Any]:
    """What the runs of one Table 5 share (flat keys): the suite's settings but the order and
    methods, the tasks (sorted), and the model and data hashes the first method recorded
    (speed knobs left out: :func:`~taskneurons.experiments.common.result_settings`).

    Example:
        >>> suite_settings(read_suite("runs/continual-order1"))["tasks"]  # doctest: +SKIP
        ['agnews', 'amazon', 'dbpedia', 'yahoo']
    """
    config = suite.get("meta", {}).get("config")
    config = {k: v for k, v in (config or {}).items() if k not in ORDER_KEYS}
    header = suite["header"]
    out = {"tasks": sorted(header[1 : header.index("CL")]), **flatten(config)}
    records = (suite["folder"] / row[0] / "continual_config.json" for row in suite["rows"])
    path = next((p for p in records if p.is_file()), None)
    if path is not None:
        record = read_record(path, "continual record", ContinualRunError)
        out.update(flatten(model_identity(record.get("model")), "model."))
        for key in ("train_hash", "test_hash"):
            out.update(flatten(record.get(key) or {}, f"{key}."))
    return result_settings(normal(out))


def check_orders(folders: Sequence[str | os.PathLike], suites: list[dict], mixed: bool) -> None:
    """Refuse runs that are not one experiment over distinct task orders.

    Raises:
        ContinualRunError: a run's model, tasks, data or settings are not the first run's
            (unless ``mixed``), or two runs of the same settings hold the same order.

    Example:
        >>> check_orders(folders, [read_suite(f) for f in folders], mixed=False)  # doctest: +SKIP
    """
    settings = [(str(f), suite_settings(s)) for f, s in zip(folders, suites, strict=True)]
    mismatch = None if mixed else first_mismatch(settings)
    if mismatch is not None:
        first, other, diff = mismatch
        raise ContinualRunError(
            f"{other} is not a run of the experiment of {first}: they differ in "
            f"{'; '.join(diff)} (the first vs the other); Table 5 averages one experiment over "
            "task orders: give runs of one model, task set and settings, or pass --mixed to lay "
            "them out together anyway"
        )
    seen: dict[tuple, str] = {}
    for (folder, values), suite in zip(settings, suites, strict=True):
        header = suite["header"]
        order = header[1 : header.index("CL")]
        key = (json.dumps(values, sort_keys=True), tuple(order))
        if key in seen:
            raise ContinualRunError(
                f"{seen[key]} and {folder} hold the same task order ({' -> '.join(order)}); "
                "Table 5 averages over different orders: give each order once"
            )
        seen[key] = folder


def continual_orders_table(
    folders: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    mixed: bool = False,
) -> ContinualOrdersResult:
    """Table 5 across the finished continual runs in ``folders`` (columns in that order).

    Writes ``<out_dir>/table5_orders.{md,csv,json}``, ``forgetting_orders.{md,csv,json}`` and
    ``forgetting_<run>.png`` per run when ``out_dir`` is given. ``mixed``: lay out runs of other
    models, tasks or settings side by side too (their means then mix experiments).

    Raises:
        ContinualRunError: a folder without a finished run, the same folder twice, runs that
            are not one experiment over distinct orders (:func:`check_orders`).
    """
    names = [Path(f).name for f in folders]
    if not folders:
        raise ContinualRunError("no run folders given")
    if len(set(names)) != len(names):
        raise ContinualRunError(f"run folders must have distinct names, got {names}")
    suites = [read_suite(f) for f in folders]
    check_orders(folders, suites, mixed)
    result = _collect(suites, [Path(f) for f in folders])
    result.meta = provenance(
        runs=[
            {"folder": str(f), "order": o, "suite_sha256": s["sha256"]}
            for f, o, s in zip(folders, result.orders, suites, strict=True)
        ]
    )
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.save()
    return result
