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

    def step(self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float = 1.0) -> dict[str, float]:
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
        generators: dict[torch.device, torch.Generator] = {}
        for i, m in enumerate(self.modalities):
            k = coeffs[i].item()
            for p in model.encoders[m].parameters():
                if p.grad is None or (self.args.ogm_conv_only and p.grad.dim() != 4):
                    continue
                if k != 1.0:
                    p.grad.mul_(k)
                if self.args.ogm_noise and p.grad.numel() > 1:
                    gen = generators.get(p.grad.device)
                    if gen is None:
                        gen = generators[p.grad.device] = torch.Generator(device=p.grad.device)
                        gen.manual_seed(self.args.seed * 1_000_003 + global_step)
                    # Non-finite gradients (an fp16 overflow) make the noise non-finite too; the
                    # GradScaler then skips the step, as it would have anyway.
                    std = p.grad.float().std()
                    noise = torch.randn(p.grad.shape, generator=gen, device=p.grad.device, dtype=torch.float32)
                    p.grad.add_((noise * (std + 1e-8)).to(p.grad.dtype))
