"""Accuracy and macro-F1 of the fused prediction and of each modality's probe.

The scores are those of the `multimodal_classification` metric module that ships in this package, an
`evaluate` metric: `evaluate.load(METRIC_PATH, modalities=[...])` loads it offline. [`MultimodalMetrics`],
the trainer's default `compute_metrics`, calls the same code (`multimodal_scores`) directly: an
`evaluate` module, loaded or built, makes folders in the Hugging Face cache (`HF_HOME`), so an unwritable
one would fail every evaluation, and its `compute` round-trips the predictions through Arrow (50 times
slower on 100k examples).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from transformers import EvalPrediction

from .multimodal_classification.multimodal_classification import accuracy, macro_f1, multimodal_scores

METRIC_PATH = str(Path(__file__).parent / "multimodal_classification")


class MultimodalMetrics:
    """`compute_metrics` for [`AIMTrainer`]: `accuracy` and `f1` of the fused logits, and
    `<modality>_probe_accuracy` / `<modality>_probe_f1` for each modality's probe.

    The trainer hands over the model's outputs by name (`AIMTrainer.prediction_step`): the fused
    `logits` and the `probe_logits` (a dict keyed by modality), among others.
    """

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        outputs = prediction.predictions
        if not isinstance(outputs, Mapping) or "logits" not in outputs:
            raise ValueError(
                "MultimodalMetrics reads the predictions by name (a dict with 'logits' and 'probe_logits', as "
                f"AIMTrainer.prediction_step returns them), got {type(outputs).__name__}."
            )
        probes = {m: np.asarray(logits).argmax(-1) for m, logits in outputs.get("probe_logits", {}).items()}
        fused = np.asarray(outputs["logits"]).argmax(-1)
        return multimodal_scores(fused, prediction.label_ids, probes, self.num_labels)


__all__ = ["METRIC_PATH", "MultimodalMetrics", "accuracy", "macro_f1", "multimodal_scores"]
