"""The `emoji` setting (vision + text): each emoji's rendered glyph and its name, labelled by its group.

Sources, read from Debian packages (nothing is downloaded): `unicode-data`'s `emoji-test.txt` (the
fully-qualified emoji with their CLDR names, groups and subgroups) and `fonts-noto-color-emoji`'s
`NotoColorEmoji.ttf` (the glyphs, rendered with Pillow). See `docs/settings.md` for the construction
and its knobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar
from functools import lru_cache
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .av_digits import degrade_images
from .splits import grouped_split

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # the only size of Noto Color Emoji's bitmaps (136 x 128 pixels)
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))  # the five Fitzpatrick modifiers
# Left out of an emoji's family key: skin tones, the variation selector, the zero-width joiner and the
# female / male signs; "man" and "woman" count as "person".
NOT_IN_FAMILY = SKIN_TONES | {0xFE0F, 0x200D, 0x2640, 0x2642}
AS_PERSON = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1}
LABEL_LEVELS = ("group", "subgroup")


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified emoji of `emoji-test.txt`."""

    code_points: tuple[int, ...]
    name: str
    group: str
    subgroup: str

    @property
    def text(self) -> str:
        """The emoji itself."""
        return "".join(map(chr, self.code_points))

    @property
    def family(self) -> str:
        """A key (hex code points) shared by an emoji and its skin-tone and gender variants, whose
        glyphs and names are near-duplicates: "man running: dark skin tone", "woman running" and
        "person running" are one family."""
        kept = (AS_PERSON.get(c, c) for c in self.code_points if c not in NOT_IN_FAMILY)
        return " ".join(f"{c:04X}" for c in kept)

    @property
    def has_skin_tone(self) -> bool:
        return any(c in SKIN_TONES for c in self.code_points)


def _debian_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the emoji setting needs Debian's {package!r} (apt-get install {package})."
        )
    return path


@lru_cache(maxsize=1)
def load_emoji_entries() -> tuple[EmojiEntry, ...]:
    """The fully-qualified emoji of `emoji-test.txt` outside the "Component" group, in file order."""
    entries, group, subgroup = [], "", ""
    for line in _debian_file(EMOJI_TEST, "unicode-data").read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and group != "Component":
            points, comment = line.split(";", 1)
            # comment: "fully-qualified     # <emoji> E<version> <name>"
            name = comment.split("#", 1)[1].strip().split(" ", 2)[2]
            entries.append(EmojiEntry(tuple(int(c, 16) for c in points.split()), name, group, subgroup))
    return tuple(entries)


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_debian_file(EMOJI_FONT, "fonts-noto-color-emoji")), FONT_SIZE)


@lru_cache(maxsize=4096)  # all the emoji, so that building the setting again (another seed) renders nothing
def render_emoji(emoji: str, image_size: int) -> np.ndarray:
    """The glyph of `emoji` on a white square, resized to `image_size` pixels: uint8 `(size, size, 3)`,
    read-only (it is cached)."""
    font = _font()
    left, top, right, bottom = font.getbbox(emoji)
    side = max(right - left, bottom - top)
    glyph = PILImage.new("RGBA", (side, side), (255, 255, 255, 0))
    ImageDraw.Draw(glyph).text((-left, -top), emoji, font=font, embedded_color=True)
    canvas = PILImage.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(glyph, mask=glyph)  # the glyph's alpha over white
    image = np.array(canvas.resize((image_size, image_size), PILImage.Resampling.LANCZOS))
    image.flags.writeable = False
    return image


