"""How much of a task's neuron set later tasks train again: pure functions, no model, no I/O.

NCFT and W-NCFT (PAPER.md §4) train only each task's neurons, so task ``i`` can lose what it
learned only through neurons that a later task's set also holds. :func:`reuse_counts` counts,
per task and layer, the task's neurons, those a later task's set holds too (*reused*), and the
count random sets would give: every later set drawn uniformly inside each layer at its own size
(matched in size and layer), so an observed reuse well above it says the tasks' sets gather on
the same neurons. Counts add up, so a task's share (``reused.sum(1) / own.sum(1)``) and a
layer's pooled share are sums of these.

Example:
    >>> import torch
    >>> sets = [torch.tensor([[True, True, False, False]]), torch.tensor([[False, True, True, False]])]
    >>> own, reused, chance = reuse_counts(sets)
    >>> own.tolist(), reused.tolist(), chance.tolist()  # chance: 2 * (1 - (1 - 2/4))
    ([[2.0], [2.0]], [[1.0], [0.0]], [[1.0], [0.0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from taskneurons.analysis.set_overlap import as_mask


def reuse_counts(masks: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task (in training order) and layer: its neurons, those reused later, chance reuse.

    Args:
        masks: the tasks' neuron sets in training order, bool ``[layers, d_ff]`` each, one shape.

    Returns:
        ``(own, reused, chance)``, float64 ``[tasks, layers]``: ``own[i, l] = |N_il|``,
        ``reused[i, l] = |N_il ∩ ∪_{j>i} N_jl|`` and ``chance[i, l] = own[i, l] · (1 −
        Π_{j>i} (1 − |N_jl| / d_ff))``, the expected reuse were each later set drawn uniformly
        in layer ``l`` at its size. The last task's rows are 0 in ``reused`` and ``chance``.

    Raises:
        ValueError: no masks, a mask that is not bool, or masks of different or non-2-d shapes.
    """
    items = [as_mask(m, f"mask {i}") for i, m in enumerate(masks)]
    if not items:
        raise ValueError("reuse of no neuron sets: give at least one")
    shape = items[0].shape
    if len(shape) != 2 or any(m.shape != shape for m in items):
        shapes = sorted({tuple(m.shape) for m in items})
        raise ValueError(f"neuron sets must be [layers, d_ff] of one shape, got {shapes}")
    own = np.stack([m.sum(dim=1).numpy() for m in items]).astype(np.float64)  # [tasks, layers]
    reused = np.zeros_like(own)
    chance = np.zeros_like(own)
    later = torch.zeros(shape, dtype=torch.bool)  # [layers, d_ff]: union of the sets after i
    missed = np.ones(shape[0], dtype=np.float64)  # [layers]: P(a neuron is in no later set)
    for i in range(len(items) - 1, -1, -1):
        reused[i] = (items[i] & later).sum(dim=1).numpy()
        chance[i] = own[i] * (1.0 - missed)
        later |= items[i]
        missed *= 1.0 - own[i] / shape[1]
    return own, reused, chance
