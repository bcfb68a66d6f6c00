"""Continual learning: NCFT and W-NCFT against SeqFT, SeqLoRA, O-LoRA, EPI, MIGU, per-task FT.

One interface (:class:`~taskneurons.continual.base.ContinualMethod`: ``before_task``,
``train_task``, ``after_task``, ``answering``, ``routes``, ``state_dict``,
``load_state_dict``, ``stored_bytes_per_task``), one module per method:

* :mod:`.seqft` — SeqFT, the full model trained in sequence;
* :mod:`.seqlora` — SeqLoRA, one LoRA trained in sequence (PEFT);
* :mod:`.olora` — O-LoRA, a new LoRA per task with the orthogonality + L2 loss;
* :mod:`.epi` — EPI-style private LoRAs, the task found from the input's feature;
* :mod:`.pertask` — per-task FT, one model per task (upper bound);
* :mod:`.migu` — MIGU, each step trains only the linear units with the largest outputs;
* :mod:`.ncft` — NCFT, only the current task's neurons trained, then merged;
* :mod:`.wncft` — W-NCFT, per-task versions of the neurons weighted by task similarity.

Shared pieces: :mod:`.lora` (PEFT adapters, trained through the one training loop),
:mod:`.features` (input features, task vectors), :mod:`.slices` (versions of parameter
slices), :mod:`.checkpoint` (stage checkpoints), :mod:`.reference` (cached single-task and
zero-shot scores), :mod:`.stages` (one stage of a run, or of several runs sharing one
training). The experiment is :mod:`taskneurons.experiments.continual.method_run`; the metrics of
the accuracy matrix are :mod:`taskneurons.analysis.continual_metrics`.

Example:
    >>> from taskneurons.continual import MethodConfig, make_method, run_stage, score_task
    >>> method = make_method(MethodConfig.make("ncft"), model, tok, TrainConfig())  # doctest: +SKIP
"""

from taskneurons._lazy import lazy_exports

#: public name -> the module that defines it (imported on first use: configs stay torch-free)
_EXPORTS = {
    "taskneurons.continual.registry": ("METHODS", "make_method"),
    "taskneurons.continual.base": ("ContinualMethod", "run_stage", "score_task"),
    "taskneurons.continual.method_config": ("MethodConfig",),
}
__all__ = sorted(n for names in _EXPORTS.values() for n in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
