"""Accuracy and macro-F1 of the fused prediction and of each modality's probe."""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import EvalPrediction


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean()) if labels.size else 0.0


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over the classes present in `labels` or `predictions` of the per-class F1."""
    scores = []
    for c in range(num_labels):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


class MultimodalMetrics:
    """`compute_metrics` for [`AIMTrainer`]: `accuracy` and `f1` of the fused logits, and
    `<modality>_probe_accuracy` / `<modality>_probe_f1` for each modality's probe.

    The Trainer hands over the model outputs that are not ignored at inference, in order: fused
    logits, each modality's share of them, and the probe logits (dicts keyed by modality).
    """

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels

    def _scores(self, prefix: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        predictions = np.asarray(logits).argmax(-1)
        return {
            f"{prefix}accuracy": accuracy(predictions, labels),
            f"{prefix}f1": macro_f1(predictions, labels, self.num_labels),
        }

    def __call__(self, prediction: EvalPrediction) -> dict[str, Any]:
        outputs = prediction.predictions
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        labels = np.asarray(prediction.label_ids)
        metrics = self._scores("", outputs[0], labels)
        probes = outputs[2] if len(outputs) > 2 else {}
        for modality, logits in probes.items():
            metrics.update(self._scores(f"{modality}_probe_", logits, labels))
        return metrics
