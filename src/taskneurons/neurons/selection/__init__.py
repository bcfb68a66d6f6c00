"""Ways to make neuron sets from relevance, and to compare them.

* :mod:`~taskneurons.neurons.selection.percent` — ``k`` checked and counted (no torch);
* :mod:`~taskneurons.neurons.selection.ranking` — one task's top ``k`` % (:func:`top_k`), the
  overlap of two sets (:func:`iou`);
* :mod:`~taskneurons.neurons.selection.random_sets` — the random control sets
  (:func:`random_like`, :func:`matched_random_sets`, :func:`random_pair_like`);
* :mod:`~taskneurons.neurons.selection.selection_config` — :class:`SelectionConfig`, the family
  of one config per selection method (no torch);
* :mod:`~taskneurons.neurons.selection.task_selection` — what the selections of several tasks
  share (:class:`TaskSelection`, :func:`normalize_layers`) and :func:`select`;
* :mod:`~taskneurons.neurons.selection.algorithms` — one module per method (``topk``,
  ``specific``, ``contrastive``, ``lape``): its config and its function.

Names are imported on first use (PEP 562), so the torch-free modules stay light.

Example:
    >>> from taskneurons.neurons.selection import top_k, random_like, select  # doctest: +SKIP
    >>> task = top_k(scores, k=10)  # doctest: +SKIP
    >>> sets = select("specific", scores_by_task, k=10, m=2)  # doctest: +SKIP
"""

from __future__ import annotations

from taskneurons._lazy import lazy_exports

_PACKAGE = "taskneurons.neurons.selection"
#: public name -> the module that defines it
_EXPORTS = {
    f"{_PACKAGE}.percent": ("check_k", "count_for"),
    f"{_PACKAGE}.ranking": ("iou", "top_k"),
    f"{_PACKAGE}.random_sets": ("matched_random_sets", "random_like", "random_pair_like"),
    f"{_PACKAGE}.selection_config": ("SelectionConfig",),
    f"{_PACKAGE}.task_selection": ("TaskSelection", "normalize_layers", "select"),
}
__all__ = sorted(n for names in _EXPORTS.values() for n in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
