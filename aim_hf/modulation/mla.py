"""MLA: multimodal learning by alternating unimodal adaptation (Zhang, Yoon, Bansal & Yao, CVPR 2024).

Training alternates modalities: optimizer step t trains modality `m = modalities[t % M]` alone,
through the shared head. The shared head is the model's fusion, which here sees m's final feature
and zeros for every other modality (`feature_keep`), so the model's fused cross-entropy is m's
unimodal loss; the other encoders' gradients are dropped (set to None, so that the optimizer leaves
them alone, momentum and weight decay included). The probes train on every step as usual.

Gradient modification: the fusion's gradient of step t (all its parameters as one vector, after
accumulation and the all-reduce) is projected orthogonal to the fusion's gradient of step t - 1
(the previous modality's), `g <- g - (g . g_prev / |g_prev|^2) g_prev`, so that learning modality m
does not undo, to first order, what the previous modality's step taught the head. `g_prev` is the
previous step's gradient before its own projection, kept as state.

Evaluation (`eval_fusion="entropy"`): the prediction is the uncertainty-weighted combination of the
head's per-modality logits `z_m` (the fusion with only m present): per sample, `w = softmax(-H)`
over the modalities' prediction entropies `H_m = H(softmax(z_m))`, logits `sum_m w_m z_m`. It is
applied by `AIMTrainer` in evaluation and prediction (`on_prediction_step`); the model's
own forward keeps the fused logits. Which parts are the paper's: docs/methods/mla.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation, Paper
from .mechanics import StepSums, gradients_finite


@dataclass
class MLAConfig:
    """MLA's hyperparameters (`modulation_kwargs`)."""

    gradient_projection: bool = field(
        default=True,
        metadata={
            "help": "Project the head's gradient orthogonal to the previous step's (the paper's gradient "
            "modification)."
        },
    )
    eval_fusion: Literal["entropy", "model"] = field(
        default="entropy",
        metadata={
            "help": "Evaluation logits: 'entropy' (the paper's uncertainty-weighted fusion of the per-modality "
            "logits) or 'model' (the model's fused logits with every modality present)."
        },
    )


def unimodal_head_logits(model: MultimodalModel, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fusion's logits with only modality m's feature present (the others zeros), per modality."""
    return {m: model.fusion.logits_with(features, [m]) for m in features}


def entropy_weighted_logits(logits: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`sum_m w_m z_m` with per-sample weights `w = softmax(-H)` over the modalities' prediction
    entropies; returns the logits and the weights `(batch, M)`."""
    stacked = torch.stack([z.float() for z in logits.values()], dim=1)  # (batch, M, classes)
    log_p = stacked.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    weights = (-entropy).softmax(dim=1)
    return (weights.unsqueeze(-1) * stacked).sum(1), weights


def project_orthogonal(g: torch.Tensor, g_prev: torch.Tensor) -> torch.Tensor:
    """`g` less its component along `g_prev` (`g` itself when `g_prev` is zero)."""
    norm = torch.dot(g_prev, g_prev)
    if norm == 0:
        return g
    return g - (torch.dot(g, g_prev) / norm) * g_prev


class MLA(Modulation):
    name = "mla"
    label = "MLA"
    title = "MLA (Multimodal Learning with Alternating Unimodal Adaptation)"
    paper = Paper(
        "Multimodal Representation Learning by Alternating Unimodal Adaptation", "CVPR 2024",
        "https://arxiv.org/abs/2311.10707",
    )
    citation = """@inproceedings{zhang2024multimodal,
  title     = {Multimodal Representation Learning by Alternating Unimodal Adaptation},
  author    = {Zhang, Xiaohui and Yoon, Jaehong and Bansal, Mohit and Yao, Huaxiu},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {27456--27466},
  year      = {2024}
}"""
    metric_prefix = "mla"
    metrics = (
        Metric("mla/loss/<m>", "the fused cross-entropy of a step that trains m"),
        Metric("mla/head_cos", "cosine between the head's gradient and the previous step's, before the projection"),
    )
    default_start = 0.0
    Config = MLAConfig
    reads_gradients = True
    forward_arguments = ("feature_keep",)

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        if self.start != 0 or self.end is not None:
            # The alternation is the whole training method; there is no joint phase to fall back on.
            raise ValueError(
                "mla alternates modalities for the whole training: leave modulation_start and modulation_end unset."
            )
        self._head = [p for p in model.fusion.parameters() if p.requires_grad]
        # State: the fusion's gradient of the previous step (zeros before the first).
        self.prev_head_grad = torch.zeros(sum(p.numel() for p in self._head))
        self._sums = StepSums()  # the step's loss sum, then the sample count

    def modality_of(self, global_step: int) -> str:
        """The modality optimizer step `global_step` trains."""
        return self.modalities[global_step % len(self.modalities)]

    def on_micro_batch_begin(self, ctx: HookContext) -> None:
        active, rows = self.modality_of(ctx.step), ctx.labels.shape[0]
        device = next(self.model.parameters()).device
        ctx.pass_to_forward(feature_keep={m: torch.zeros(rows, device=device) for m in self.modalities if m != active})

    def on_forward_end(self, ctx: HookContext) -> None:
        n = float(ctx.labels.shape[0])
        loss = ctx.outputs.fused_loss.detach().float()
        self._sums.add(torch.stack([loss * n, torch.tensor(n, device=ctx.labels.device)]))

    def on_prediction_step(self, ctx: HookContext) -> None:
        if self.config.eval_fusion == "model":
            return
        features = {m: ctx.outputs.depth_features[m][-1] for m in self.modalities}
        ctx.replace_logits(entropy_weighted_logits(unimodal_head_logits(self.model, features))[0])

    def on_gradients_ready(self, ctx: HookContext) -> None:
        model = ctx.model
        active = self.modality_of(ctx.step)
        totals = self._sums.reduce()
        if totals is not None:
            ctx.log({f"mla/loss/{active}": (totals[0] / totals[1]).item()})
        for m in self.modalities:
            if m != active:
                for p in model.encoders[m].parameters():
                    p.grad = None
        # A step the GradScaler skips (an fp16 overflow) must leave the state as it was.
        if not self.config.gradient_projection or (ctx.grad_scale is not None and not gradients_finite(model)):
            return
        if not any(p.grad is not None for p in self._head):
            return
        with torch.no_grad():
            # A parameter outside this step's graph has no gradient: zero in the vector, left as None.
            g = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1).float() for p in self._head])
            prev = self.prev_head_grad.to(g.device)
            if bool(prev.any()):
                ctx.log({"mla/head_cos": (torch.dot(g, prev) / (g.norm() * prev.norm()).clamp(min=1e-30)).item()})
                projected = project_orthogonal(g, prev)
                offset = 0
                for p in self._head:
                    if p.grad is not None:
                        p.grad.copy_(projected[offset : offset + p.numel()].view_as(p))
                    offset += p.numel()
            self.prev_head_grad = g.cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"prev_head_grad": self.prev_head_grad.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prev_head_grad = state["prev_head_grad"].clone()
