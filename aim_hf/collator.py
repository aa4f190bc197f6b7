"""Turning raw multimodal examples into model inputs with each encoder's own processor."""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .processing import PROCESSOR_CONFIG_NAME, MultimodalProcessor, processor_kind

__all__ = ["PROCESSOR_CONFIG_NAME", "MultimodalCollator", "MultimodalProcessor", "processor_kind"]


def _as_image(value: Any, where: str):
    from PIL import Image

    try:
        if isinstance(value, Image.Image):
            value.load()
            return value.convert("RGB")
        if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
            image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
            image.load()
            return image.convert("RGB")
        if isinstance(value, (str, os.PathLike)):
            image = Image.open(value)
            image.load()
            return image.convert("RGB")
        array = np.asarray(value)
        if array.ndim not in (2, 3) or array.size == 0:
            raise ValueError(f"an image array must be 2-D or 3-D, got shape {array.shape}")
        return array
    except (OSError, ValueError, SyntaxError) as err:
        source = value.get("path") if isinstance(value, Mapping) else value
        file = f" file {str(source)!r}" if isinstance(source, (str, os.PathLike)) else ""
        raise ValueError(f"{where}: cannot read the image{file} ({err}). Fix or drop this row.") from err


def _as_audio(value: Any, sampling_rate: int | None, where: str) -> np.ndarray:
    rate = None
    if isinstance(value, Mapping):
        if "array" not in value:
            raise ValueError(f"{where}: audio dicts need an 'array' (and 'sampling_rate'); got keys {list(value)}.")
        rate = value.get("sampling_rate")
        value = value["array"]
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot read the audio as numbers ({err}). Fix or drop this row.") from err
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"{where}: the audio is empty or holds NaN/inf values. Fix or drop this row.")
    if rate is not None and sampling_rate is not None and rate != sampling_rate:
        raise ValueError(
            f"{where}: audio sampled at {rate} Hz but the feature extractor expects {sampling_rate} Hz; "
            "resample the dataset first (e.g. with datasets' cast_column(..., Audio(sampling_rate=...)))."
        )
    return array


class MultimodalCollator:
    """Collate raw examples into [`MultimodalModel`] inputs.

    Each example is a dict holding one raw value per modality column (a PIL image, an image array or
    path; an audio array or `{"array", "sampling_rate"}` dict; a string) and a label. Each modality
    is processed by its own processor, with padding and attention masks, and the batch is returned
    as `{"vision": {...}, "audio": {...}, "text": {...}, "labels": ...}`.

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

    def _process(self, modality: str, values: list[Any]) -> dict[str, torch.Tensor]:
        processor, kind = self.processor[modality], self.processor.kinds[modality]
        kwargs = dict(self.processor_kwargs.get(modality, {}))
        if kind == "text":
            for i, text in enumerate(values):
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(
                        f"Example {i}, modality {modality!r}: the text is empty or not a string ({text!r}). "
                        "Fix or drop this row."
                    )
            kwargs.setdefault("padding", True)
            kwargs.setdefault("truncation", True)
            if self.max_text_length is not None:
                kwargs.setdefault("max_length", self.max_text_length)
            encoded = processor(values, return_tensors="pt", **kwargs)
        elif kind == "image":
            images = [_as_image(v, f"Example {i}, modality {modality!r}") for i, v in enumerate(values)]
            encoded = processor(images=images, return_tensors="pt", **kwargs)
        else:
            rate = getattr(processor, "sampling_rate", None)
            audio = [_as_audio(v, rate, f"Example {i}, modality {modality!r}") for i, v in enumerate(values)]
            if rate is not None:
                kwargs.setdefault("sampling_rate", rate)
            if "padding" in inspect.signature(processor.__call__).parameters:
                kwargs.setdefault("padding", True)  # variable-length audio (wav2vec2 family)
            encoded = processor(audio, return_tensors="pt", **kwargs)
        return {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("Cannot collate an empty batch.")
        batch: dict[str, Any] = {m: self._process(m, self._column(examples, m)) for m in self.processor.modalities}
        if all(self.label_column in e for e in examples):
            batch["labels"] = torch.tensor([int(e[self.label_column]) for e in examples], dtype=torch.long)
        return batch