def _word_key(word: str) -> str:
    """A word compared with the label's words: lower case, letters only, in the singular ("Activities"
    and "activity", "Flags" and "flag:" match)."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    if letters.endswith("ies"):
        return letters[:-3] + "y"
    return letters[:-1] if letters.endswith("s") and len(letters) > 3 else letters


def mask_name(name: str, label_words: set[str], mask_fraction: float, rng: np.random.Generator) -> str:
    """`name` without its words whose `_word_key` is in `label_words`, then each remaining word
    dropped with probability `mask_fraction`."""
    words = [w for w in name.split() if _word_key(w) not in label_words]
    keep = rng.random(len(words)) >= mask_fraction
    return " ".join(w for w, k in zip(words, keep) if k)


@dataclass(frozen=True)
class EmojiSetting:
    """How the `emoji` setting is built. Defaults calibrated on `none` (docs/settings.md).

    Args:
        name: the setting's name.
        description: one line for tables and docs.
        label_level: "group" (9 classes) or "subgroup" (about 100).
        drop_skin_tones: keep only the emoji without a skin-tone modifier.
        min_class_size: classes with fewer families (an emoji with its skin-tone and gender variants,
            `EmojiEntry.family`) are dropped, so that every split can hold every class.
        split_weights: relative share of each class's emoji in each split; a family is never split.
        image_size: side of the square image, in pixels (the glyph is 136 x 128, padded to a square).
        image_noise: standard deviation of Gaussian pixel noise, as a fraction of the 0-255 range.
        mask_label_words: drop the words of the name that name its label (e.g. "flag" in "flag: Japan"
            under the group "Flags"; plurals and case ignored).
        mask_fraction: probability that each remaining word of the name is dropped.
    """

    modalities: ClassVar[tuple[str, ...]] = ("vision", "text")  # the data's columns, one per encoder
    name: str = "emoji"
    description: str = "an emoji's rendered glyph (vision) and its name (text), labelled by its group"
    label_level: str = "group"
    drop_skin_tones: bool = True
    min_class_size: int = 6
    split_weights: dict[str, float] = field(default_factory=lambda: {"train": 3, "validation": 1, "test": 2})
    image_size: int = 64
    image_noise: float = 0.0
    mask_label_words: bool = True
    mask_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.label_level not in LABEL_LEVELS:
            raise ValueError(f"label_level must be one of {LABEL_LEVELS}, got {self.label_level!r}.")
        if not 0 <= self.mask_fraction <= 1:
            raise ValueError(f"mask_fraction must lie in [0, 1], got {self.mask_fraction}.")

    def split(self, seed: int = 0) -> dict[str, tuple[list[EmojiEntry], np.ndarray]]:
        """Per split, its emoji (in the split's row order) and their labels; `class_names` names them.
        A family never straddles two splits; each class is divided by `split_weights`."""
        entries, names = self._kept()
        labels = np.array([names.index(getattr(e, self.label_level)) for e in entries])
        families = [e.family for e in entries]
        split_of = grouped_split(labels, families, self.split_weights, np.random.default_rng([seed, 0]))
        splits = {}
        for s, split in enumerate(self.split_weights):
            rows = np.random.default_rng([seed, 1, s]).permutation(np.flatnonzero(split_of == s))
            splits[split] = ([entries[i] for i in rows], labels[rows])
        return splits

    def class_names(self) -> list[str]:
        """The classes kept (groups or subgroups with at least `min_class_size` families), in file order."""
        return self._kept()[1]

    def _kept(self) -> tuple[list[EmojiEntry], list[str]]:
        """The emoji of the classes kept, and those classes."""
        entries = [e for e in load_emoji_entries() if not (self.drop_skin_tones and e.has_skin_tone)]
        families: dict[str, set[str]] = {}
        for e in entries:
            families.setdefault(getattr(e, self.label_level), set()).add(e.family)
        names = [c for c, f in families.items() if len(f) >= self.min_class_size]
        return [e for e in entries if getattr(e, self.label_level) in names], names

    def load(self, seed: int = 0) -> DatasetDict:
        """The setting's `DatasetDict` (train / validation / test). Columns: `vision` (the glyph), `text`
        (the masked name), `label`, and `emoji`, `family`, `name` (the emoji, its family key, its
        full name) to trace each example. `seed` fixes the split, the masking and the noise."""
        names = self.class_names()
        words = {i: {_word_key(w) for w in re.split(r"[^A-Za-z]+", n) if w} for i, n in enumerate(names)}
        features = Features(
            {
                "vision": Image(),
                "text": Value("string"),
                "label": ClassLabel(names=names),
                "emoji": Value("string"),
                "family": Value("string"),
                "name": Value("string"),
            }
        )
        splits = {}
        for s, (split, (entries, labels)) in enumerate(self.split(seed).items()):
            rng = np.random.default_rng([seed, 2, s])
            images = np.stack([render_emoji(e.text, self.image_size) for e in entries])
            texts = [
                mask_name(e.name, words[y] if self.mask_label_words else set(), self.mask_fraction, rng)
                for e, y in zip(entries, labels)
            ]
            splits[split] = Dataset.from_dict(
                {
                    "vision": list(degrade_images(images, self.image_noise, rng)),
                    "text": texts,
                    "label": labels.tolist(),
                    "emoji": [e.text for e in entries],
                    "family": [e.family for e in entries],
                    "name": [e.name for e in entries],
                },
                features=features,
            )
        return DatasetDict(splits)


__all__ = ["EmojiEntry", "EmojiSetting", "load_emoji_entries", "mask_name", "render_emoji"]
