"""Modulation methods for balanced multimodal learning. A new method is one file with a
`Modulation` subclass, added to `MODULATIONS`."""

from __future__ import annotations

from typing import Any

from ..modeling import MultimodalModel
from .aim import AIM
from .base import Modulation, NoModulation
from .ogm_ge import OGMGE

MODULATIONS: dict[str, type[Modulation]] = {cls.name: cls for cls in (AIM, NoModulation, OGMGE)}


def build_modulation(name: str, model: MultimodalModel, args: Any) -> Modulation:
    """The modulation method `name` for `model`, configured by `args` (an `AIMConfig`)."""
    if name not in MODULATIONS:
        raise ValueError(f"Unknown modulation {name!r}: choose one of {', '.join(MODULATIONS)}.")
    return MODULATIONS[name](model, args)


__all__ = ["AIM", "MODULATIONS", "Modulation", "NoModulation", "OGMGE", "build_modulation"]
