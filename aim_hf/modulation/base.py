"""The interface every modulation method implements, and what they share.

The trainer calls a method at three points of each optimizer step:

1. `forward_kwargs()` before each micro-batch's forward: extra keyword arguments for the model
   (AIM passes the unit masks of its Auxiliary Blocks);
2. `compute_loss(outputs, labels)` after each micro-batch's forward: the extra loss terms, and the
   batch statistics the method accumulates over the step's micro-batches;
3. `step(model, state)` once per optimizer step, after the last micro-batch's backward (gradients
   accumulated and, under DDP, all-reduced; still scaled under fp16) and before clipping: reduce
   the statistics across processes, change gradients, update the method's state.

A method's state (`state_dict` / `load_state_dict`) is saved in every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from ..modeling import MultimodalModel, MultimodalOutput


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes in place (a no-op on one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def resolve_step(value: float | None, max_steps: int) -> int | None:
    """A step given as a fraction of training (< 1) or as an absolute optimizer step (>= 1)."""
    if value is None:
        return None
    return int(math.floor(value * max_steps)) if 0 <= value < 1 else int(value)


class Modulation:
    """Base class of the modulation methods. Subclasses set `name` and `default_start` and override
    the hooks they need; the defaults do nothing (plain joint training)."""

    name: ClassVar[str] = ""
    default_start: ClassVar[float] = 0.0

    def __init__(self, model: MultimodalModel, args: Any) -> None:
        self.model = model
        self.args = args
        self.modalities = model.modalities
        self.start = args.modulation_start if args.modulation_start is not None else self.default_start
        self.end = args.modulation_end

    def is_active(self, step: int, max_steps: int) -> bool:
        """Whether the modulation applies at optimizer step `step` (0-based) of `max_steps`."""
        start = resolve_step(self.start, max_steps)
        end = resolve_step(self.end, max_steps)
        return step >= start and (end is None or step < end)

    def forward_kwargs(self) -> dict[str, Any]:
        return {}

    def compute_loss(self, outputs: MultimodalOutput, labels: torch.Tensor) -> torch.Tensor | None:
        return None

    def step(
        self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float | None = None
    ) -> dict[str, float]:
        """Called once per optimizer step; returns the metrics to log for this step. `grad_scale` is the
        GradScaler's scale under fp16 loss scaling (the gradients are still multiplied by it, and the
        optimizer skips a step whose gradients are not finite), None without loss scaling."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class NoModulation(Modulation):
    """Plain joint training: the same model, probes and loss, nothing modulated."""

    name = "none"
