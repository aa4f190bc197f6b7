"""Unimodal losses: joint training plus each modality's own cross-entropy (the "multitask" baseline).

`L = L_model + weight * sum_m CE(z^m, y)` (`UnimodalLosses.Config`), where `z^m` is modality m's additive share
of the fused logits (`MultimodalOutput.modality_logits`): the fused classifier restricted to m's
part (concat: its weight columns plus bias / M; sum: m's own head). So the method adds no
parameters and works with every fusion; unlike the probes, the features are not detached, so each
unimodal loss trains its encoder. (Our choice: papers such as MMPareto train separate unimodal
heads instead.) The loss applies at every step (no modulation window). Each modality's loss is
logged as `unimodal/loss/{m}`, averaged over the step's micro-batches and all processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation
from .mechanics import StepSums, unimodal_cross_entropies


@dataclass
class UnimodalLossesConfig:
    """The unimodal losses' hyperparameters (`modulation_kwargs`)."""

    weight: float = field(default=1.0, metadata={"help": "Weight of the sum of the modalities' own cross-entropies."})

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"unimodal_losses' weight must be >= 0, got {self.weight}.")


class UnimodalLosses(Modulation):
    name = "unimodal_losses"
    label = "Unimodal losses"
    title = "unimodal losses (joint training plus each modality's own cross-entropy)"
    metric_prefix = "unimodal"
    metrics = (Metric("unimodal/loss/<m>", "m's own cross-entropy, averaged over the step's samples"),)
    default_start = 0.0
    Config = UnimodalLossesConfig

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        if self.start != 0 or self.end is not None:
            # The loss is on at every micro-batch: a window would need the step number in `on_forward_end`.
            raise ValueError(
                "unimodal_losses is on for the whole training: leave modulation_start and modulation_end unset."
            )
        self._sums = StepSums()  # per-modality loss sums over the step's samples, then the count

    def on_forward_end(self, ctx: HookContext) -> None:
        losses = unimodal_cross_entropies(ctx.outputs, self.modalities, ctx.labels)
        n = float(ctx.labels.shape[0])
        batch = torch.cat([losses.detach() * n, torch.tensor([n], device=losses.device)])
        self._sums.add(batch)
        ctx.add_loss(self.config.weight * losses.sum())

    def on_gradients_ready(self, ctx: HookContext) -> None:
        totals = self._sums.reduce()
        if totals is None:
            return
        totals = totals.tolist()
        ctx.log({f"unimodal/loss/{m}": totals[i] / totals[-1] for i, m in enumerate(self.modalities)})
