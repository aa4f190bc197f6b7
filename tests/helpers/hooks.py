"""Driving a modulation method's hooks by hand, as `AIMTrainer` calls them, in tests."""

from __future__ import annotations

from typing import Any

import torch

from aim_hf.modulation.base import HookContext, Modulation


def forward_end(method: Modulation, outputs: Any, labels: torch.Tensor, **fields: Any) -> HookContext:
    """`on_forward_end` on given (possibly hand-made) outputs; the context holds the loss terms."""
    ctx = HookContext(model=method.model, outputs=outputs, labels=labels, **fields)
    method.on_forward_end(ctx)
    return ctx


def train_forward(method: Modulation, model: torch.nn.Module, batch: dict[str, Any], **fields: Any) -> HookContext:
    """One training micro-batch through the method's hooks and the model: `ctx.outputs` the model's
    outputs, `ctx.loss` the method's loss terms."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ctx = HookContext(model=model, inputs=inputs, labels=batch["labels"], **fields)
    method.on_micro_batch_begin(ctx)
    ctx.outputs = model(**batch, **ctx.forward_kwargs)
    method.on_forward_end(ctx)
    return ctx


def gradients_ready(method: Modulation, step: int, max_steps: int, **fields: Any) -> HookContext:
    """`on_gradients_ready` at optimizer step `step` of `max_steps`; the context holds the logged
    metrics (`ctx.metrics`) and learning-rate factors (`ctx.lr_scales`)."""
    ctx = HookContext(model=method.model, step=step, max_steps=max_steps, **fields)
    method.on_gradients_ready(ctx)
    return ctx
