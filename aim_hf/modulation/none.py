"""`none`: plain joint training, the baseline every method is compared with."""

from __future__ import annotations

from .base import Modulation


class NoModulation(Modulation):
    """Plain joint training: the same model, probes and loss, nothing modulated."""

    name = "none"
    label = "joint training"
    title = "joint training (no modulation)"
