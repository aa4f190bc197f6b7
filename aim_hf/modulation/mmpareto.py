"""MMPareto: boosting multimodal learning with innocent unimodal assistance (Wei & Hu, ICML 2024).

The loss is multitask: `L = L_model + sum_m CE(z^m, y)`, with `z^m` modality m's share of the fused
logits (as `unimodal_losses`). Each encoder u receives two gradients, `g_mm` from the multimodal
loss and `g_u` from its own unimodal loss (with gated or FiLM fusion a modality's share also
depends on the other modalities' features, so another modality's unimodal loss reaches encoder u
too: that part counts with `g_mm`, which is everything but u's own unimodal loss [ours]).
MMPareto combines them per encoder (all of the encoder's parameters as one vector):

- no conflict (`cos(g_mm, g_u) >= 0`): weights 1/2 each;
- conflict: the Pareto (MGDA) weights, the min-norm point of the segment between the two
  gradients, in closed form for two tasks: `w_mm = clip((g_u - g_mm) . g_u / |g_mm - g_u|^2, 0, 1)`,
  `w_u = 1 - w_mm`;
- magnitude: the direction `d = w_mm g_mm + w_u g_u` is rescaled to the norm of the sum,
  `g = d * |g_mm + g_u| / |d|` (without conflict this is the plain sum).

How the two gradients are obtained: after each micro-batch's forward (`on_forward_end`) the
unimodal loss of modality u is differentiated with respect to encoder u's parameters
(`torch.autograd.grad`, about one extra backward through the encoders) and summed into a flat
buffer (a `StepSums`); the trainer's backward then adds the whole loss's gradient to `.grad` as
usual. At the optimizer step (`on_gradients_ready`, after the last micro-batch's backward) the buffer
is averaged over the micro-batches and all-reduced (mean) across processes, so it is on the scale of
the accumulated, all-reduced `.grad` (each micro-batch's loss is multiplied by the fp16 loss scale
before it is differentiated, as the trainer's backward does); `g_mm = .grad - g_u`. The
combination is made on these all-reduced sums over the whole step, identically on every process.
The heads keep the plain sum of the gradients.
"""

from __future__ import annotations

from typing import Any

import torch

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation, Paper
from .mechanics import StepSums, rank_and_world, unimodal_cross_entropies


def pareto_weights(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[float, float, float]:
    """Cosine and weights `(cos, w_mm, w_u)` for two flat gradients: 1/2 each without conflict, the
    min-norm (MGDA) weights on conflict (negative cosine)."""
    dot, nn_mm, nn_u = torch.dot(g_mm, g_u), torch.dot(g_mm, g_mm), torch.dot(g_u, g_u)
    cos = (dot / (nn_mm.sqrt() * nn_u.sqrt()).clamp(min=1e-30)).item()
    if cos >= 0:
        return cos, 0.5, 0.5
    w_mm = ((nn_u - dot) / (nn_mm + nn_u - 2 * dot).clamp(min=1e-30)).clamp(0, 1).item()
    return cos, w_mm, 1 - w_mm


def pareto_combine(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """MMPareto's gradient for two flat gradients: the weighted direction rescaled to `|g_mm + g_u|`.
    Returns it with the cosine and `w_mm`."""
    cos, w_mm, w_u = pareto_weights(g_mm, g_u)
    direction = w_mm * g_mm + w_u * g_u
    scale = (g_mm + g_u).norm() / direction.norm().clamp(min=1e-30)
    return direction * scale, cos, w_mm


class MMPareto(Modulation):
    name = "mmpareto"
    label = "MMPareto"
    title = "MMPareto (Pareto combination of the multimodal and unimodal gradients)"
    paper = Paper(
        "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", "ICML 2024",
        "https://arxiv.org/abs/2405.17730",
    )
    citation = """@inproceedings{wei2024mmpareto,
  title     = {{MMPareto}: Boosting Multimodal Learning with Innocent Unimodal Assistance},
  author    = {Wei, Yake and Hu, Di},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning (ICML)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {235},
  year      = {2024}
}"""
    metric_prefix = "mmpareto"
    metrics = (
        Metric("unimodal/loss/<m>", "m's own cross-entropy, averaged over the step's samples"),
        Metric("mmpareto/active", "1 inside the modulation window"),
        Metric("mmpareto/cos/<m>", "cosine between encoder m's multimodal and unimodal gradients"),
        Metric("mmpareto/weight_mm/<m>", "the weight of the multimodal gradient (1/2 without conflict)"),
    )
    default_start = 0.0
    reads_gradients = True

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        self._params = {
            m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in self.modalities
        }
        self._uni = StepSums()  # the unimodal-loss gradients, all encoders' parameters as one vector
        self._micro = 0  # the micro-batches added to `_uni` in the step under way
        self._sums = StepSums()  # per-modality loss sums, then the sample count

    def on_forward_end(self, ctx: HookContext) -> None:
        losses = unimodal_cross_entropies(ctx.outputs, self.modalities, ctx.labels)
        if torch.is_grad_enabled():
            loss_scale = 1.0 if ctx.grad_scale is None else ctx.grad_scale
            grads = []
            for i, m in enumerate(self.modalities):
                if self._params[m]:
                    # Scaled as the trainer's backward is, so that fp16 activations' gradients do not underflow.
                    own = torch.autograd.grad(
                        losses[i] * loss_scale, self._params[m], retain_graph=True, allow_unused=True
                    )
                    grads += [torch.zeros_like(p) if g is None else g for g, p in zip(own, self._params[m])]
            self._uni.add(torch.cat([g.reshape(-1) for g in grads]))
            self._micro += 1
        n = float(ctx.labels.shape[0])
        self._sums.add(torch.cat([losses.detach() * n, torch.tensor([n], device=losses.device)]))
        ctx.add_loss(losses.sum())

    def on_gradients_ready(self, ctx: HookContext) -> None:
        totals = self._sums.reduce()
        if totals is not None:
            totals = totals.tolist()
            ctx.log({f"unimodal/loss/{m}": totals[i] / totals[-1] for i, m in enumerate(self.modalities)})
        active = self.is_active(ctx.step, ctx.max_steps)
        ctx.log({"mmpareto/active": float(active)})
        micro, self._micro = self._micro, 0
        if not active:  # every process is outside the window: none reduces the gradients
            self._uni.discard()
            return
        flat = self._uni.reduce()
        if flat is None:
            return
        _, world = rank_and_world()
        flat /= micro * world  # the scale of the accumulated, averaged .grad (loss scale included)
        start = 0
        with torch.no_grad():
            for m in self.modalities:
                params = self._params[m]
                size = sum(p.numel() for p in params)
                if any(p.grad is not None for p in params):
                    g_u = flat[start : start + size]
                    # A parameter outside the graph (e.g. an unused pooler) has no gradient: zero in both.
                    total = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])
                    combined, cos, w_mm = pareto_combine(total.float() - g_u, g_u)
                    offset = 0
                    for p in params:
                        if p.grad is not None:
                            p.grad.copy_(combined[offset : offset + p.numel()].view_as(p))
                        offset += p.numel()
                    ctx.log({f"mmpareto/cos/{m}": cos, f"mmpareto/weight_mm/{m}": w_mm})
                start += size
