"""A feature extractor for precomputed spectrograms, shaped for the Audio Spectrogram Transformer.

`ASTFeatureExtractor` computes a filter bank from a waveform; the embedded AV-digits data has no
waveform, only spectrogram arrays. [`SpectrogramFeatureExtractor`] takes those `(frames, bins)`
arrays as they are, normalises them and pads or crops them to a fixed number of frames, giving the
`input_values` of shape `(batch, max_length, num_mel_bins)` that `ASTModel` takes. It is registered
with `AutoFeatureExtractor`, so a [`MultimodalProcessor`] holding it saves and loads like any other.

This file imports only numpy and transformers: it travels as remote code with the processor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from transformers import AutoFeatureExtractor, BatchFeature
from transformers.feature_extraction_utils import FeatureExtractionMixin


class SpectrogramFeatureExtractor(FeatureExtractionMixin):
    r"""Normalise `(frames, num_mel_bins)` spectrograms and pad/crop them to `max_length` frames.

    Args:
        num_mel_bins (`int`, *optional*, defaults to 32): number of frequency bins of each input frame
            (the AST encoder's `num_mel_bins`).
        max_length (`int`, *optional*, defaults to 32): number of frames of the output (the AST
            encoder's `max_length`); longer inputs keep their first `max_length` frames.
        mean (`float` or `list[float]`, *optional*, defaults to 0.0): subtracted before scaling; a list
            gives one value per frequency bin. [`~SpectrogramFeatureExtractor.fit`] sets it (and `std`)
            from the training data.
        std (`float` or `list[float]`, *optional*, defaults to 1.0): the centred values are divided by
            it (one value per bin when a list).
        padding_value (`float`, *optional*, defaults to 0.0): value of the padded frames (after
            normalisation, so 0 is the data mean).
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        num_mel_bins: int = 32,
        max_length: int = 32,
        mean: float | list[float] = 0.0,
        std: float | list[float] = 1.0,
        padding_value: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("mean", mean), ("std", std)):
            if np.ndim(value) not in (0, 1) or np.size(value) not in (1, num_mel_bins):
                raise ValueError(f"{name} must be a float or a list of {num_mel_bins} floats, got {value!r}.")
        if np.any(np.asarray(std) <= 0):
            raise ValueError(f"std must be > 0, got {std}.")
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        # Plain floats / lists keep preprocessor_config.json readable.
        self.mean = np.asarray(mean, dtype=float).tolist()
        self.std = np.asarray(std, dtype=float).tolist()
        self.padding_value = float(padding_value)

    def _check(self, spectrogram: Any, index: int) -> np.ndarray:
        array = np.asarray(spectrogram, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.num_mel_bins or array.shape[0] == 0:
            raise ValueError(
                f"Spectrogram {index}: expected shape (frames, {self.num_mel_bins}) with frames >= 1, got "
                f"{array.shape}. Build the data with num_mel_bins={self.num_mel_bins} (the audio encoder's)."
            )
        return array

    def fit(self, spectrograms: Iterable[Any]) -> "SpectrogramFeatureExtractor":
        """Set `mean` and `std` to the per-bin mean and standard deviation over every frame of
        `spectrograms` (an iterable of `(frames, num_mel_bins)` arrays, e.g. a dataset's audio column);
        returns `self`. A bin that never changes keeps std 1 (it is only centred)."""
        # Running sums in float64: one pass over any iterable, without holding the frames in memory.
        count, total, squares = 0, np.zeros(self.num_mel_bins), np.zeros(self.num_mel_bins)
        for i, spectrogram in enumerate(spectrograms):
            array = self._check(spectrogram, i).astype(np.float64)
            count += len(array)
            total += array.sum(0)
            squares += np.square(array).sum(0)
        if count == 0:
            raise ValueError("fit() needs at least one spectrogram.")
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
        self.mean, self.std = mean.tolist(), np.where(std > 0, std, 1.0).tolist()
        return self

    def _prepare(self, spectrogram: Any, index: int) -> np.ndarray:
        array = self._check(spectrogram, index)
        out = np.full((self.max_length, self.num_mel_bins), self.padding_value, dtype=np.float32)
        frames = min(len(array), self.max_length)
        out[:frames] = (array[:frames] - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return out

    def __call__(
        self,
        spectrograms: np.ndarray | Sequence[Any],
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn one `(frames, bins)` spectrogram (an array, or nested lists as a dataset row holds it)
        or a batch of them into `input_values`."""
        if len(spectrograms) == 0:
            raise ValueError("No spectrogram given.")
        if np.ndim(spectrograms[0]) == 1:  # one spectrogram: its first item is a frame
            spectrograms = [spectrograms]
        values = np.stack([self._prepare(s, i) for i, s in enumerate(spectrograms)])
        return BatchFeature({"input_values": values}, tensor_type=return_tensors)


# The registry needs a key; this extractor belongs to no model config, so a plain name stands in
# (`AutoFeatureExtractor.from_pretrained` finds it by its class name in preprocessor_config.json).
AutoFeatureExtractor.register("aim_hf_spectrogram", SpectrogramFeatureExtractor, exist_ok=True)

__all__ = ["SpectrogramFeatureExtractor"]
