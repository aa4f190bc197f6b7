"""Modulation methods for balanced multimodal learning. A new method is one file with a
`Modulation` subclass that declares itself (name, paper, options, metrics: see `base`), added to
`MODULATIONS`; the model card, the console, the plots, the `--modulation` help and `aim-hf methods`
read it from there."""

from __future__ import annotations

from typing import Any

from ..modeling import MultimodalModel
from .agm import AGM
from .aim import AIM
from .base import HookContext, Modulation
from .composite import Composition, composition_members, is_composition
from .inforeg import InfoReg
from .mla import MLA
from .mmpareto import MMPareto
from .none import NoModulation
from .ogm_ge import OGMGE
from .opm import OPM
from .pmr import PMR
from .redreg import RedReg
from .unimodal_losses import UnimodalLosses

MODULATIONS: dict[str, type[Modulation]] = {
    cls.name: cls for cls in (AIM, NoModulation, OGMGE, UnimodalLosses, OPM, MMPareto, PMR, AGM, MLA, InfoReg, RedReg)
}


def build_modulation(name: str, model: MultimodalModel, args: Any) -> Modulation:
    """The modulation method `name` for `model`, configured by `args` (an `AIMConfig`): the method
    checks `args.modulation_kwargs` against its `Config` (see `Modulation.make_config`) and reads
    the result as `self.config`. A name such as `"aim+unimodal_losses"` builds a `Composition`
    (`composite`), each member with its own entry of `args.modulation_kwargs`."""
    start, end = args.modulation_start, args.modulation_end
    if is_composition(name):
        return Composition(model, composition_members(name, args.modulation_kwargs, MODULATIONS), start, end)
    if name not in MODULATIONS:
        raise ValueError(f"Unknown modulation {name!r}: choose one of {', '.join(MODULATIONS)}.")
    return MODULATIONS[name](model, args.modulation_kwargs, start, end)


__all__ = [
    "AGM", "AIM", "Composition", "HookContext", "InfoReg", "MLA", "MMPareto", "MODULATIONS", "Modulation", "NoModulation", "OGMGE",
    "OPM", "PMR", "RedReg", "UnimodalLosses", "build_modulation",
]  # fmt: skip
