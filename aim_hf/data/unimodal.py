"""Training one modality alone with the same model, data and budget as the joint runs.

A [`MultimodalModel`] needs at least two encoders, so a unimodal baseline keeps the model and blanks
the other modalities: their inputs are replaced by zeros in every batch. A blanked encoder then sees
one constant input, its feature carries no information about the label, and the fused head (and the
kept modality's probe) learns from the kept modality alone. Its fused accuracy is the unimodal
accuracy, measured at the same cost in steps as the joint run it is compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class BlankModalities:
    """Wrap a collator so that every modality except `keep` gets all-zero input tensors.

    Args:
        collator: a collator returning `{modality: {name: tensor}, "labels": ...}` (e.g. a
            [`MultimodalCollator`]).
        keep: the modality that is trained; the others are blanked.
    """

    def __init__(self, collator: Callable[[Sequence[Any]], dict[str, Any]], keep: str) -> None:
        self.collator = collator
        self.keep = keep

    def __call__(self, examples: Sequence[Any]) -> dict[str, Any]:
        batch = self.collator(examples)
        if self.keep not in batch:
            raise ValueError(f"Cannot keep modality {self.keep!r}: the batch holds {sorted(batch)}.")
        for name, inputs in batch.items():
            if name not in (self.keep, "labels") and isinstance(inputs, dict):
                # Masks and ids are kept so that padding still means padding; values are zeroed.
                batch[name] = {
                    k: v if k.endswith("mask") or not v.is_floating_point() else torch.zeros_like(v)
                    for k, v in inputs.items()
                }
        return batch


__all__ = ["BlankModalities"]
