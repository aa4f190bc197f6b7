"""RedReg: adaptive redundancy regulation (Yang, Li, Chen, Wang, Xiong & Fan, "Adaptive Redundancy
Regulation for Balanced Multimodal Information Refinement", arXiv 2511.13755; reference code
xia-zhe/RedReg, which builds on InfoReg's).

When the dominant modality keeps dominating, its representation accumulates information that its
output no longer uses (redundancy). RedReg then pulls the dominant encoder back toward its parameters
at the start of the period, along directions orthogonal to its current gradient, so that the pull does
not undo what the joint loss asks for. The loss is multitask, `L = L_model + sum_m CE(z^m, y)` as in
InfoReg. Per optimizer step, from statistics summed over the step's global batch:

- score `p_m`: mean true-class probability of modality m's share `z^m` of the fused logits; effective
  gain growth rate `g_m = (mean(p[-W:]) - mean(p[-W-1:-1])) / |mean(p[-W-1:-1])|` over the last steps
  (1 until there are more than W);
- redundancy (ours): the representation-output coupling `c_m = mean |f_m|^2 / mean |z^m|^2` (m's final
  feature energy per unit of its share's energy, both per element), normalised by its running mean,
  `red_m = c_m / ema_m` with `ema_m <- mu * ema_m + (1 - mu) * c_m` (starting at 0);
- redundancy phase monitor: `r_m = red_m - gamma * max(g_m, 0)`; the dominant modality `d = argmax p`
  is regulated when `r_d > trigger`;
- co-information gate (ours on what is compared): the mean cosine between `z^d` and each other
  modality's share, sample by sample; the suppression is on only when it exceeds a threshold rising
  linearly from `gate_start` to `gate_end` over training (the modalities then carry shared evidence;
  when the prediction rests on one modality alone, nothing is suppressed);
- strength `beta = exp(scale * tanh(p_d - mean_{m != d} p_m))`;
- regulation (decoupled, as InfoReg): right after `optimizer.step()`, for each parameter of encoder d,
  `theta <- theta - lr * beta * (delta - (delta . g / |g|^2) g)`, with `delta = theta - theta_anchor` and
  `g` the parameter's gradient of the step: the pull projected onto the orthogonal complement of the
  joint gradient (per parameter tensor, as the reference).

What is the paper's, the reference code's and ours: docs/methods/redreg.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation, Paper
from .mechanics import (
    EncoderAnchors,
    StepSums,
    resolve_step,
    true_class_probabilities,
    unimodal_cross_entropies,
    with_sample_count,
)

EPS = 1e-12


@dataclass
class RedRegConfig:
    """RedReg's hyperparameters (`modulation_kwargs`); defaults: the reference code's."""

    window: int = field(
        default=10, metadata={"help": "W: steps averaged on each side of the effective gain growth rate."}
    )
    gamma: float = field(
        default=0.6, metadata={"help": "Weight of the growth rate in the phase monitor `r = red - gamma * max(g, 0)`."}
    )
    trigger: float = field(
        default=0.15, metadata={"help": "The dominant modality is regulated when `r > trigger` (the reference's R)."}
    )
    momentum: float = field(
        default=0.9, metadata={"help": "Momentum of the running mean that normalises the redundancy."}
    )
    scale: float = field(
        default=0.9, metadata={"help": "Strength in `beta = exp(scale * tanh(gap))` (the reference's beta_scale)."}
    )
    gate_start: float = field(
        default=0.2,
        metadata={
            "help": "Co-information gate threshold at the first step, rising linearly to `gate_end` at the last."
        },
    )
    gate_end: float = field(default=0.5, metadata={"help": "Co-information gate threshold at the last step."})
    period: float = field(
        default=0.0125,
        metadata={
            "help": "Optimizer steps between two anchor refreshes (the reference: one epoch, of 80 = 0.0125); < 1 "
            "a fraction of all steps, >= 1 a number of steps; at least one step (ours)."
        },
    )

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"redreg's window must be >= 1, got {self.window}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"redreg's momentum must lie in [0, 1), got {self.momentum}.")
        if self.period <= 0:
            raise ValueError(f"redreg's period must be > 0, got {self.period}.")


def growth_rates(history: torch.Tensor, window: int) -> torch.Tensor:
    """Per modality `(mean(h[-W:]) - mean(h[-W-1:-1])) / (|mean(h[-W-1:-1])| + eps)` for a `(steps,
    modalities)` score history; 1 while it holds W steps or fewer."""
    if history.shape[0] <= window:
        return torch.ones(history.shape[1], dtype=history.dtype)
    recent, before = history[-window:].mean(0), history[-window - 1 : -1].mean(0)
    return (recent - before) / (before.abs() + EPS)


def redundancy_phase(
    coupling: torch.Tensor, ema: torch.Tensor, growth: torch.Tensor, momentum: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The updated running mean `mu * ema + (1 - mu) * c`, the normalised redundancy `c / ema` and the
    phase monitor `red - gamma * max(g, 0)`, per modality."""
    ema = momentum * ema + (1 - momentum) * coupling
    redundancy = coupling / (ema + EPS)
    return ema, redundancy, redundancy - gamma * growth.clamp(min=0)


def gate_threshold(start: float, end: float, global_step: int, max_steps: int) -> float:
    """The co-information gate's threshold at `global_step`, linear from `start` (step 0) to `end` (the last)."""
    return start + (end - start) * global_step / max(1, max_steps - 1)


