"""InfoReg: information acquisition regulation (Huang, Wei, Yang & Hu, "Adaptive Unimodal Regulation
for Balanced Multimodal Information Acquisition", CVPR 2025; reference code GeWu-Lab/InfoReg_CVPR2025).

During the *prime learning window*, the early stretch of training in which a modality acquires
information fast, InfoReg slows the information-sufficient (dominant) modality by pulling its encoder
back toward its parameters at the start of the current period, so that the other modalities acquire
theirs. The loss is multitask, `L = L_model + sum_m CE(z^m, y)` (`z^m`: modality m's share of the
fused logits). Per optimizer step:

- information acquired: the trace of the (empirical, diagonal) Fisher information of each encoder,
  `tr_m = sum_W mean(g_W^2)` over its Linear/Conv weights W, with `g` the step's accumulated,
  all-reduced loss gradient; averaged over a period of `period` steps (the reference: one epoch);
- acquisition rate, from the per-period traces (the history starts with `window` zeros):
  `k_m = (mean(last window) - mean(the window before, shifted by one)) / mean(last window)`;
  the prime learning window of m is open while `k_m > threshold`;
- scores `s_m = sum_i softmax(z^m_i)[y_i]` over the step's global batch; m's gap over the weaker
  modalities `gap_m = mean_{m': s_m' < s_m} (s_m - s_m')` (two modalities: `s_a - s_v` for the
  stronger, none for the weaker);
- regulation coefficient `beta_m = mu * exp(tanh(gap_m))` for each m with a weaker modality whose
  window is open (else 0);
- regulation (decoupled, ours): right after `optimizer.step()`, `theta <- theta - lr * beta_m *
  (theta - theta_anchor)` for every parameter of encoder m (`lr`: its parameter group's). The paper
  adds `beta/2 * |theta - theta_anchor|^2` to the loss; its gradient `beta * (theta - theta_anchor)`
  under SGD is exactly this step, and applied once per optimizer step it neither scales with the
  number of accumulated micro-batches nor reaches Adam's moments. The anchor is the encoder's
  parameters at the start of the period.

Everything is computed from all-reduced statistics, so identical on every process and the same with
gradient accumulation as with the big batch. A step the fp16 GradScaler skips changes nothing. What
is the paper's and what is ours: docs/methods/inforeg.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

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

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class InfoRegConfig:
    """InfoReg's hyperparameters (`modulation_kwargs`); defaults: the reference code's (CREMA-D)."""

    mu: float = field(
        default=0.95,
        metadata={
            "help": "Strength in `beta = mu * exp(tanh(gap))` (the reference: 0.95 for its dominant audio)."
        },
    )
    threshold: float = field(
        default=0.05, metadata={"help": "The prime learning window is open while the acquisition rate `k` exceeds it."}
    )
    window: int = field(
        default=10,
        metadata={
            "help": "Periods averaged on each side of the acquisition rate (the reference: 10 epochs)."
        },
    )
    period: float = field(
        default=0.02,
        metadata={
            "help": "Optimizer steps per period (the paper's epoch): < 1 a fraction of all steps (0.02: one epoch "
            "of the reference's 50), >= 1 a number of steps; at least one step (ours)."
        },
    )

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"inforeg's mu must be >= 0, got {self.mu}.")
        if self.window < 1:
            raise ValueError(f"inforeg's window must be >= 1, got {self.window}.")
        if self.period <= 0:
            raise ValueError(f"inforeg's period must be > 0, got {self.period}.")


def fisher_trace(grads: list[torch.Tensor]) -> torch.Tensor:
    """The information measure of one encoder: `sum_W mean(g_W^2)` over its weights' gradients."""
    if not grads:
        return torch.zeros(())
    return torch.stack([g.float().pow(2).mean() for g in grads]).sum()


def acquisition_rates(history: torch.Tensor, window: int) -> torch.Tensor:
    """Per modality `(mean(h[-window:]) - mean(h[-window-1:-1])) / mean(h[-window:])` for a
    `(periods, modalities)` history of Fisher traces; 1 before any period (the window is open at the
    start, as in the reference), 0 where the recent traces are all zero."""
    if history.shape[0] <= window:  # only the leading zeros
        return torch.ones(history.shape[1], dtype=history.dtype)
    recent, before = history[-window:].mean(0), history[-window - 1 : -1].mean(0)
    return torch.where(recent > 0, (recent - before) / recent.clamp(min=1e-30), torch.zeros_like(recent))


