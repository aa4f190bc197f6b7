"""Each offline encoder by name: its package's files, checksums checked, turned into a folder that
`MultimodalModel.from_encoders` and `aim-hf train --encoders` load."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .sources import MINILM, MOBILENET_V2, WHISPER_BASE_PARTS, WHISPER_TINY_EN, Source


def _mobilenet_v2(output_dir: Path, image_size: int | None = None) -> None:
    from .mobilenet_v2 import IMAGE_SIZE, convert_mobilenet_v2

    (weights,) = MOBILENET_V2.paths().values()
    convert_mobilenet_v2(weights, output_dir, image_size or IMAGE_SIZE)


def _whisper(sources: tuple[Source, ...]) -> Callable[..., None]:
    def _convert(output_dir: Path, clip_seconds: int | None = None) -> None:
        from .whisper import FULL_SECONDS, convert_whisper

        paths = [path for source in sources for path in source.paths().values()]
        parts = [p for p in paths if p.name.startswith("model.bin")]
        (tokenizer,) = [p for p in paths if p.name == "tokenizer.json"]
        convert_whisper(parts, tokenizer, output_dir, clip_seconds or FULL_SECONDS)

    return _convert


def _minilm(output_dir: Path) -> None:
    # Already in transformers' format: the checked files are copied as they are.
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in MINILM.paths().values():
        shutil.copyfile(path, output_dir / path.name)


# name -> (what it is, the converter taking the output folder and the options it accepts).
ENCODERS: dict[str, tuple[str, Callable[..., None]]] = {
    "mobilenet_v2": ("MobileNetV2, ImageNet (vision; option image_size)", _mobilenet_v2),
    "whisper_tiny_en": ("Whisper tiny.en (audio; option clip_seconds)", _whisper((WHISPER_TINY_EN,))),
    "whisper_base": ("Whisper base (audio; option clip_seconds)", _whisper(WHISPER_BASE_PARTS)),
    "minilm": ("all-MiniLM-L6-v2 (text)", _minilm),
}


def convert(name: str, output_dir: str | os.PathLike, **options: int | None) -> Path:
    """Write the encoder `name` (a key of `ENCODERS`) from its installed package(s) into `output_dir`
    (new or empty), after checking every file's SHA-256.

    Options (None keeps the default): `clip_seconds` for the Whisper encoders (1-30 whole seconds,
    default 30), `image_size` for MobileNetV2 (the square crop's side, default 224).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODERS)}.")
    converter = ENCODERS[name][1]
    options = {k: v for k, v in options.items() if v is not None}
    wrong = sorted(set(options) - set(list(inspect.signature(converter).parameters)[1:]))
    if wrong:
        raise ValueError(f"the encoder {name!r} takes no option {', '.join(wrong)}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(f"{output_dir} exists and is not an empty folder: choose a new output folder.")
    converter(output_dir, **options)
    return output_dir


__all__ = ["ENCODERS", "convert"]
