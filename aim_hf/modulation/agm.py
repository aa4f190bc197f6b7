"""AGM: adaptive gradient modulation (Li et al., "Boosting Multi-modal Model Performance with
Adaptive Gradient Modulation", ICCV 2023).

Per training micro-batch, each modality's *mono-modal response* is its Shapley value in the fused
logits, with a modality "absent" when its final feature enters the fusion as zeros:
`phi_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (f(S + {m}) - f(S))`, where `f(S)` is
the fusion of the features in S with the others zeroed (for two modalities, the average of m's two
marginal contributions, `(f(a, v) - f(0, v) + f(a, 0) - f(0, 0)) / 2`). The `2^M` fusions re-use
the forward's cached final features (`depth_features[m][-1]`): no encoder runs again. The score
of m is the mean cross-entropy of its response, `s_m = mean_i -log softmax(phi_m)_i[y_i]`, summed
over the step's micro-batches and all processes. Per optimizer step:

- ratio `r_m = discrepancy_ratios(exp(-s))_m` (for two modalities `exp(s_v - s_a)` for a);
- target ratio `rbar_m`: the same of the running mean of the previous steps' scores (1 at the
  first step, as the reference's zero-initialised running scores give);
- coefficient `k_m = exp(alpha * min(rbar_m - r_m, 7))`: a modality more dominant than usual is
  slowed (k < 1), one less dominant than usual is sped up (k > 1).

`mode` says what k multiplies, as for OGM-GE: each encoder's gradient ("gradient", the paper's
gradient modulation) or, through the learning rate of its parameter groups, its update ("update",
which an adaptive optimizer cannot cancel); "auto" picks by the optimizer. Which parts are the
paper's: docs/methods/agm.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..modeling import MultimodalModel
from ..shapley import coalitions, shapley_values
from .base import HookContext, Metric, Modulation, Paper
from .mechanics import StepSums, choose_scaling_mode, discrepancy_ratios, true_class_probabilities, with_sample_count

# The reference caps the exponent of the coefficient so that exp() cannot overflow.
MAX_EXPONENT = 7.0
# Probabilities below this count as this in the cross-entropy (a zero would give an infinite score).
MIN_PROBABILITY = 1e-8


@dataclass
class AGMConfig:
    """AGM's hyperparameters (`modulation_kwargs`); defaults: BalanceBenchmark's AGM configuration."""

    alpha: float = field(default=0.1, metadata={"help": "Strength in `k = exp(alpha * (rbar - r))`."})
    mode: Literal["auto", "gradient", "update"] = field(
        default="auto",
        metadata={
            "help": "What k scales: 'gradient' (the paper, trained with SGD), 'update' (the encoder's learning "
            "rate for the step; ours, since Adam cancels a gradient factor), 'auto' ('update' under an adaptive "
            "optimizer)."
        },
    )

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"agm's alpha must be >= 0, got {self.alpha}.")


def agm_coefficients(
    scores: torch.Tensor, mean_scores: torch.Tensor | None, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ratios, target ratios and coefficients `exp(alpha * min(rbar - r, 7))` for a 1-D tensor of
    per-modality response cross-entropies and their running mean over earlier steps (None: none yet)."""
    ratios = discrepancy_ratios(torch.exp(-scores))
    targets = torch.ones_like(ratios) if mean_scores is None else discrepancy_ratios(torch.exp(-mean_scores))
    coeffs = torch.exp(alpha * (targets - ratios).clamp(max=MAX_EXPONENT))
    return ratios, targets, coeffs


class AGM(Modulation):
    name = "agm"
    label = "AGM"
    title = "AGM (Adaptive Gradient Modulation)"
    paper = Paper(
        "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation", "ICCV 2023",
        "https://arxiv.org/abs/2308.07686",
    )
    citation = """@inproceedings{li2023boosting,
  title     = {Boosting Multi-modal Model Performance with Adaptive Gradient Modulation},
  author    = {Li, Hong and Li, Xingyu and Hu, Pengbo and Lei, Yinuo and Li, Chunxiao and Zhou, Yi},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {22214--22224},
  year      = {2023}
}"""
    metric_prefix = "agm"
    metrics = (
        Metric("agm/active", "1 inside the modulation window"),
        Metric("agm/score/<m>", "mean cross-entropy of m's Shapley response"),
        Metric("agm/ratio/<m>", "m's ratio r from this step's scores"),
        Metric("agm/target_ratio/<m>", "m's ratio from the running mean of the earlier steps' scores"),
        Metric("agm/coeff/<m>", "the coefficient k on m's gradient or update (1 outside the window)"),
    )
    default_start = 0.0
    Config = AGMConfig
    reads_gradients = True

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        self.mode = "gradient" if self.config.mode == "auto" else self.config.mode
        # State: the sum of the per-step scores and the number of steps, for the running mean.
        self.score_sum = torch.zeros(len(self.modalities), dtype=torch.float64)
        self.score_steps = 0
        self._sums = StepSums()  # per modality the cross-entropy sums, then the sample count

    def on_train_begin(self, ctx: HookContext) -> None:
        self.mode, warning = choose_scaling_mode(self.name, self.config.mode, ctx.optimizer, self.modalities)
        if warning:
            ctx.warn(warning)

    def on_forward_end(self, ctx: HookContext) -> None:
        labels = ctx.labels
        with torch.no_grad():
            features = {m: ctx.outputs.depth_features[m][-1] for m in self.modalities}
            fusion = self.model.fusion
            coalition_logits = {c: fusion.logits_with(features, c) for c in coalitions(self.modalities)}
            responses = shapley_values(coalition_logits, self.modalities)
            sums = [
                -true_class_probabilities(responses[m], labels).clamp(min=MIN_PROBABILITY).log().sum()
                for m in self.modalities
            ]
            self._sums.add(with_sample_count(sums, labels))

    def on_gradients_ready(self, ctx: HookContext) -> None:
        totals = self._sums.reduce_unless_skipped(ctx.model, ctx.grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: the state stays as it was
            return
        totals = totals.double().cpu()
        scores = totals[:-1] / totals[-1]
        mean = self.score_sum / self.score_steps if self.score_steps else None
        ratios, targets, coeffs = agm_coefficients(scores, mean, self.config.alpha)
        self.score_sum = self.score_sum + scores
        self.score_steps += 1
        active = self.is_active(ctx.step, ctx.max_steps)
        if active:
            ks = dict(zip(self.modalities, coeffs.tolist()))
            if self.mode == "update":
                for m, k in ks.items():
                    ctx.scale_lr(m, k)
            else:
                self._scale_gradients(ctx.model, ks)
        metrics = {"agm/active": float(active)}
        for i, m in enumerate(self.modalities):
            metrics[f"agm/score/{m}"] = scores[i].item()
            metrics[f"agm/ratio/{m}"] = ratios[i].item()
            metrics[f"agm/target_ratio/{m}"] = targets[i].item()
            metrics[f"agm/coeff/{m}"] = coeffs[i].item() if active else 1.0
        ctx.log(metrics)

    @torch.no_grad()
    def _scale_gradients(self, model: MultimodalModel, coeffs: dict[str, float]) -> None:
        for m, k in coeffs.items():
            grads = [p.grad for p in model.encoders[m].parameters() if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, k)

    def state_dict(self) -> dict[str, Any]:
        return {"score_sum": self.score_sum.clone(), "score_steps": self.score_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score_sum, self.score_steps = state["score_sum"].clone(), state["score_steps"]
