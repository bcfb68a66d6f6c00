"""Neuron cards and per-layer set counts for a run folder's page (the model loaded once).

The sets come from the run's ``detect`` stage (with its relevance scores and general set), else
from its ``neurons:`` (a detect folder or an exported file); a run with neither gets no cards.
The model, tasks and prompt are those of the run's ``config.yaml``.

Example:
    >>> view = with_cards(run_view("runs/demo"), "runs/demo", CardOptions())  # doctest: +SKIP
    >>> [(c.layer, c.unit) for c in view.cards]  # doctest: +SKIP
    [(12, 803), (20, 77)]
"""

from __future__ import annotations

import os

from taskneurons.experiments.common import load_neuron_sets
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.finished_run import load_run
from taskneurons.experiments.runner import load_tasks
from taskneurons.models.loading import load_model
from taskneurons.pages.neuron_cards import CardInputs, CardOptions, layer_count_chart, neuron_cards
from taskneurons.pages.run_view import RunView
from taskneurons.store.run_folder import RunFolder


def with_cards(view: RunView, folder: str | os.PathLike, options: CardOptions) -> RunView:
    """``view`` with its neuron cards and per-layer count chart (unchanged without sets or
    for ``linear`` sets)."""
    run = load_run(folder)
    config: ExperimentFile = run.config
    detection = run.results.get("detect")
    if detection is None and config.neurons is None:
        return view
    model, tokenizer = load_model(config.model, dtype=config.dtype)
    model.eval()
    tasks = load_tasks(config, str(RunFolder(folder).config_path))
    if detection is not None:
        sets, scores, general = detection.sets, detection.scores, detection.general
    else:
        sets = load_neuron_sets(config.neurons, tasks, model, strict=config.strict)
        scores, general = {}, None
    if not sets or any(s.definition != "ffn" for s in sets.values()):
        return view
    inputs = CardInputs(model, tokenizer, tasks, sets, scores, general, config.prompt)
    view.cards = neuron_cards(inputs, options)
    view.charts = [("neurons per layer, every set", layer_count_chart(sets, general))]
    return view
