"""OGM-GE: on-the-fly gradient modulation with generalization enhancement (Peng et al., CVPR 2022).

Per optimizer step: each modality's score is the summed softmax probability of the true class under
its additive share of the fused logits; the ratio compares it with the other modalities (for two,
`s_a / s_b`; for more, the mean of the others, our documented choice). The dominant modality (`rho >
1`) gets `k = 1 - tanh(alpha * rho)`, the others 1. Scores are summed over the step's micro-batches
and all processes.

Hyperparameters: `OGMGE.Config` (`modulation_kwargs`). `mode` says what k multiplies:

- `"gradient"` (the reference, which trains with SGD): the dominant encoder's gradients;
- `"update"` (ours): the dominant encoder's update for this step, through the learning rate of its
  optimizer parameter groups. An adaptive optimizer (Adam, ...) divides each update by the
  gradient's own scale and so cancels a gradient factor; a learning-rate factor it cannot cancel;
- `"auto"` (default): "update" under an adaptive optimizer, else "gradient", decided by the optimizer
  the trainer builds (before that, and without a trainer, "gradient").

With GE (`noise`) every encoder gradient `g` (the reference: both modalities') becomes
`k * g + N(0, (noise_scale * std(g))^2)`, the std taken before scaling as in the reference
(`k = 1` in update mode). The noise comes from a generator seeded by (seed, step), so every process
adds the same noise. `noise=False` is plain OGM, as the TPAMI 2024 extension ("On-the-fly
Modulation for Balanced Multimodal Learning") names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation, Paper, Summary
from .mechanics import StepSums, choose_scaling_mode, discrepancy_ratios, true_class_probabilities, with_sample_count

# GE's noise std as a multiple of the gradient's std, per mode, when `noise_scale` is None. Under
# Adam, noise as large as the gradient's own spread swamps its signal, so update mode uses a tenth
# (our choice, untuned).
DEFAULT_NOISE_SCALE = {"gradient": 1.0, "update": 0.1}


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ratios (`discrepancy_ratios`) and coefficients `1 - tanh(alpha * rho)` where `rho > 1`, else 1,
    for a 1-D tensor of per-modality scores."""
    ratios = discrepancy_ratios(scores)
    coeffs = torch.where(ratios > 1, 1 - torch.tanh(alpha * ratios), torch.ones_like(ratios))
    return ratios, coeffs


@dataclass
class OGMGEConfig:
    """OGM-GE's hyperparameters (`modulation_kwargs`); defaults: the reference code's, except where marked."""

    alpha: float = field(default=0.8, metadata={"help": "alpha in k = 1 - tanh(alpha * rho)."})
    noise: bool = field(
        default=True,
        metadata={
            "help": "GE: add Gaussian noise scaled by each gradient's std; False gives plain OGM (TPAMI 2024)."
        },
    )
    mode: Literal["auto", "gradient", "update"] = field(
        default="auto",
        metadata={
            "help": "What k scales: 'gradient' (the reference, for SGD), 'update' (the encoder's learning rate for "
            "the step; ours, since Adam cancels a gradient factor), 'auto' ('update' under an adaptive optimizer)."
        },
    )
    noise_scale: float | None = field(
        default=None,
        metadata={
            "help": "GE's noise std as a multiple of the gradient's std; None: 1.0 (the reference) in gradient "
            "mode, 0.1 in update mode (ours, untuned)."
        },
    )
    conv_only: bool = field(
        default=False,
        metadata={
            "help": "Modulate only 4-D (convolution) gradients, as the reference does (which leaves a transformer "
            "untouched); the default (ours) modulates every encoder parameter."
        },
    )

    def __post_init__(self) -> None:
        if self.noise_scale is not None and self.noise_scale < 0:
            raise ValueError(f"ogm_ge's noise_scale must be >= 0, got {self.noise_scale}.")