class RedReg(Modulation):
    name = "redreg"
    label = "RedReg"
    title = "RedReg (Adaptive Redundancy Regulation)"
    paper = Paper(
        "Adaptive Redundancy Regulation for Balanced Multimodal Information Refinement", "arXiv 2025",
        "https://arxiv.org/abs/2511.13755",
    )
    citation = """@article{yang2025adaptive,
  title   = {Adaptive Redundancy Regulation for Balanced Multimodal Information Refinement},
  author  = {Yang, Zhe and Li, Wenrui and Chen, Hongtao and Wang, Penghong and Xiong, Ruiqin and Fan, Xiaopeng},
  journal = {arXiv preprint arXiv:2511.13755},
  year    = {2025}
}"""
    metric_prefix = "redreg"
    metrics = (
        Metric("redreg/active", "1 inside the modulation window"),
        Metric("redreg/agreement", "mean cosine between the dominant modality's share and the others'"),
        Metric("redreg/gate_open", "1 when the agreement exceeds the co-information gate's threshold"),
        Metric("redreg/score/<m>", "mean true-class probability of m's share of the fused logits"),
        Metric("redreg/growth/<m>", "m's effective gain growth rate"),
        Metric("redreg/redundancy/<m>", "m's normalised redundancy"),
        Metric("redreg/phase/<m>", "m's redundancy phase monitor r"),
        Metric("redreg/coeff/<m>", "the pull beta on encoder m in this step (0: none)"),
    )
    default_start = 0.0
    Config = RedRegConfig
    reads_gradients = True  # the projection and the overflow check read `.grad`

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        num = len(self.modalities)
        self.anchors = EncoderAnchors(model, self.modalities)
        # State: the last window + 1 steps' scores, and the redundancy's running mean.
        self.history = torch.zeros(0, num, dtype=torch.float64)
        self.ema = torch.zeros(num, dtype=torch.float64)
        # Per modality: score sums, feature energy sums, share energy sums; then the M x M share cosine
        # sums; then the sample count.
        self._sums = StepSums()
        self._coeffs: dict[str, float] = {}

    def on_forward_end(self, ctx: HookContext) -> None:
        outputs, labels = ctx.outputs, ctx.labels
        losses = unimodal_cross_entropies(outputs, self.modalities, labels)
        with torch.no_grad():
            shares = torch.stack([outputs.modality_logits[m].float() for m in self.modalities])  # (M, n, C)
            scores = torch.stack([true_class_probabilities(share, labels).sum() for share in shares])
            features = torch.stack(
                [outputs.depth_features[m][-1].float().pow(2).mean(-1).sum() for m in self.modalities]
            )
            energies = shares.pow(2).mean(-1).sum(-1)
            unit = F.normalize(shares, dim=-1)
            cosines = torch.einsum("anc,bnc->ab", unit, unit).flatten()
            self._sums.add(with_sample_count([scores, features, energies, cosines], labels))
        ctx.add_loss(losses.sum())

    def on_gradients_ready(self, ctx: HookContext) -> None:
        self._coeffs = {}
        totals = self._sums.reduce_unless_skipped(ctx.model, ctx.grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: the state stays as it was
            return
        num = len(self.modalities)
        totals = totals.double().cpu()
        n = totals[-1]
        scores, features, energies = (totals[i * num : (i + 1) * num] / n for i in range(3))
        cosines = totals[3 * num : -1].view(num, num) / n
        self.anchors.refresh_due(ctx.step, max(1, resolve_step(self.config.period, ctx.max_steps)))
        self.history = torch.cat([self.history, scores[None]])[-(self.config.window + 1) :]
        growth = growth_rates(self.history, self.config.window)
        coupling = features / energies.clamp(min=EPS)
        self.ema, redundancy, phase = redundancy_phase(
            coupling, self.ema, growth, self.config.momentum, self.config.gamma
        )
        d = int(scores.argmax())
        others = [i for i in range(num) if i != d]
        gap = scores[d] - scores[others].mean()
        agreement = cosines[d, others].mean().item()
        threshold = gate_threshold(self.config.gate_start, self.config.gate_end, ctx.step, ctx.max_steps)
        beta = torch.exp(self.config.scale * torch.tanh(gap)).item()
        active = self.is_active(ctx.step, ctx.max_steps)
        regulate = active and phase[d].item() > self.config.trigger and agreement > threshold
        if regulate:
            self._coeffs = {self.modalities[d]: beta}
        metrics = {
            "redreg/active": float(active),
            "redreg/agreement": agreement,
            "redreg/gate_open": float(agreement > threshold),
        }
        for i, m in enumerate(self.modalities):
            metrics[f"redreg/score/{m}"] = scores[i].item()
            metrics[f"redreg/growth/{m}"] = growth[i].item()
            metrics[f"redreg/redundancy/{m}"] = redundancy[i].item()
            metrics[f"redreg/phase/{m}"] = phase[i].item()
            metrics[f"redreg/coeff/{m}"] = self._coeffs.get(m, 0.0)
        ctx.log(metrics)

    def on_optimizer_step(self, ctx: HookContext) -> None:
        if self._coeffs:
            self.anchors.pull(ctx.optimizer, self._coeffs, orthogonal=True)
        self._coeffs = {}

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors.state_dict(), "history": self.history.clone(), "ema": self.ema.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors.load_state_dict(state["anchors"])
        self.history, self.ema = state["history"].clone(), state["ema"].clone()
