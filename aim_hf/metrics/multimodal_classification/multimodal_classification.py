"""`multimodal_classification`: accuracy and macro-F1 of a multimodal classifier's fused prediction and
of each modality's probe, as an `evaluate` metric module.

Load it offline from the installed package (no Hub access):
`evaluate.load(aim_hf.metrics.METRIC_PATH, modalities=[...])`. The library's own `compute_metrics`
([`aim_hf.metrics.MultimodalMetrics`]) calls `multimodal_scores` of this file, the same code that
`_compute` runs.

The file is self-contained (numpy, datasets, evaluate), as `evaluate.load` copies it alone into its
modules cache.
"""

from collections.abc import Mapping, Sequence

import datasets
import numpy as np

import evaluate

_DESCRIPTION = """
Scores a multimodal classifier that, besides its fused prediction, has one linear probe per modality (a
classifier on that modality's detached feature, as [`MultimodalModel`] of `aim_hf` does): how well the
model classifies, and how much each modality's encoder has learnt on its own.

- accuracy: the share of examples whose predicted class is the reference one.
- f1 (macro-F1): the unweighted mean, over the classes 0..num_labels-1 that occur in the references
  or the predictions, of each class's F1 = 2 TP / (2 TP + FP + FN).

Both are computed for the fused prediction (`accuracy`, `f1`) and for each modality's probe
(`<modality>_probe_accuracy`, `<modality>_probe_f1`). The modalities are named when the metric is
loaded (`modalities=[...]`); each probe's predictions come in their own input,
`<modality>_probe_predictions`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): the fused predicted class of each example.
    references (`list` of `int`): the reference class of each example.
    <modality>_probe_predictions (`list` of `int`): one input per modality the metric was loaded with:
        that modality's probe's predicted class of each example.
    num_labels (`int`): the number of classes; the macro-F1 averages over the classes below it that
        occur in the references or the predictions.

Returns:
    accuracy (`float`): the fused prediction's accuracy, between 0 and 1.
    f1 (`float`): the fused prediction's macro-F1, between 0 and 1.
    <modality>_probe_accuracy (`float`), <modality>_probe_f1 (`float`): the same for each modality's probe.

Examples:
    >>> import evaluate
    >>> from aim_hf.metrics import METRIC_PATH
    >>> metric = evaluate.load(METRIC_PATH, modalities=["vision", "audio"])
    >>> results = metric.compute(
    ...     predictions=[0, 1, 1, 2],
    ...     references=[0, 1, 2, 2],
    ...     vision_probe_predictions=[0, 0, 2, 2],
    ...     audio_probe_predictions=[1, 1, 1, 1],
    ...     num_labels=3,
    ... )
    >>> print({name: round(value, 4) for name, value in results.items()})
    {'accuracy': 0.75, 'f1': 0.7778, 'vision_probe_accuracy': 0.75, 'vision_probe_f1': 0.5556, 'audio_probe_accuracy': 0.25, 'audio_probe_f1': 0.1333}
"""

# The probes are linear classifier probes on each modality's feature.
_CITATION = """
@article{alain2016understanding,
  title   = {Understanding intermediate layers using linear classifier probes},
  author  = {Alain, Guillaume and Bengio, Yoshua},
  journal = {arXiv preprint arXiv:1610.01644},
  year    = {2016}
}
"""


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    """The share of `predictions` equal to `references` (0 for no examples)."""
    return float((predictions == references).mean()) if references.size else 0.0


def macro_f1(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over the classes below `num_labels` present in `references` or `predictions`
    of the per-class F1 (0 if there is none)."""
    scores = []
    for c in range(num_labels):
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def multimodal_scores(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    probe_predictions: Mapping[str, Sequence[int] | np.ndarray],
    num_labels: int,
) -> dict[str, float]:
    """`accuracy` and `f1` of the fused `predictions`, then `<m>_probe_accuracy` and `<m>_probe_f1` of
    each modality m's probe (`probe_predictions`: modality -> predicted classes), in that order."""
    references = np.asarray(references)
    named = {"": predictions, **{f"{m}_probe_": p for m, p in probe_predictions.items()}}
    scores = {}
    for prefix, predicted in named.items():
        predicted = np.asarray(predicted)
        scores[f"{prefix}accuracy"] = accuracy(predicted, references)
        scores[f"{prefix}f1"] = macro_f1(predicted, references, num_labels)
    return scores


def probe_input(modality: str) -> str:
    """The name of the input that holds `modality`'s probe predictions."""
    return f"{modality}_probe_predictions"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultimodalClassification(evaluate.Metric):
    def __init__(self, modalities: Sequence[str] = (), **kwargs):
        # Set before EvaluationModule.__init__, which calls _info(): one input per modality's probe.
        self.modalities = list(modalities)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    **{probe_input(m): datasets.Value("int64") for m in self.modalities},
                }
            ),
            reference_urls=["https://arxiv.org/abs/1610.01644"],
        )

    def _compute(self, predictions, references, num_labels, **probe_predictions):
        probes = {m: probe_predictions[probe_input(m)] for m in self.modalities}
        return multimodal_scores(predictions, references, probes, num_labels)
