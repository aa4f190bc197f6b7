"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023).

Each modality keeps one prototype per class in its final feature space, the class centroids of the
pooled features. The prototypical cross-entropy (PCE) of modality m is the cross-entropy of the
logits `-|f^m - c^m_k|^2` (negative squared distance to each class prototype). Per optimizer step:

- prototypes: an EMA (`momentum`) of the class means of the detached features over the step's
  micro-batches and all processes; they are used once every class has one, for every modality;
- score: the mean prototype probability of the true class, `softmax(-|f^m - c^m|^2)[y]`; ratio
  `rho_m` against the other modalities (`s_a / s_b` for two, the mean of the others for more);
- coefficients for the next step: a weak modality (`rho_m < 1`) gets `beta_m = tanh(alpha *
  (1 / rho_m - 1))` on its PCE, which speeds its encoder up; a dominant one (`rho_m > 1`), with the
  prototype entropy regulariser on, gets `mu_m = tanh(alpha * (rho_m - 1))` on minus the entropy of
  its prototype probabilities, which slows it down;
- loss: `L = L_model + sum_m beta_m * PCE_m - sum_m mu_m * H(softmax(-|f^m - c^m|^2))`.

All statistics are reduced across processes before they decide anything, so every process holds
the same prototypes and coefficients. Which parts are the paper's: docs/methods/pmr.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation, Paper
from .mechanics import StepSums, discrepancy_ratios, with_sample_count


@dataclass
class PMRConfig:
    """PMR's hyperparameters (`modulation_kwargs`); defaults: BalanceBenchmark's PMR configuration."""

    alpha: float = field(
        default=0.6,
        metadata={
            "help": "Strength in `beta = tanh(alpha * (1 / rho - 1))` and `mu = tanh(alpha * (rho - 1))`."
        },
    )
    momentum: float = field(
        default=0.5,
        metadata={
            "help": "EMA momentum of the prototypes (the share of the old prototype kept at each step)."
        },
    )
    entropy_regularizer: bool = field(
        default=True, metadata={"help": "Add the prototype entropy regulariser for the dominant modality."}
    )

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"pmr's alpha must be >= 0, got {self.alpha}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"pmr's momentum must lie in [0, 1), got {self.momentum}.")


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """`-|f_i - c_k|^2` for features `(batch, dim)` and prototypes `(classes, dim)`."""
    return -torch.cdist(features.float(), prototypes.float()).pow(2)