def regulation_coefficients(
    scores: torch.Tensor, rates: torch.Tensor, mu: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaps `mean_{m': s_m' < s_m} (s_m - s_m')` (0 without a weaker modality) and coefficients
    `mu * exp(tanh(gap_m))` where m has a weaker modality and `rate_m > threshold`, else 0."""
    diff = scores[:, None] - scores[None, :]
    weaker = diff > 0
    count = weaker.sum(1)
    gaps = torch.where(count > 0, (diff * weaker).sum(1) / count.clamp(min=1), torch.zeros_like(scores))
    regulated = (count > 0) & (rates > threshold)
    return gaps, torch.where(regulated, mu * torch.exp(torch.tanh(gaps)), torch.zeros_like(gaps))


class InfoReg(Modulation):
    name = "inforeg"
    label = "InfoReg"
    title = "InfoReg (Information Acquisition Regulation)"
    paper = Paper(
        "Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition", "CVPR 2025",
        "https://arxiv.org/abs/2503.18595",
    )
    citation = """@inproceedings{huang2025adaptive,
  title     = {Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition},
  author    = {Huang, Chengxiang and Wei, Yake and Yang, Zequn and Hu, Di},
  booktitle = {Proceedings of the Computer Vision and Pattern Recognition Conference (CVPR)},
  pages     = {25854--25863},
  year      = {2025}
}"""
    metric_prefix = "inforeg"
    metrics = (
        Metric("inforeg/active", "1 inside the modulation window"),
        Metric("inforeg/score/<m>", "mean true-class probability of m's share of the fused logits"),
        Metric("inforeg/gap/<m>", "m's mean score gap over the weaker modalities"),
        Metric("inforeg/trace/<m>", "this step's Fisher trace of encoder m"),
        Metric("inforeg/rate/<m>", "m's acquisition rate k (the prime learning window is open above the threshold)"),
        Metric("inforeg/coeff/<m>", "the pull beta on encoder m in this step (0: none)"),
    )
    default_start = 0.0
    Config = InfoRegConfig
    reads_gradients = True  # the Fisher trace and the overflow check read `.grad`

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        self.anchors = EncoderAnchors(model, self.modalities)
        self._weights = {
            m: [
                mod.weight
                for mod in model.encoders[m].modules()
                if isinstance(mod, _WEIGHTED) and mod.weight.requires_grad
            ]
            for m in self.modalities
        }
        num = len(self.modalities)
        # State: the per-period Fisher traces (led by `window` zeros, as the reference's lists), and
        # the sum and number of step traces of the period under way.
        self.history = torch.zeros(self.config.window, num, dtype=torch.float64)
        self.trace_sum = torch.zeros(num, dtype=torch.float64)
        self.trace_steps = 0
        self._sums = StepSums()  # per-modality true-class probability sums, then the sample count
        self._coeffs: dict[str, float] = {}  # the pull of the step under way, for on_optimizer_step

    def on_forward_end(self, ctx: HookContext) -> None:
        outputs, labels = ctx.outputs, ctx.labels
        losses = unimodal_cross_entropies(outputs, self.modalities, labels)
        with torch.no_grad():
            sums = [true_class_probabilities(outputs.modality_logits[m], labels).sum() for m in self.modalities]
            self._sums.add(with_sample_count(sums, labels))
        ctx.add_loss(losses.sum())

    def _traces(self, grad_scale: float | None) -> torch.Tensor:
        """This step's Fisher trace of each encoder, from the unscaled gradients."""
        traces = torch.stack(
            [fisher_trace([w.grad for w in self._weights[m] if w.grad is not None]).cpu() for m in self.modalities]
        ).double()
        return traces / grad_scale**2 if grad_scale is not None else traces

    def on_gradients_ready(self, ctx: HookContext) -> None:
        self._coeffs = {}
        totals = self._sums.reduce_unless_skipped(ctx.model, ctx.grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: the state stays as it was
            return
        totals = totals.double().cpu()
        traces = self._traces(ctx.grad_scale)
        if self.anchors.refresh_due(ctx.step, max(1, resolve_step(self.config.period, ctx.max_steps))):
            if self.trace_steps:
                self.history = torch.cat([self.history, (self.trace_sum / self.trace_steps)[None]])
            self.trace_sum, self.trace_steps = torch.zeros_like(self.trace_sum), 0
        self.trace_sum = self.trace_sum + traces
        self.trace_steps += 1
        rates = acquisition_rates(self.history, self.config.window)
        scores = totals[:-1]
        gaps, coeffs = regulation_coefficients(scores, rates, self.config.mu, self.config.threshold)
        active = self.is_active(ctx.step, ctx.max_steps)
        if active:
            self._coeffs = {m: c for m, c in zip(self.modalities, coeffs.tolist()) if c > 0}
        metrics = {"inforeg/active": float(active)}
        for i, m in enumerate(self.modalities):
            metrics[f"inforeg/score/{m}"] = (scores[i] / totals[-1]).item()
            metrics[f"inforeg/gap/{m}"] = gaps[i].item()
            metrics[f"inforeg/trace/{m}"] = traces[i].item()
            metrics[f"inforeg/rate/{m}"] = rates[i].item()
            metrics[f"inforeg/coeff/{m}"] = self._coeffs.get(m, 0.0)
        ctx.log(metrics)

    def on_optimizer_step(self, ctx: HookContext) -> None:
        if self._coeffs:
            self.anchors.pull(ctx.optimizer, self._coeffs)
        self._coeffs = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "anchors": self.anchors.state_dict(),
            "history": self.history.clone(),
            "trace_sum": self.trace_sum.clone(),
            "trace_steps": self.trace_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors.load_state_dict(state["anchors"])
        self.history, self.trace_sum = state["history"].clone(), state["trace_sum"].clone()
        self.trace_steps = state["trace_steps"]

