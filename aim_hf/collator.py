"""Turning raw multimodal examples into model inputs with each encoder's own processor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .processing import PROCESSOR_CONFIG_NAME, MultimodalProcessor, processor_kind

__all__ = ["PROCESSOR_CONFIG_NAME", "MultimodalCollator", "MultimodalProcessor", "processor_kind"]


class MultimodalCollator:
    """Collate raw examples into [`MultimodalModel`] inputs.

    Each example is a dict holding one raw value per modality column (a PIL image, an image array or
    path; an audio array, `{"array", "sampling_rate"}` dict or file; a string) and a label. Each
    modality is processed by its own processor ([`MultimodalProcessor.process`]), with padding and
    attention masks, and the batch is returned as
    `{"vision": {...}, "audio": {...}, "text": {...}, "labels": ...}`; without `labels` when no example
    has a label (missing or None: unlabelled data to predict on).

    Args:
        processor: a [`MultimodalProcessor`] or a dict modality -> processor.
        columns: modality -> column name in the examples (default: the modality's own name).
        label_column: the column holding the class index.
        max_text_length: truncation length for text (default: the tokenizer's).
        processor_kwargs: modality -> extra keyword arguments for that processor's call.
    """

    def __init__(
        self,
        processor: MultimodalProcessor | Mapping[str, Any],
        columns: Mapping[str, str] | None = None,
        label_column: str = "label",
        max_text_length: int | None = None,
        processor_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.processor = processor if isinstance(processor, MultimodalProcessor) else MultimodalProcessor(processor)
        self.columns = {m: (columns or {}).get(m, m) for m in self.processor.modalities}
        self.label_column = label_column
        self.max_text_length = max_text_length
        self.processor_kwargs = dict(processor_kwargs or {})

    def _column(self, examples: Sequence[Mapping[str, Any]], modality: str) -> list[Any]:
        column = self.columns[modality]
        values = []
        for i, example in enumerate(examples):
            if column not in example or example[column] is None:
                raise ValueError(
                    f"Example {i} of the batch has no {column!r} value for modality {modality!r} "
                    f"(its keys: {sorted(example)}). Every example needs every modality."
                )
            values.append(example[column])
        return values

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("Cannot collate an empty batch.")
        batch: dict[str, Any] = {
            m: self.processor.process(
                m, self._column(examples, m), self.max_text_length, **self.processor_kwargs.get(m, {})
            )
            for m in self.processor.modalities
        }
        labels = [e.get(self.label_column) for e in examples]
        if all(label is not None for label in labels):
            batch["labels"] = torch.tensor([int(label) for label in labels], dtype=torch.long)
        elif any(label is not None for label in labels):
            raise ValueError(
                f"Some examples of the batch have a {self.label_column!r} and some have none (or None): label every "
                "example, or none of them to predict."
            )
        return batch
