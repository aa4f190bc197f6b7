"""Benchmark settings built from the AV-digits sources, each with a documented modality imbalance.

A setting fixes how the MNIST images and FSDD recordings are paired, degraded and split
(`docs/settings.md` gives each construction and its measured suppression gap). They were fixed
before any method was compared on them:

- `av_digits`: the embedded AV-digits data as it is (`load_av_digits`).
- `strong`: vision cannot tell 3 from 5 (an example of either digit shows an image of one of the
  two at random), so audio carries information worth recovering; under plain joint training the
  audio encoder learns little beyond what vision lacks, and its probe stays about 20 points below
  what audio reaches alone.
- `hopeless`: audio is only a little above chance alone: most recordings are of another digit than
  the label. A balancing method must not lose accuracy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasets import DatasetDict

from .av_digits import LABEL_NAMES, NUM_MEL_BINS, SPLIT_SIZES, build_av_digits


@dataclass(frozen=True)
class Setting:
    """How one benchmark setting is built from the AV-digits sources.

    Args:
        name: the setting's name (`--setting` of `aim-hf train`).
        description: one line for tables and docs.
        split_sizes: examples per digit in each split (recordings; FSDD has 300 per digit).
        ambiguous_pairs: pairs of digits that vision cannot tell apart: an example of either digit
            of a pair shows an image of one of the two, drawn at random (each digit's images are
            still used once).
        audio_match: fraction of the examples whose recording is of the labelled digit; the others
            get a recording of another digit (label noise in audio alone).
    """

    name: str
    description: str
    split_sizes: dict[str, int] = field(default_factory=lambda: dict(SPLIT_SIZES))
    ambiguous_pairs: tuple[tuple[int, int], ...] = ()
    audio_match: float = 1.0

    def load(self, seed: int = 0, num_mel_bins: int = NUM_MEL_BINS, image_noise: float = 0.0) -> DatasetDict:
        """The setting's `DatasetDict` (train / validation / test); `seed` fixes the construction,
        `image_noise` adds pixel noise on top (as in `load_av_digits`)."""
        return build_av_digits(
            seed=seed,
            num_mel_bins=num_mel_bins,
            image_noise=image_noise,
            split_sizes=self.split_sizes,
            image_digits=self._image_digits,
            recording_digits=self._recording_digits,
        )

    def _image_digits(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The digit each example's image shows: the label, or within an ambiguous pair either digit."""
        digits = labels.copy()
        for a, b in self.ambiguous_pairs:
            inside = np.flatnonzero((labels == a) | (labels == b))
            # Half of the pair's examples show `a`, half `b`, at random: each digit's images suffice.
            shown = np.array([a, b] * (len(inside) // 2) + [a] * (len(inside) % 2))
            digits[inside] = rng.permutation(shown)
        return digits

    def _recording_digits(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The digit each example's recording says: the label for an `audio_match` fraction of the
        examples of each digit; the rest cycle through the other digits, so that every digit is said
        equally often (each digit's recordings suffice) and a recording carries no label information
        beyond its matching share."""
        digits = labels.copy()
        if self.audio_match >= 1:
            return digits
        num = len(LABEL_NAMES)
        for digit in range(num):
            rows = rng.permutation(np.flatnonzero(labels == digit))
            wrong = rows[int(round(self.audio_match * len(rows))) :]
            digits[wrong] = (digit + 1 + np.arange(len(wrong)) % (num - 1)) % num
        return digits


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("av_digits", "AV-digits as embedded: every image and recording matches the label"),
        Setting(
            "strong",
            "vision cannot tell 3 from 5 (the image shows either digit); audio matches the label",
            split_sizes={"train": 150, "validation": 50, "test": 100},
            ambiguous_pairs=((3, 5),),
        ),
        Setting(
            "hopeless",
            "audio matches the label for 28% of the examples only (chance is 10%); vision is clean",
            split_sizes={"train": 150, "validation": 50, "test": 100},
            audio_match=0.28,
        ),
    )
}


def load_setting(name: str, seed: int = 0, num_mel_bins: int = NUM_MEL_BINS, image_noise: float = 0.0) -> DatasetDict:
    """The data of the benchmark setting `name` (see `SETTINGS`)."""
    if name not in SETTINGS:
        raise ValueError(f"Unknown setting {name!r}: choose one of {', '.join(SETTINGS)}.")
    return SETTINGS[name].load(seed=seed, num_mel_bins=num_mel_bins, image_noise=image_noise)


__all__ = ["SETTINGS", "Setting", "load_setting"]
