"""Audio files (paths, bytes, undecoded `datasets.Audio` values) read with soundfile.

`datasets.Audio` decodes with torchcodec, which many machines lack (and which needs a matching
torch build); soundfile reads wav, flac and ogg with nothing but libsndfile. So audio columns are
kept undecoded and read here, at the feature extractor's sampling rate, when a row is taken.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Audio, Dataset


def read_audio(source: str | bytes | Mapping[str, Any], sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples of an audio file (a path, its bytes, or a `{"path", "bytes"}` dict) and
    their rate: `sampling_rate` when given (resampled to it), else the file's own.

    Other rates are resampled by linear interpolation: simple and dependency-free, but with no
    anti-aliasing filter, so downsampling folds frequencies above the new Nyquist rate back in. For
    the best quality convert the files once beforehand (`ffmpeg -i in.wav -ac 1 -ar 16000 out.wav`).
    """
    try:
        import soundfile as sf
    except ImportError as err:
        raise ImportError("reading audio files needs soundfile: `pip install soundfile`.") from err
    if isinstance(source, Mapping):
        source = source.get("bytes") or source.get("path")
    audio, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sampling_rate is None or rate == sampling_rate:
        return audio, rate
    length = max(1, round(len(audio) * sampling_rate / rate))
    positions = np.arange(length, dtype=np.float64) * (rate / sampling_rate)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32), sampling_rate


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
