"""Benchmark settings, each with a documented construction (`docs/settings.md`).

Settings built from the AV-digits sources, with a documented modality imbalance (`SETTINGS`):

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

Settings for pretrained encoders, built from Debian packages (`PRETRAINED_SETTINGS`; calibrated on
`none` only, docs/settings.md):

- `emoji` (vision + text): an emoji's rendered glyph and its name, labelled by its group
  (`aim_hf.data.emoji`).
- `spoken` (vision + audio): a Fashion-MNIST image and espeak-ng saying its class in noise
  (`aim_hf.data.spoken`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from datasets import DatasetDict

from .av_digits import LABEL_NAMES, NUM_MEL_BINS, SPLIT_SIZES, build_av_digits
from .emoji import EmojiSetting
from .spoken import SpokenSetting


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


# Settings for pretrained encoders: the defaults of each construction (its knobs are the fields).
PRETRAINED_SETTINGS: dict[str, EmojiSetting | SpokenSetting] = {s.name: s for s in (EmojiSetting(), SpokenSetting())}


def load_setting(name: str, seed: int = 0, **options: Any) -> DatasetDict:
    """The data of the benchmark setting `name`; `seed` fixes its construction.

    `options`: for a setting of `SETTINGS`, `num_mel_bins` and `image_noise` (as `Setting.load`);
    for one of `PRETRAINED_SETTINGS`, any field of its construction (e.g. `load_setting("emoji",
    label_level="subgroup")`), replacing the default.
    """
    if name in SETTINGS:
        return SETTINGS[name].load(seed=seed, **_known(name, options, ("num_mel_bins", "image_noise")))
    return pretrained_setting(name, **options).load(seed=seed)


def pretrained_setting(name: str, **options: Any) -> EmojiSetting | SpokenSetting:
    """The construction of the setting `name` of `PRETRAINED_SETTINGS` with `options` replacing its
    defaults, checked (names and values) without loading any data; a one-line error otherwise."""
    if name not in PRETRAINED_SETTINGS:
        raise ValueError(f"Unknown setting {name!r}: choose one of {', '.join([*SETTINGS, *PRETRAINED_SETTINGS])}.")
    setting = PRETRAINED_SETTINGS[name]
    knobs = tuple(f.name for f in fields(setting) if f.name not in ("name", "description"))
    return replace(setting, **_known(name, options, knobs))


def _known(name: str, options: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """`options`, or a one-line error naming those setting `name` does not take."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"Setting {name!r} has no option {', '.join(unknown)}; its options: {', '.join(known)}.")
    return options


__all__ = ["PRETRAINED_SETTINGS", "SETTINGS", "Setting", "load_setting", "pretrained_setting"]
