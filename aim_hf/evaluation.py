"""What each modality contributes to a trained [`MultimodalModel`]'s predictions on a dataset.

Blanking a modality means zeroing its final feature before the fusion (what `forward(feature_keep=0)`
does, as OPM drops a modality in training), not blanking its input (`BlankModalities`). Why:

- with `concat` and `sum` fusion a zeroed feature removes exactly that modality's share of the
  logits; a blank input instead feeds the head the encoder's (arbitrary, never trained on) response
  to zeros;
- one encoder pass per batch serves every subset of modalities (2^M fusions, the fusion is small);
- it needs no notion of a modality's blank input (pixels, spectrograms, tokens all alike).

`acc(∅)` is the accuracy with every feature zeroed: the head's bias alone, one constant prediction
(its accuracy is that class's share of the dataset; `chance`, 1/num_labels, is reported beside it).
The Shapley value of modality m is the Shapley-weighted average over subsets S of the others of
`acc(S ∪ {m}) − acc(S)`, weight |S|! (M − |S| − 1)! / M! (with two modalities: the plain mean of
the two differences); the values add up to `acc(all) − acc(∅)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .collator import MultimodalCollator
from .metrics import accuracy
from .modeling import MultimodalModel
from .processing import MultimodalProcessor
from .shapley import coalitions, shapley_values

BLANKING = "feature zeroing before the fusion (forward's feature_keep = 0)"
EMPTY_SET = "every modality's feature zeroed (the head's bias alone)"


@dataclass
class ModalityContributions:
    """Accuracies of one model on one dataset; `predictions` (subset of modalities kept -> the
    predicted class of each example) and `labels` are kept for inspection, not written to JSON."""

    modalities: list[str]
    num_labels: int
    labels: np.ndarray
    predictions: dict[tuple[str, ...], np.ndarray]
    probe_predictions: dict[str, np.ndarray]
    subset_accuracy: dict[tuple[str, ...], float] = field(init=False)

    def __post_init__(self) -> None:
        self.subset_accuracy = {s: accuracy(p, self.labels) for s, p in self.predictions.items()}

    @property
    def fused_accuracy(self) -> float:
        return self.subset_accuracy[tuple(self.modalities)]

    @property
    def empty_accuracy(self) -> float:
        return self.subset_accuracy[()]

    def probe_accuracy(self) -> dict[str, float]:
        return {m: accuracy(p, self.labels) for m, p in self.probe_predictions.items()}

    def alone_accuracy(self) -> dict[str, float]:
        """Each modality's accuracy with every other modality blanked."""
        return {m: self.subset_accuracy[(m,)] for m in self.modalities}

    def shapley(self) -> dict[str, float]:
        return shapley_values(self.subset_accuracy, self.modalities)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (keys documented in README.md, `aim-hf evaluate`)."""
        return {
            "num_examples": int(self.labels.size),
            "modalities": list(self.modalities),
            "blanking": BLANKING,
            "fused_accuracy": self.fused_accuracy,
            "probe_accuracy": self.probe_accuracy(),
            "alone_accuracy": self.alone_accuracy(),
            "shapley": self.shapley(),
            "empty_accuracy": self.empty_accuracy,
            "empty_set": EMPTY_SET,
            "chance": 1.0 / self.num_labels,
            "subsets": [{"modalities": list(s), "accuracy": a} for s, a in self.subset_accuracy.items()],
        }

    def format_table(self) -> str:
        """Fused accuracy, then one row per modality: probe, alone (others blanked), Shapley value."""
        probe, alone, shapley = self.probe_accuracy(), self.alone_accuracy(), self.shapley()
        lines = [
            f"fused accuracy {self.fused_accuracy:.4f} on {self.labels.size} examples; all modalities blanked "
            f"{self.empty_accuracy:.4f} (chance {1.0 / self.num_labels:.4f}); blanking = {BLANKING}",
            "| modality | probe | alone (others blanked) | Shapley |",
            "|---|---|---|---|",
        ]
        lines += [f"| {m} | {probe[m]:.4f} | {alone[m]:.4f} | {shapley[m]:+.4f} |" for m in self.modalities]
        return "\n".join(lines)


@torch.no_grad()
def modality_contributions(
    model: MultimodalModel,
    processor: MultimodalProcessor,
    dataset: Any,
    batch_size: int = 128,
    collator: MultimodalCollator | None = None,
) -> ModalityContributions:
    """Evaluate `model` on `dataset` (a `datasets.Dataset`, or any sequence of rows: one raw value per
    modality and a `label`, as the [`MultimodalCollator`] takes them) under every subset of kept
    modalities, on the model's device, in eval mode. `collator`: one that reads your column names
    (`columns`, `label_column`) or truncates texts (default: `MultimodalCollator(processor)`)."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to evaluate.")
    model.eval()
    collator = collator or MultimodalCollator(processor)
    modalities = list(model.modalities)
    subsets = coalitions(modalities)
    predictions: dict[tuple[str, ...], list[np.ndarray]] = {s: [] for s in subsets}
    probes: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    labels = []
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        if "labels" not in batch:
            raise ValueError(
                "the dataset has no labels (no 'label' column, or None labels): accuracy needs a label for every example."
            )
        labels.append(batch.pop("labels").numpy())
        batch = {m: {k: v.to(model.device) for k, v in inputs.items()} for m, inputs in batch.items()}
        outputs = model(**batch)
        features = {m: f[-1] for m, f in outputs.depth_features.items()}
        for subset in subsets:
            # The fusion alone spares re-running the encoders for each subset.
            logits = outputs.logits if len(subset) == len(modalities) else model.fusion.logits_with(features, subset)
            predictions[subset].append(logits.argmax(-1).cpu().numpy())
        for m, logits in outputs.probe_logits.items():
            probes[m].append(logits.argmax(-1).cpu().numpy())
    return ModalityContributions(
        modalities=modalities,
        num_labels=model.config.num_labels,
        labels=np.concatenate(labels),
        predictions={s: np.concatenate(p) for s, p in predictions.items()},
        probe_predictions={m: np.concatenate(p) for m, p in probes.items()},
    )


__all__ = ["ModalityContributions", "modality_contributions"]
