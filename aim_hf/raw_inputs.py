"""Raw values of a dataset row turned into what each kind of processor takes, with errors that name
the value: images (PIL, paths, bytes, arrays), audio (arrays, `{"array", "sampling_rate"}`, file
paths, bytes, undecoded `datasets.Audio` values) and text.

The collator, the processor and the data check (`aim_hf.data.checks`) all read rows through these
functions, so the check tests exactly what training does. The file travels with a saved model as
remote code (it is imported by `processing.py`): it imports only numpy at the top, Pillow where an
image is read and soundfile where an audio file is read.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def _reason(source: Any, err: Exception) -> str:
    """Why `source` could not be read, on one line: a missing file says so (and, for a relative
    path, what it resolved against), anything else gives the decoder's message."""
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        if os.path.isabs(source):
            return "no such file"
        return f"no such file; relative paths resolve against the working directory {os.getcwd()!r}"
    return " ".join(str(err).split())


def read_audio(source: str | bytes | Mapping[str, Any], sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples of an audio file (a path, its bytes, or a `{"path", "bytes"}` dict) and
    their rate: `sampling_rate` when given (resampled to it), else the file's own.

    Other rates are resampled by linear interpolation: simple and dependency-free, but with no
    anti-aliasing filter, so downsampling folds frequencies above the new Nyquist rate back in. For
    the best quality convert the files once beforehand (`ffmpeg -i in.wav -ac 1 -ar 16000 out.wav`).
    A file that is missing or cannot be decoded raises a `ValueError` naming it.
    """
    try:
        import soundfile as sf
    except ImportError as err:
        raise ImportError("reading audio files needs soundfile: `pip install soundfile`.") from err
    if isinstance(source, Mapping):
        source = source.get("bytes") or source.get("path")
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else source
        audio, rate = sf.read(file, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, OSError, RuntimeError, TypeError) as err:
        name = "the audio bytes" if isinstance(source, bytes) else f"the audio file {str(source)!r}"
        raise ValueError(f"cannot read {name} ({_reason(source, err)})") from err
    audio = audio.mean(axis=1)
    if sampling_rate is None or rate == sampling_rate:
        return audio, rate
    length = max(1, round(len(audio) * sampling_rate / rate))
    positions = np.arange(length, dtype=np.float64) * (rate / sampling_rate)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32), sampling_rate


def _missing(value: Any, where: str) -> None:
    if value is None:
        raise ValueError(
            f"{where}: the value is missing (None: an empty cell of a csv reads as None). Fix or drop this row."
        )


def as_image(value: Any, where: str) -> Any:
    """An RGB PIL image of `value` (a PIL image, a path, or a `{"bytes", "path"}` dict), or `value`
    as a 2-D / 3-D array; `where` starts the message of the `ValueError` raised for a bad value."""
    _missing(value, where)
    try:
        from PIL import Image

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
        from_bytes = isinstance(value, Mapping) and value.get("bytes")
        reason = _reason(None if from_bytes else source, err)
        raise ValueError(f"{where}: cannot read the image{file} ({reason}). Fix or drop this row.") from err


def as_audio(value: Any, sampling_rate: int | None, where: str) -> np.ndarray:
    """The samples (or stored features) of `value` as a float32 array: an array, a
    `{"array", "sampling_rate"}` dict, or an audio file (a path, its bytes, an undecoded
    `datasets.Audio` dict), read at `sampling_rate`. Empty, NaN / inf audio and audio at another rate
    than `sampling_rate` raise a `ValueError` that `where` starts."""
    _missing(value, where)
    rate = None
    if isinstance(value, (str, os.PathLike, bytes)) or (
        isinstance(value, Mapping) and "array" not in value and (value.get("bytes") or value.get("path"))
    ):
        try:
            value, rate = read_audio(value, sampling_rate)
        except ValueError as err:
            raise ValueError(f"{where}: {err}. Fix or drop this row.") from err
    elif isinstance(value, Mapping):
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


def as_text(value: Any, where: str) -> str:
    """`value`, a string (the empty string included: a tokenizer encodes it); anything else raises a
    `ValueError` that `where` starts."""
    _missing(value, where)
    if not isinstance(value, str):
        raise ValueError(f"{where}: the text is not a string ({type(value).__name__} {value!r}). Fix or drop this row.")
    return value


__all__ = ["as_audio", "as_image", "as_text", "read_audio"]
