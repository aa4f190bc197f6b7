"""AIM: adaptive intra-network modulation (Shen, Chen, Zhang, arXiv 2508.19769), as `AIM_SPEC.md`
section 3 reads it.

- DAP: per modality and depth group, class prototypes (EMA of the class means of the L2-normalised
  pooled group outputs) and a depth score, the mean true-class probability of a softmax over the
  cosine similarities to the prototypes (temperature `tau`), smoothed by an EMA.
- DAM: per depth, `lambda^m_d = tanh(alpha * (s^m_d / min_m' s^m'_d - 1))`: the weakest modality at a
  depth gets 0, stronger ones more.
- PAM: per Linear/Conv output unit inside each depth group, a Taylor importance
  `EMA(sum_j |W_uj g_uj| + |b_u g_bu|)`. The Auxiliary Block of group d of modality m switches off
  the `ceil(lambda^m_d * r_max * n)` most important units of each of its layers; the model runs the
  masked encoders again (from their first masked group) and fuses them with the other modalities'
  normal features; the auxiliary loss `beta_aux * CE` trains the real, under-optimized units.

Timing within an optimizer step: `compute_loss` accumulates statistics over the micro-batches;
`step` reduces them across processes in one buffer, updates the state, and computes the masks the
*next* step uses (so every micro-batch of a step uses the same masks). Everything that decides a
mask is a reduced value or an all-reduced gradient, hence identical on every process.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import MultimodalModel, MultimodalOutput
from .base import Modulation, all_reduce_sum


def dam_strengths(scores: dict[str, torch.Tensor], alpha: float) -> dict[str, list[float]]:
    """DAM: per modality and depth, `tanh(alpha * (rho - 1))` with `rho = s / min` over the
    modalities that have that depth (a depth only one modality has gets 0)."""
    values = {m: s.tolist() for m, s in scores.items()}
    strengths = {m: [0.0] * len(v) for m, v in values.items()}
    for d in range(max(len(v) for v in values.values())):
        at_depth = {m: v[d] for m, v in values.items() if d < len(v)}
        if len(at_depth) < 2:
            continue
        weakest = max(min(at_depth.values()), 1e-12)
        for m, s in at_depth.items():
            strengths[m][d] = math.tanh(alpha * (s / weakest - 1.0))
    return strengths


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


class AIM(Modulation):
    """AIM with DAP, DAM and PAM (Auxiliary Blocks); hyperparameters `args.aim_*` (see `AIMConfig`).

    Metrics per optimizer step: `aim/score/{m}/depth_{d}` (score EMA, once every class has a
    prototype), `aim/lambda/{m}/depth_{d}` (the strength computed at this step, which sizes the next
    step's masks), `aim/masked_fraction/{m}` (share of the modality's units switched off in this
    step's auxiliary pass), `aim/aux_loss` (steps with an auxiliary pass) and `aim/active`.
    """

    name = "aim"
    default_start = 0.1

    def __init__(self, model: MultimodalModel, args: Any) -> None:
        super().__init__(model, args)
        self.num_labels = model.config.num_labels
        self.units = {m: model.unit_modules(m) for m in self.modalities}
        self.num_units = {
            m: sum(module.weight.shape[0] for group in groups for module in group.values())
            for m, groups in self.units.items()
        }
        # DAP state: prototypes[m][d] (num_labels x dim), which classes have one, score EMAs.
        self.prototypes: dict[str, list[torch.Tensor]] | None = None
        self.class_seen: torch.Tensor | None = None
        self._ready = False  # every class has a prototype: the depths can be scored
        self.scores: dict[str, torch.Tensor] | None = None
        # PAM state: importance EMA per unit module, and the masks of the next step's Auxiliary Blocks.
        self.importance: dict[str, dict[str, torch.Tensor]] = {m: {} for m in self.modalities}
        self.masks: dict[str, dict[str, torch.Tensor]] = {}
        self._masked_units: dict[str, int] = {}  # units switched off per modality by `masks`
        self._unit_list = [
            (m, name, module) for m, groups in self.units.items() for group in groups for name, module in group.items()
        ]
        # The step's statistics (one flat float32 buffer) and the feature width per modality and depth.
        self._acc: torch.Tensor | None = None
        self._dims: dict[str, list[int]] | None = None

    # ------------------------------------------------------------------------------ micro-batch
    def forward_kwargs(self) -> dict[str, Any]:
        return {"unit_masks": self.masks} if self.masks else {}

    def compute_loss(self, outputs: MultimodalOutput, labels: torch.Tensor) -> torch.Tensor | None:
        aux_loss = None
        if outputs.auxiliary_logits is not None:
            aux_loss = F.cross_entropy(outputs.auxiliary_logits.float(), labels)
        with torch.no_grad():
            self._accumulate(outputs.depth_features, labels, aux_loss)
        return None if aux_loss is None else self.args.aim_beta_aux * aux_loss

    def _accumulate(
        self, depth_features: dict[str, tuple[torch.Tensor, ...]], labels: torch.Tensor, aux_loss: torch.Tensor | None
    ) -> None:
        """Add the micro-batch's class sums of normalised features, true-class prototype
        probabilities (once every class has a prototype), class counts, sample count and auxiliary
        loss to the step's buffer. Layout: per modality and depth [K*dim sums, score sum], then
        [K counts, n, aux loss sum, aux n]."""
        if self._dims is None:
            self._dims = {m: [f.shape[-1] for f in depth_features[m]] for m in self.modalities}
        onehot = F.one_hot(labels, self.num_labels).float()
        parts = []
        for m in self.modalities:
            for d, feature in enumerate(depth_features[m]):
                h = F.normalize(feature.detach().float(), dim=-1)
                parts.append((onehot.T @ h).flatten())
                score = torch.zeros(1, device=h.device)
                if self._ready:
                    prototypes = F.normalize(self.prototypes[m][d], dim=-1)
                    probs = (h @ prototypes.T / self.args.aim_tau).softmax(-1)
                    score = probs.gather(1, labels[:, None]).sum().view(1)
                parts.append(score)
        n = float(labels.shape[0])
        tail = torch.tensor([n, 0.0, 0.0], device=labels.device)
        if aux_loss is not None:
            tail[1], tail[2] = aux_loss.detach() * n, n
        parts += [onehot.sum(0), tail]
        batch = torch.cat(parts)
        self._acc = batch if self._acc is None else self._acc + batch

    # ---------------------------------------------------------------------------- optimizer step
    def step(
        self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float | None = None
    ) -> dict[str, float]:
        if self._acc is None:
            return {}
        totals = all_reduce_sum(self._acc)
        self._acc = None
        if grad_scale is not None and not _gradients_finite(model):
            # An fp16 overflow: the GradScaler skips this optimizer step, so AIM's state skips it too.
            return {}
        class_sums, score_sums, counts, n, aux_sum, aux_n = self._unpack(totals)
        metrics: dict[str, float] = {}
        if self._ready:
            self._update_scores({m: s / n for m, s in score_sums.items()})
        self._update_prototypes(class_sums, counts)
        self._update_importance(grad_scale or 1.0)

        used_counts = self._masked_units
        strengths = dam_strengths(self.scores, self.args.aim_alpha) if self.scores is not None else None
        # The masks of the next step's Auxiliary Blocks, if that step is inside the modulation window.
        masking = strengths is not None and self.is_active(global_step + 1, max_steps)
        self.masks, self._masked_units = self._build_masks(strengths) if masking else ({}, {})

        metrics["aim/active"] = float(self.is_active(global_step, max_steps))
        for m in self.modalities:
            if self.scores is not None:
                for d, s in enumerate(self.scores[m].tolist()):
                    metrics[f"aim/score/{m}/depth_{d}"] = s
            for d, lam in enumerate(strengths[m] if strengths is not None else [0.0] * len(self.units[m])):
                metrics[f"aim/lambda/{m}/depth_{d}"] = lam
            metrics[f"aim/masked_fraction/{m}"] = used_counts.get(m, 0) / self.num_units[m]
        if aux_n > 0:
            metrics["aim/aux_loss"] = aux_sum / aux_n
        return metrics

    def _unpack(self, totals: torch.Tensor):
        """Split the reduced buffer (layout in `_accumulate`)."""
        k = self.num_labels
        class_sums, score_sums, offset = {}, {}, 0
        for m in self.modalities:
            class_sums[m], scores = [], []
            for dim in self._dims[m]:
                class_sums[m].append(totals[offset : offset + k * dim].view(k, dim))
                scores.append(totals[offset + k * dim])
                offset += k * dim + 1
            score_sums[m] = torch.stack(scores)
        counts = totals[offset : offset + k]
        n, aux_sum, aux_n = totals[offset + k :].tolist()
        return class_sums, score_sums, counts, n, aux_sum, aux_n

    def _update_scores(self, batch_scores: dict[str, torch.Tensor]) -> None:
        mom = self.args.aim_momentum
        if self.scores is None:
            self.scores = {m: s.clone() for m, s in batch_scores.items()}
        else:
            self.scores = {m: mom * self.scores[m] + (1 - mom) * s for m, s in batch_scores.items()}

    def _update_prototypes(self, class_sums: dict[str, list[torch.Tensor]], counts: torch.Tensor) -> None:
        """EMA of the class means for the classes in the step; a class's first mean is taken as is."""
        mom = self.args.aim_momentum
        present = counts > 0
        seen = self.class_seen if self.class_seen is not None else torch.zeros_like(present)
        if self.prototypes is None:
            self.prototypes = {m: [torch.zeros_like(s) for s in sums] for m, sums in class_sums.items()}
        for m, sums in class_sums.items():
            for d, s in enumerate(sums):
                mean = s / counts.clamp(min=1)[:, None]
                old = self.prototypes[m][d]
                ema = torch.where(seen[:, None], mom * old + (1 - mom) * mean, mean)
                self.prototypes[m][d] = torch.where(present[:, None], ema, old)
        self.class_seen = seen | present
        self._ready = bool(self.class_seen.all())

    @torch.no_grad()
    def _update_importance(self, grad_scale: float) -> None:
        """Taylor importance EMA of every unit from the step's final (finite) gradients, unscaled."""
        live = [(m, name, module) for m, name, module in self._unit_list if module.weight.grad is not None]
        if not live:
            return
        fresh = unit_importances([module for _, _, module in live])
        if grad_scale != 1.0:
            torch._foreach_div_(fresh, grad_scale)
        mom = self.args.aim_momentum
        old = [self.importance[m].get(name) for m, name, _ in live]
        known = [i for i, value in enumerate(old) if value is not None]
        if known:
            torch._foreach_mul_([old[i] for i in known], mom)
            torch._foreach_add_([old[i] for i in known], [fresh[i] for i in known], alpha=1 - mom)
        for (m, name, _), value, previous in zip(live, fresh, old):
            if previous is None:
                self.importance[m][name] = value

    def _build_masks(
        self, strengths: dict[str, list[float]]
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int]]:
        """Auxiliary Blocks: in every group with lambda > `aim_min_lambda` (0: the spec), switch off the
        top `ceil(lambda * r_max * n)` of each layer's `n` units by importance (layers without an
        importance estimate stay whole). Returns the masks and the units switched off per modality."""
        keys, importances, num_off = [], [], []
        for m, groups in self.units.items():
            for d, group in enumerate(groups):
                if strengths[m][d] <= self.args.aim_min_lambda:
                    continue
                fraction = strengths[m][d] * self.args.aim_r_max
                for name in group:
                    importance = self.importance[m].get(name)
                    if importance is None:
                        continue
                    count = min(math.ceil(fraction * importance.numel()), importance.numel())
                    if count > 0:
                        keys.append((m, name))
                        importances.append(importance)
                        num_off.append(count)
        masks: dict[str, dict[str, torch.Tensor]] = {}
        for (m, name), mask in zip(keys, top_unit_masks(importances, num_off)):
            masks.setdefault(m, {})[name] = mask
        counts = {m: sum(c for (m2, _), c in zip(keys, num_off) if m2 == m) for m in self.modalities}
        return masks, counts

    # ------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        state = {
            "prototypes": self.prototypes,
            "class_seen": self.class_seen,
            "scores": self.scores,
            "importance": self.importance,
            "masks": self.masks,
        }
        return _map_tensors(state, lambda t: t.detach().cpu().clone())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.model.device
        self.prototypes = _map_tensors(state["prototypes"], lambda t: t.to(device))
        self.class_seen = _map_tensors(state["class_seen"], lambda t: t.to(device))
        self._ready = self.class_seen is not None and bool(self.class_seen.all())
        self.scores = _map_tensors(state["scores"], lambda t: t.to(device))
        # Importance and masks live beside their layer's weight.
        layers = {m: {name: mod for group in groups for name, mod in group.items()} for m, groups in self.units.items()}
        self.importance = {
            m: {name: v.to(layers[m][name].weight.device) for name, v in state["importance"].get(m, {}).items()}
            for m in self.modalities
        }
        self.masks = {
            m: {name: v.to(layers[m][name].weight.device) for name, v in masks.items()}
            for m, masks in state["masks"].items()
        }
        self._masked_units = {
            m: int(sum((mask == 0).sum() for mask in masks.values())) for m, masks in self.masks.items()
        }


@torch.no_grad()
def _gradients_finite(model: nn.Module) -> bool:
    """Whether every gradient is finite (what the GradScaler checks before stepping). Gradients
    are all-reduced, so every process reaches the same answer. The max-norm cannot overflow and
    is inf or nan exactly when some entry is."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all())


def _map_tensors(value: Any, fn) -> Any:
    """`fn` applied to every tensor inside nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    return value
