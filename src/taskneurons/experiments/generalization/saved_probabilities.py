"""``lape``'s saved activation probabilities: found, and reused only if measured alike.

A stage with ``detect.selection.method: lape`` saves each task's activation probabilities
``[layers, units]`` as ``<out>/scores/<task>/activation_probability.safetensors``; a detect run
saves them beside its scores. :func:`saved_probabilities` is the one lookup of both places,
used by the generalization stages (``task_groups.task_probabilities``) and by ``taskneurons
analyze overlap --selection lape``; it takes a file only if it was measured with the neuron
definition, ``selection.threshold`` and ``selection.tokens`` asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from taskneurons.experiments.specificity.detect import PROBS_FILE
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons.scores import NeuronScores
from taskneurons.provenance import check_same_model, fingerprint_of

__all__ = ["PROBS_FILE", "saved_probabilities"]


def saved_probabilities(
    score_paths: Mapping[str, Path],
    out_dir: Path,
    detect: DetectConfig,
    definition: str,
    fingerprint: Mapping | None,
) -> dict[str, NeuronScores] | None:
    """Saved activation probabilities ``[layers, units]`` per task, measured as ``detect`` asks.

    For each task (the keys of ``score_paths``, its scores files) the first file measured with
    ``definition``, ``selection.threshold`` and ``selection.tokens`` is taken from
    ``out_dir/scores/<task>/`` (where a stage saves what it measured) and then from beside the
    task's scores file (where a detect run saved them). ``None`` when a task has none: the one
    lookup both a stage and ``analyze overlap --selection lape`` use.

    Raises:
        ModelMismatchError: a saved file was measured on other weights than ``fingerprint``
            (``None``: not checked).

    Example:
        >>> saved_probabilities({"sst2": Path("run/scores/sst2/scores.safetensors")},
        ...                     Path("run"), DetectConfig(), "ffn", None)  # doctest: +SKIP
    """
    probs = {}
    for task, scores_path in score_paths.items():
        places = [out_dir / "scores" / task / PROBS_FILE, Path(scores_path).parent / PROBS_FILE]
        for place in dict.fromkeys(p for p in places if p.is_file()):
            saved = NeuronScores.load(place)
            if fingerprint is not None:
                check_same_model(fingerprint_of(saved.meta), fingerprint, str(place))
            if _measured_as(saved, detect, definition):
                probs[task] = saved
                break
        else:
            return None
    return probs


def _measured_as(probs: NeuronScores, detect: DetectConfig, definition: str) -> bool:
    """Whether saved activation probabilities used this definition, threshold and tokens."""
    sel, meta = detect.selection, probs.meta
    return (
        probs.definition == definition
        and meta.get("threshold") == float(sel.threshold)
        and meta.get("tokens") == sel.tokens
    )
