"""PAM: the unit importances and the masks of the Auxiliary Blocks.

A unit is an output unit (row) of a Linear/Conv layer inside a depth group. Its importance is a
Taylor estimate `EMA(sum_j |W_uj g_uj| + |b_u g_bu|)` from each optimizer step's final gradients.
The Auxiliary Block of group d of modality m switches off the `ceil(strength * r_max * n)` most
important units of each of its `n`-unit layers, so that the auxiliary loss trains the
under-optimized rest.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def unit_importances(modules: list[nn.Module]) -> list[torch.Tensor]:
    """Per output unit of each module, `sum_j |W_uj * dL/dW_uj| + |b_u * dL/db_u|` (float32) from the
    current gradients (each weight must have one). Batched with `torch._foreach_*`: one call per
    operation instead of one per layer, which is most of the cost at small widths."""
    weights = [module.weight.detach().float() for module in modules]  # no copy when already float32
    products = torch._foreach_mul(weights, [module.weight.grad.float() for module in modules])
    torch._foreach_abs_(products)
    values = [product.flatten(1).sum(1) for product in products]
    with_bias = [i for i, module in enumerate(modules) if module.bias is not None and module.bias.grad is not None]
    if with_bias:
        biases = [modules[i].bias for i in with_bias]
        bias_terms = torch._foreach_mul([b.detach().float() for b in biases], [b.grad.float() for b in biases])
        torch._foreach_abs_(bias_terms)
        torch._foreach_add_([values[i] for i in with_bias], bias_terms)
    return values


@torch.no_grad()
def update_importance(
    importance: dict[str, dict[str, torch.Tensor]],
    unit_list: list[tuple[str, str, nn.Module]],
    grad_scale: float,
    momentum: float,
) -> None:
    """Update `importance[m][name]` in place: the EMA of every unit's importance from the step's final
    (finite) gradients, unscaled; a layer's first estimate is taken as is, a layer without a gradient
    keeps its own (or none)."""
    live = [(m, name, module) for m, name, module in unit_list if module.weight.grad is not None]
    if not live:
        return
    fresh = unit_importances([module for _, _, module in live])
    if grad_scale != 1.0:
        torch._foreach_div_(fresh, grad_scale)
    old = [importance[m].get(name) for m, name, _ in live]
    known = [i for i, value in enumerate(old) if value is not None]
    if known:
        torch._foreach_mul_([old[i] for i in known], momentum)
        torch._foreach_add_([old[i] for i in known], [fresh[i] for i in known], alpha=1 - momentum)
    for (m, name, _), value, previous in zip(live, fresh, old):
        if previous is None:
            importance[m][name] = value


def top_unit_masks(importances: list[torch.Tensor], num_off: list[int]) -> list[torch.Tensor]:
    """0/1 masks that switch off the `num_off[i]` most important units of `importances[i]` (ties
    broken by index). Layers with the same number of units on the same device are ranked together."""
    masks: list[torch.Tensor | None] = [None] * len(importances)
    buckets: dict[tuple[int, torch.device], list[int]] = {}
    for i, importance in enumerate(importances):
        buckets.setdefault((importance.numel(), importance.device), []).append(i)
    for (width, device), rows in buckets.items():
        stacked = torch.stack([importances[i] for i in rows])
        order = stacked.argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(width, device=device).expand_as(order))
        limits = torch.tensor([num_off[i] for i in rows], device=device)[:, None]
        for i, mask in zip(rows, (ranks >= limits).to(stacked.dtype).unbind(0)):
            masks[i] = mask
    return masks


def build_masks(
    units: dict[str, list[dict[str, nn.Module]]],
    importance: dict[str, dict[str, torch.Tensor]],
    strengths: dict[str, list[float]],
    r_max: float,
    min_lambda: float,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int]]:
    """Auxiliary Blocks: in every group with strength > `min_lambda`, switch off the
    `ceil(strength * r_max * n)` most important of each layer's `n` units (`units[m][d]` names the
    layers of group d of modality m); layers without an importance estimate stay whole. Returns the
    masks (modality -> layer name -> 0/1 mask) and the units switched off per modality."""
    keys, importances, num_off = [], [], []
    for m, groups in units.items():
        for d, group in enumerate(groups):
            if strengths[m][d] <= min_lambda:
                continue
            fraction = strengths[m][d] * r_max
            for name in group:
                unit_importance = importance[m].get(name)
                if unit_importance is None:
                    continue
                count = min(math.ceil(fraction * unit_importance.numel()), unit_importance.numel())
                if count > 0:
                    keys.append((m, name))
                    importances.append(unit_importance)
                    num_off.append(count)
    masks: dict[str, dict[str, torch.Tensor]] = {}
    for (m, name), mask in zip(keys, top_unit_masks(importances, num_off)):
        masks.setdefault(m, {})[name] = mask
    counts = {m: sum(c for (m2, _), c in zip(keys, num_off) if m2 == m) for m in units}
    return masks, counts
