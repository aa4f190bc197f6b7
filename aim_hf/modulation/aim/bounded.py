"""`aux_bound="task"` (ours, experimental): the auxiliary loss's gradient enters each parameter group
bounded by the norm of that group's gradient from the rest of the loss.

Why: `L_aux` does not converge (the weak encoder cannot make up for the dominant modality's most
important units switched off), so its gradient on the weak encoder can be several times the task
loss's. Added through the loss, it inflates the whole model's gradient norm, and global gradient
clipping (`max_grad_norm`) then divides *every* parameter's gradient by it, the dominant encoder's
included (`benchmarks/results/aim_hindrance/`). Bounded, `L_aux` can at most double a group's
gradient norm.

How: each micro-batch's `beta_aux * L_aux` is differentiated on its own (`torch.autograd.grad` on
the retained graph, scaled by the fp16 loss scale as the trainer's backward is) with respect to the
groups it reaches, and summed into one buffer; once per optimizer step (before clipping) the buffer
is averaged over the micro-batches and all processes (the scale of the accumulated, all-reduced
`.grad`), and each group's part is added to `.grad` times `min(1, |g_task| / |g_aux|)`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..mechanics import StepSums, gradients_finite, rank_and_world


class BoundedAuxiliaryGradients:
    """The step's auxiliary-loss gradients per parameter group (`groups`: name -> parameters), added
    to `.grad` bounded by each group's own gradient norm."""

    def __init__(self, groups: dict[str, list[nn.Parameter]]) -> None:
        self.groups = {name: params for name, params in groups.items() if params}
        self._sums = StepSums()
        self._micro = 0
        self._reached: list[str] = []

    def add(self, loss: torch.Tensor, reached: list[str], grad_scale: float | None) -> None:
        """Differentiate `loss` (one micro-batch's weighted `L_aux`) with respect to the groups named
        in `reached` (the same in every micro-batch of a step, and on every process)."""
        self._reached = [name for name in reached if name in self.groups]
        params = [p for name in self._reached for p in self.groups[name]]
        if not params:
            return
        scaled = loss * (1.0 if grad_scale is None else grad_scale)
        grads = torch.autograd.grad(scaled, params, retain_graph=True, allow_unused=True)
        flat = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        self._sums.add(torch.cat([g.reshape(-1).float() for g in flat]))
        self._micro += 1

    def apply(self, model: nn.Module, grad_scale: float | None) -> dict[str, float]:
        """Add the step's bounded auxiliary gradients to `.grad`; returns each group's factor (1: not
        bounded). Nothing is added on a step the GradScaler skips; the reduction runs either way."""
        total, micro = self._sums.reduce(), self._micro
        self._micro = 0
        if total is None or (grad_scale is not None and not gradients_finite(model)):
            return {}
        _, world = rank_and_world()
        total /= micro * world
        factors, offset = {}, 0
        with torch.no_grad():
            for name in self._reached:
                params = self.groups[name]
                size = sum(p.numel() for p in params)
                aux = total[offset : offset + size]
                offset += size
                task = [p.grad.reshape(-1).float() for p in params if p.grad is not None]
                task_norm = float(torch.cat(task).norm()) if task else 0.0
                aux_norm = float(aux.norm())
                factor = min(1.0, task_norm / aux_norm) if aux_norm > 0 else 1.0
                start = 0
                for p in params:
                    part = aux[start : start + p.numel()].view_as(p) * factor
                    start += p.numel()
                    if p.grad is None:
                        p.grad = part.to(p.dtype)
                    else:
                        p.grad.add_(part.to(p.grad.dtype))
                factors[name] = factor
        return factors
