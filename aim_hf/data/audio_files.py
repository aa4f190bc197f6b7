"""Audio files (paths, bytes, undecoded `datasets.Audio` values) read with soundfile.

`datasets.Audio` decodes with torchcodec, which many machines lack (and which needs a matching
torch build); soundfile reads wav, flac and ogg with nothing but libsndfile. So audio columns are
kept undecoded and read with [`read_audio`] (`aim_hf.raw_inputs`), at the feature extractor's
sampling rate, when a row is taken.
"""

from __future__ import annotations

from collections.abc import Mapping

from datasets import Audio, Dataset

from ..raw_inputs import read_audio


def _holds_audio_files(dataset: Dataset, column: str) -> bool:
    """Whether `column` holds audio files: an `Audio` feature, or strings (paths)."""
    feature = dataset.features[column]
    return isinstance(feature, Audio) or getattr(feature, "dtype", None) in ("string", "large_string")


def decode_audio_columns(dataset: Dataset, rates: Mapping[str, int | None]) -> Dataset:
    """`dataset` with each audio-file column of `rates` (column -> sampling rate) read on access as
    `{"array", "sampling_rate"}`, the raw audio the collator takes. Other columns are left as they are."""
    columns = {c: rate for c, rate in rates.items() if _holds_audio_files(dataset, c)}
    if not columns:
        return dataset
    for column in columns:
        if isinstance(dataset.features[column], Audio):
            dataset = dataset.cast_column(column, Audio(decode=False))  # no torchcodec needed

    def decode(batch: dict[str, list]) -> dict[str, list]:
        for column, rate in columns.items():
            read = (read_audio(value, rate) for value in batch[column])
            batch[column] = [{"array": array, "sampling_rate": at} for array, at in read]
        return batch

    return dataset.with_transform(decode)


__all__ = ["decode_audio_columns", "read_audio"]