def pmr_coefficients(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ratios, PCE weights `beta` (weak modalities) and entropy weights `mu` (dominant modalities)
    for a 1-D tensor of per-modality prototype scores."""
    ratios = discrepancy_ratios(scores)
    zero = torch.zeros_like(ratios)
    beta = torch.where(ratios < 1, torch.tanh(alpha * (1 / ratios.clamp(min=1e-12) - 1)), zero)
    mu = torch.where(ratios > 1, torch.tanh(alpha * (ratios - 1)), zero)
    return ratios, beta, mu


class PMR(Modulation):
    name = "pmr"
    label = "PMR"
    title = "PMR (Prototypical Modal Rebalance)"
    paper = Paper(
        "PMR: Prototypical Modal Rebalance for Multimodal Learning", "CVPR 2023", "https://arxiv.org/abs/2211.07089"
    )
    citation = """@inproceedings{fan2023pmr,
  title     = {{PMR}: Prototypical Modal Rebalance for Multimodal Learning},
  author    = {Fan, Yunfeng and Xu, Wenchao and Wang, Haozhao and Wang, Junxiao and Guo, Song},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {20029--20038},
  year      = {2023}
}"""
    metric_prefix = "pmr"
    metrics = (
        Metric("pmr/active", "1 when the next step's coefficients are on (once every class has a prototype)"),
        Metric("pmr/score/<m>", "mean prototype probability of the true class"),
        Metric("pmr/ratio/<m>", "m's score over the others' (rho)"),
        Metric("pmr/beta/<m>", "the weight of m's prototypical cross-entropy in the next step (weak modalities)"),
        Metric("pmr/mu/<m>", "the weight of m's prototype entropy regulariser in the next step (dominant modalities)"),
    )
    # The reference's runs modulate until epoch 70 of 130 (docs/methods/pmr.md).
    default_start = 0.0
    default_end = 0.54
    Config = PMRConfig

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        self.num_labels = model.config.num_labels
        self.dims = {m: model.probes[m].in_features for m in self.modalities}
        # State: per modality the prototypes (classes, dim) and which classes have one; the weights.
        self.prototypes = {m: torch.zeros(self.num_labels, d) for m, d in self.dims.items()}
        self.seen = {m: torch.zeros(self.num_labels, dtype=torch.bool) for m in self.modalities}
        self.beta = torch.zeros(len(self.modalities))
        self.mu = torch.zeros(len(self.modalities))
        # Flat per step: each modality's class sums and counts, then the score sums and the sample count.
        self._stats = StepSums()

    def _ready(self) -> bool:
        """Whether every modality has a prototype for every class."""
        return all(bool(seen.all()) for seen in self.seen.values())

    def on_forward_end(self, ctx: HookContext) -> None:
        outputs, labels = ctx.outputs, ctx.labels
        features = {m: outputs.depth_features[m][-1] for m in self.modalities}
        one_hot = F.one_hot(labels, self.num_labels).float()
        parts = []
        for m in self.modalities:
            parts += [(one_hot.T @ features[m].detach().float()).reshape(-1), one_hot.sum(0)]
        scores = torch.zeros(len(self.modalities), device=labels.device)
        if self._ready():
            terms = []
            for i, m in enumerate(self.modalities):
                log_probs = prototype_logits(features[m], self.prototypes[m].to(labels.device)).log_softmax(-1)
                probs = log_probs.exp()
                scores[i] = probs.detach().gather(1, labels[:, None]).sum()
                entropy = -(probs * log_probs).sum(-1).mean()
                terms.append(self.beta[i].item() * F.nll_loss(log_probs, labels) - self.mu[i].item() * entropy)
            ctx.add_loss(sum(terms))
        self._stats.add(with_sample_count([*parts, scores], labels))

    def on_gradients_ready(self, ctx: HookContext) -> None:
        totals = self._stats.reduce_unless_skipped(ctx.model, ctx.grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: the state stays as it was
            return
        totals = totals.cpu()
        num, k = len(self.modalities), self.num_labels
        metrics: dict[str, float] = {}
        if self._ready():  # this step's scores were taken with the prototypes it started with
            scores = totals[-1 - num : -1] / totals[-1]
            ratios, beta, mu = pmr_coefficients(scores, self.config.alpha)
            if not self.config.entropy_regularizer:
                mu = torch.zeros_like(mu)
            active = self.is_active(ctx.step + 1, ctx.max_steps)
            self.beta, self.mu = (beta, mu) if active else (torch.zeros(num), torch.zeros(num))
            metrics["pmr/active"] = float(active)
            for i, m in enumerate(self.modalities):
                metrics[f"pmr/score/{m}"] = scores[i].item()
                metrics[f"pmr/ratio/{m}"] = ratios[i].item()
                metrics[f"pmr/beta/{m}"] = self.beta[i].item()
                metrics[f"pmr/mu/{m}"] = self.mu[i].item()
        offset, mom = 0, self.config.momentum
        for m in self.modalities:
            size = k * self.dims[m]
            sums, counts = totals[offset : offset + size].view(k, -1), totals[offset + size : offset + size + k]
            offset += size + k
            present = counts > 0
            means = sums / counts.clamp(min=1)[:, None]
            # EMA for the classes that have a prototype; a class seen for the first time takes its mean.
            blended = torch.where(self.seen[m][:, None], mom * self.prototypes[m] + (1 - mom) * means, means)
            self.prototypes[m] = torch.where(present[:, None], blended, self.prototypes[m])
            self.seen[m] = self.seen[m] | present
        ctx.log(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {
            "prototypes": {m: p.clone() for m, p in self.prototypes.items()},
            "seen": {m: s.clone() for m, s in self.seen.items()},
            "beta": self.beta.clone(),
            "mu": self.mu.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prototypes = {m: p.clone() for m, p in state["prototypes"].items()}
        self.seen = {m: s.clone() for m, s in state["seen"].items()}
        self.beta, self.mu = state["beta"].clone(), state["mu"].clone()
