"""W-NCFT's temperature chosen on the validation split, then scored once on the test split.

:mod:`.temperature_sweep` shows what the temperature does to a finished W-NCFT run's final
model on its test examples; a temperature picked there was picked on the test set. Here it is
chosen as the learning rates are (:mod:`.lr_choice`): for each run and answering mode, the final
model is scored at every temperature of the grid on the validation split (``n_val`` train
examples per task outside those trained on and the test inputs, the lr grid's split), the
rule picks one (:func:`pick_temperature`: the best mean validation score; scores within
``ties`` points of the best are tied and the largest temperature among them, the nearest the
paper's T = 1, wins), and only that temperature is scored on the test examples. Training does
not depend on the temperature (W-NCFT trains as NCFT does; it only weighs the versions when
answering), so the final column is what a run at that temperature would have scored.

Per run and mode: the chosen T, its validation mean, the test CL at T, the run's recorded CL
(the paper's T = 1; inferred mode: the ``wncft-inferred`` run beside), NCFT's CL of the same
seed and the difference. Over the runs (:func:`difference_summary`): the mean of (W-NCFT at
the chosen T) - NCFT with the claims' interval and exact sign-flip p
(:func:`~taskneurons.analysis.continual_claims.claim_statistic`, each run one unit).

Example:
    >>> rows, val = chosen_rows(["results/o2/seed0/wncft"], TemperatureChoice(n_val=50))  # doctest: +SKIP
    >>> rows[0][:3]  # doctest: +SKIP
    ['results/o2/seed0/wncft', 'given', 0.03]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskneurons.analysis.continual_claims import claim_statistic
from taskneurons.analysis.continual_metrics import cl_half_width
from taskneurons.experiments.continual import temperature_sweep as ts
from taskneurons.experiments.continual.continual_result import RESULT_FILE, ContinualResult
from taskneurons.report.tables import markdown_table, write_table

HEADER = ["run", "mode", "chosen T", "validation mean at T", "test CL at T", "run's CL (T = 1)",
          "NCFT's CL", "at T - NCFT"]  # fmt: skip
SUMMARY_HEADER = ["mode", "units", "mean (at T - NCFT)", "low", "high", "p (sign flip)"]


@dataclass
class TemperatureChoice:
    """The grid (each T > 0), the modes, the validation examples per task and the tie margin.

    Example:
        >>> TemperatureChoice(n_val=50).temperatures
        [1.0, 0.3, 0.1, 0.03, 0.01]
    """

    n_val: int
    temperatures: list[float] = field(default_factory=lambda: [1.0, 0.3, 0.1, 0.03, 0.01])
    modes: list[str] = field(default_factory=lambda: ["given"])
    ties: float = 0.0
    progress: bool = False

    def sweep(
        self, split: str, temperatures: list[float] | None = None, modes: list[str] | None = None
    ) -> ts.TemperatureSweep:
        """The sweep of ``split`` over ``temperatures`` and ``modes`` (default: the choice's)."""
        temps = self.temperatures if temperatures is None else temperatures
        modes = self.modes if modes is None else modes
        return ts.TemperatureSweep(temps, modes, self.progress, split, self.n_val)

    def validate(self) -> None:
        """Refuse a bad grid, mode or ``n_val`` (:meth:`TemperatureSweep.validate`) or a
        negative tie margin."""
        self.sweep("validation").validate()
        if not self.ties >= 0:
            raise ValueError(f"ties must be >= 0 points, got {self.ties}")


def pick_temperature(means: Mapping[float, float], ties: float = 0.0) -> float:
    """The temperature of the best mean validation score; within ``ties`` points of the best,
    the largest temperature (the nearest the paper's T = 1).

    Example:
        >>> pick_temperature({1.0: 60.0, 0.1: 64.0, 0.01: 64.5}, ties=1.0)
        0.1
    """
    best = max(means.values())
    return max(t for t, m in means.items() if m >= best - ties)


def _chosen(model, tokenizer, tasks, folder, choice: TemperatureChoice) -> tuple[list, list]:
    """One run: its validation rows (every T and mode) and a :data:`HEADER` row per mode."""
    val = ts.temperature_rows(model, tokenizer, tasks, folder, choice.sweep("validation"))
    ncft = ts.ncft_result(folder)  # loaded once: its CL and its final column
    n_test = ts.wncft_record(folder)["config"].get("n_test")
    out = []
    for mode in choice.modes:
        means = {t: float(np.mean([r[4] for r in val if r[1:3] == [t, mode]]))
                 for t in choice.temperatures}  # fmt: skip
        t = pick_temperature(means, choice.ties)
        sweep = choice.sweep("test", [t], [mode])
        test = [r[4] for r in ts.temperature_rows(model, tokenizer, tasks, folder, sweep)]
        cl, ncft_cl = float(np.mean(test)), ts.final_cl(ncft)
        diff = None if ncft_cl is None else cl - ncft_cl
        out.append([Path(folder).as_posix(), mode, t, means[t], cl,
                    _recorded_cl(Path(folder), mode), ncft_cl, diff,
                    _cl_se(test, n_test, ncft)])  # fmt: skip
    return out, val


def _recorded_cl(folder: Path, mode: str) -> float | None:
    """The CL the run of ``mode`` recorded: ``folder`` (given) or ``wncft-inferred`` beside."""
    path = folder if mode == "given" else folder.parent / "wncft-inferred"
    if not (path / RESULT_FILE).is_file():
        return None
    return float(ContinualResult.load(path).metrics["cl"])


def _cl_se(scores: Sequence[float], n_test: Any, ncft: ContinualResult | None) -> float:
    """The test-example se of the CL of ``scores`` (``n_test`` examples per task) and of NCFT's
    (independent: conservative); nan without ``n_test`` or NCFT's run."""
    if not isinstance(n_test, int) or ncft is None:
        return math.nan
    own = cl_half_width(list(scores), [n_test] * len(scores), z=1.0)
    final = [float(v) for v in ncft.matrix[:, -1]]
    return math.hypot(own, cl_half_width(final, [n_test] * len(final), z=1.0))


def chosen_rows(
    folders: Sequence[str | os.PathLike], choice: TemperatureChoice
) -> tuple[list[list], list[list]]:
    """``(a HEADER row per run and mode, the validation rows of every run)``; each row holds one
    more value past the header: the test-example se of its difference (for the summary).

    Raises:
        ContinualRunError: a folder that is not a finished W-NCFT run (checked first), or
            whose checkpoint, model or data are not the run's.
    """
    choice.validate()
    pairs = ts.each_run(folders, lambda *run: [_chosen(*run, choice)])
    return [r for rows, _ in pairs for r in rows], [v for _, val in pairs for v in val]


def difference_summary(rows: Sequence[Sequence[Any]]) -> list[list]:
    """Per mode over the runs with NCFT beside: :data:`SUMMARY_HEADER` (at least 2 runs)."""
    out = []
    for mode in dict.fromkeys(r[1] for r in rows):
        units = [r for r in rows if r[1] == mode and r[7] is not None]
        if len(units) < 2:
            continue
        stat = claim_statistic([[r[7]] for r in units], [r[8] for r in units])
        out.append([mode, stat["n_units"], stat["mean"], stat["lo"], stat["hi"], stat["p"]])
    return out


def choice_markdown(rows: Sequence[Sequence[Any]], summary: Sequence[Sequence[Any]]) -> str:
    """The chosen temperatures and their test CL, then the summary over runs."""
    text = markdown_table(HEADER, [r[: len(HEADER)] for r in rows], digits=2)
    return text + ("\n\n" + markdown_table(SUMMARY_HEADER, summary, digits=4) if summary else "")


def write_choice(rows, val_rows, summary, out: str | os.PathLike, meta: dict) -> None:
    """``wncft_temperature_choice.*``, ``..._summary.*`` and ``..._validation.*`` in ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    title = "W-NCFT's temperature chosen on the validation split, scored on the test split"
    write_table(folder / "wncft_temperature_choice", HEADER, [r[: len(HEADER)] for r in rows],
                meta, 2, title)  # fmt: skip
    title = "W-NCFT at the chosen temperature minus NCFT over the runs (claims' interval)"
    write_table(folder / "wncft_temperature_choice_summary", SUMMARY_HEADER, summary, meta, 4,
                title)  # fmt: skip
    title = "W-NCFT's final scores on the validation split at every temperature of the grid"
    write_table(folder / "wncft_temperature_validation", ts.HEADER, val_rows, meta, 2, title)