class OGMGE(Modulation):
    name = "ogm_ge"
    label = "OGM-GE"
    title = "OGM-GE (On-the-fly Gradient Modulation with Generalization Enhancement)"
    paper = Paper(
        "Balanced Multimodal Learning via On-the-fly Gradient Modulation", "CVPR 2022",
        "https://arxiv.org/abs/2203.15332",
    )
    citation = """@inproceedings{peng2022balanced,
  title     = {Balanced Multimodal Learning via On-the-fly Gradient Modulation},
  author    = {Peng, Xiaokang and Wei, Yake and Deng, Andong and Wang, Dong and Hu, Di},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {8238--8247},
  year      = {2022}
}"""
    metric_prefix = "ogm"
    metrics = (
        Metric("ogm/active", "1 inside the modulation window"),
        Metric("ogm/score/<m>", "mean true-class probability of m's share of the fused logits"),
        Metric("ogm/ratio/<m>", "m's score over the others' (rho)"),
        Metric("ogm/coeff/<m>", "the coefficient k on m's gradient or update (1 outside the window)"),
    )
    summary = Summary("ogm/coeff", "min", "k")
    # The reference modulates epochs 0-50 of 100 (docs/methods/ogm_ge.md).
    default_start = 0.0
    default_end = 0.5
    Config = OGMGEConfig
    reads_gradients = True

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        self._scores = StepSums()  # per-modality sums of the true-class probability, then the sample count
        self.mode = "gradient" if self.config.mode == "auto" else self.config.mode

    @property
    def noise_scale(self) -> float:
        """GE's noise std as a multiple of each gradient's std, in the current mode."""
        scale = self.config.noise_scale
        return DEFAULT_NOISE_SCALE[self.mode] if scale is None else scale

    def on_train_begin(self, ctx: HookContext) -> None:
        self.mode, warning = choose_scaling_mode(self.name, self.config.mode, ctx.optimizer, self.modalities)
        if warning:
            ctx.warn(warning)

    def on_forward_end(self, ctx: HookContext) -> None:
        with torch.no_grad():
            sums = [true_class_probabilities(ctx.outputs.modality_logits[m], ctx.labels).sum() for m in self.modalities]
            self._scores.add(with_sample_count(sums, ctx.labels))

    def on_gradients_ready(self, ctx: HookContext) -> None:
        totals = self._scores.reduce()
        if totals is None:
            return
        scores = totals[:-1] / totals[-1]
        ratios, coeffs = ogm_coefficients(scores, self.config.alpha)
        active = self.is_active(ctx.step, ctx.max_steps)
        if active:
            ks = coeffs.tolist()
            if self.mode == "update":
                for m, k in zip(self.modalities, ks):
                    if k != 1.0:
                        ctx.scale_lr(m, k)
                ks = [1.0] * len(ks)
            self._modulate(ctx.model, ks, ctx.step_seed)
        metrics = {"ogm/active": float(active)}
        for i, m in enumerate(self.modalities):
            metrics[f"ogm/score/{m}"] = scores[i].item()
            metrics[f"ogm/ratio/{m}"] = ratios[i].item()
            metrics[f"ogm/coeff/{m}"] = coeffs[i].item() if active else 1.0
        ctx.log(metrics)

    @torch.no_grad()
    def _modulate(self, model: MultimodalModel, coeffs: list[float], seed: int) -> None:
        """Multiply each modality's encoder gradients by its coefficient and, with GE, add the noise
        (drawn from a generator seeded by `seed`, the step's `HookContext.step_seed`)."""
        if not self.config.noise and all(k == 1.0 for k in coeffs):
            return
        noisy: dict[torch.device, tuple[list[torch.Tensor], list[float]]] = {}
        for m, k in zip(self.modalities, coeffs):
            scaled = []
            for p in model.encoders[m].parameters():
                g = p.grad
                if g is None or (self.config.conv_only and g.dim() != 4):
                    continue
                if self.config.noise and g.numel() > 1:  # the std of one value is undefined
                    grads, scales = noisy.setdefault(g.device, ([], []))
                    grads.append(g)
                    scales.append(k)
                elif k != 1.0:
                    scaled.append(g)
            if scaled:
                torch._foreach_mul_(scaled, k)
        for device, (grads, scales) in noisy.items():
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
            add_gradient_noise(grads, generator, scales, self.noise_scale)


# Gradients are noised in chunks of about this many elements: few calls for small encoders, and
# temporary buffers (about 32 bytes per element) that do not grow with the model.
NOISE_CHUNK = 1 << 18


def add_gradient_noise(
    grads: list[torch.Tensor], generator: torch.Generator, scales: list[float] | None = None, noise_scale: float = 1.0
) -> None:
    """Replace each gradient `g` (of more than one element) in place by `scale * g + N(0, sigma^2)`,
    `sigma = noise_scale * (std(g) + 1e-8)` with the std of `g` before scaling (as the reference
    computes it); `scales` default to 1. A chunk of consecutive gradients is done at a time (a
    gradient larger than `NOISE_CHUNK` alone). Non-finite gradients (an fp16 overflow) make the noise
    non-finite too; the GradScaler then skips the step, as it would have anyway. All gradients share
    one device."""
    scales = [1.0] * len(grads) if scales is None else scales
    start = 0
    while start < len(grads):
        end, total = start + 1, grads[start].numel()
        while end < len(grads) and total + grads[end].numel() <= NOISE_CHUNK:
            total += grads[end].numel()
            end += 1
        if end - start == 1:
            g = grads[start]
            sigma = noise_scale * (g.float().std() + 1e-8)
            noise = torch.randn(g.shape, generator=generator, device=g.device).mul_(sigma)
            g.mul_(scales[start]).add_(noise)
        else:
            _add_noise_batched(grads[start:end], generator, scales[start:end], noise_scale)
        start = end


def _add_noise_batched(
    grads: list[torch.Tensor], generator: torch.Generator, scales: list[float], noise_scale: float
) -> None:
    """`add_gradient_noise` for many small gradients with one draw and a few whole-buffer operations
    (a loop over tensors costs more than the arithmetic at small sizes)."""
    sizes = [g.numel() for g in grads]
    flat = torch.cat([g.reshape(-1) for g in grads]).float()
    # Per-tensor sums of x and x^2 from running sums (in float64, so that the one-pass variance is
    # exact enough), read at each tensor's end.
    ends = torch.tensor(sizes, device=flat.device).cumsum(0) - 1
    sums = flat.cumsum(0, dtype=torch.float64)[ends]
    squares = (flat * flat).cumsum(0, dtype=torch.float64)[ends]
    sums, squares = sums.diff(prepend=sums.new_zeros(1)), squares.diff(prepend=squares.new_zeros(1))
    counts = torch.tensor(sizes, device=flat.device, dtype=torch.float64)
    stds = ((squares - sums * sums / counts).clamp(min=0) / (counts - 1)).sqrt() + 1e-8
    noise = torch.randn(flat.shape, generator=generator, device=flat.device)
    noise *= (noise_scale * stds.float()).repeat_interleave(counts.long(), output_size=flat.numel())
    if any(k != 1.0 for k in scales):
        torch._foreach_mul_(grads, scales)
    torch._foreach_add_(grads, [piece.view_as(g) for piece, g in zip(noise.split(sizes), grads)])
