"""OGM-GE: on-the-fly gradient modulation with generalization enhancement (Peng et al., CVPR 2022).

Per optimizer step: each modality's score is the summed softmax probability of the true class under
its additive share of the fused logits; the ratio compares it with the other modalities (for two,
`s_a / s_b`; for more, the mean of the others, our documented choice). The dominant modality's
encoder gradients are multiplied by `k = 1 - tanh(alpha * rho)` where `rho > 1` (else `k = 1`), and,
with GE, every modulated encoder gradient gets Gaussian noise `N(0, std(grad))`, as the reference code
does. Scores are summed over the step's micro-batches and all processes; the noise comes from a
generator seeded by (seed, step), so every process adds the same noise.
"""

from __future__ import annotations

import torch

from ..modeling import MultimodalModel, MultimodalOutput
from .base import Modulation, all_reduce_sum


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ratios `rho_m = s_m / mean_{m' != m} s_m'` and coefficients `1 - tanh(alpha * rho)` where
    `rho > 1`, else 1, for a 1-D tensor of per-modality scores."""
    num = scores.numel()
    others = (scores.sum() - scores) / (num - 1)
    ratios = scores / others.clamp(min=1e-12)
    coeffs = torch.where(ratios > 1, 1 - torch.tanh(alpha * ratios), torch.ones_like(ratios))
    return ratios, coeffs


class OGMGE(Modulation):
    name = "ogm_ge"
    default_start = 0.0

    def __init__(self, model: MultimodalModel, args) -> None:
        super().__init__(model, args)
        self._scores = None  # per-modality sums of the true-class probability, then the sample count

    def compute_loss(self, outputs: MultimodalOutput, labels: torch.Tensor) -> None:
        with torch.no_grad():
            sums = [
                outputs.modality_logits[m].float().softmax(-1).gather(1, labels[:, None]).sum()
                for m in self.modalities
            ]
            batch = torch.stack(sums + [torch.tensor(float(labels.shape[0]), device=labels.device)])
        self._scores = batch if self._scores is None else self._scores + batch
        return None

    def step(
        self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float | None = None
    ) -> dict[str, float]:
        if self._scores is None:
            return {}
        totals = all_reduce_sum(self._scores)
        self._scores = None
        scores = totals[:-1] / totals[-1]
        ratios, coeffs = ogm_coefficients(scores, self.args.ogm_alpha)
        active = self.is_active(global_step, max_steps)
        if active:
            self._modulate(model, coeffs, global_step)
        metrics = {"ogm/active": float(active)}
        for i, m in enumerate(self.modalities):
            metrics[f"ogm/score/{m}"] = scores[i].item()
            metrics[f"ogm/ratio/{m}"] = ratios[i].item()
            metrics[f"ogm/coeff/{m}"] = coeffs[i].item() if active else 1.0
        return metrics

    @torch.no_grad()
    def _modulate(self, model: MultimodalModel, coeffs: torch.Tensor, global_step: int) -> None:
        noisy: dict[torch.device, list[torch.Tensor]] = {}
        for i, m in enumerate(self.modalities):
            grads = [
                p.grad
                for p in model.encoders[m].parameters()
                if p.grad is not None and (not self.args.ogm_conv_only or p.grad.dim() == 4)
            ]
            k = coeffs[i].item()
            if grads and k != 1.0:
                torch._foreach_mul_(grads, k)
            for g in grads:
                if g.numel() > 1:  # the std of one value is undefined
                    noisy.setdefault(g.device, []).append(g)
        if self.args.ogm_noise:
            for device, grads in noisy.items():
                generator = torch.Generator(device=device)
                generator.manual_seed(self.args.seed * 1_000_003 + global_step)
                add_gradient_noise(grads, generator)


# Gradients are noised in chunks of about this many elements: few calls for small encoders, and
# temporary buffers (about 32 bytes per element) that do not grow with the model.
NOISE_CHUNK = 1 << 18


def add_gradient_noise(grads: list[torch.Tensor], generator: torch.Generator) -> None:
    """Add `N(0, std(g) + 1e-8)` noise to each gradient `g` (of more than one element) in place, a
    chunk of consecutive gradients at a time (a gradient larger than `NOISE_CHUNK` alone).
    Non-finite gradients (an fp16 overflow) make the noise non-finite too; the GradScaler then skips
    the step, as it would have anyway. All gradients share one device."""
    start = 0
    while start < len(grads):
        end, total = start + 1, grads[start].numel()
        while end < len(grads) and total + grads[end].numel() <= NOISE_CHUNK:
            total += grads[end].numel()
            end += 1
        if end - start == 1:
            g = grads[start]
            g.add_(torch.randn(g.shape, generator=generator, device=g.device).mul_(g.float().std() + 1e-8))
        else:
            _add_noise_batched(grads[start:end], generator)
        start = end


def _add_noise_batched(grads: list[torch.Tensor], generator: torch.Generator) -> None:
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
    noise *= stds.float().repeat_interleave(counts.long(), output_size=flat.numel())
    torch._foreach_add_(grads, [piece.view_as(g) for piece, g in zip(noise.split(sizes), grads)])
