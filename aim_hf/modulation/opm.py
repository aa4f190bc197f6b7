"""OPM: on-the-fly prediction modulation (Wei, Hu et al., "On-the-fly Modulation for Balanced
Multimodal Learning", TPAMI 2024, the extension of OGM-GE).

In the forward pass OPM drops the dominant modality's feature for a random part of the samples,
so that the fused prediction leans on the other modalities. Per optimizer step:

- each modality's score is the mean softmax probability of the true class under its additive share
  of the fused logits (as OGM-GE scores it), over the step's samples in which that modality was not
  dropped, summed over the micro-batches and all processes;
- the discrepancy ratio `rho_m` compares it with the other modalities (`s_a / s_b` for two; the mean
  of the others for more, as in OGM-GE);
- the drop probability of the next step is `q_m = q_base * (1 + lam * tanh(rho_m - 1))` where
  `rho_m > 1`, else 0, clipped to [0, 1];
- in each training micro-batch of that step, sample i's feature of modality m enters the fusion
  multiplied by 0 with probability `q_m` (an independent Bernoulli draw per sample and modality),
  through the model's `feature_keep`. Inference never drops.

The draws come from a generator seeded by (seed, step), indexed by the sample's position in the
step's global batch (micro-batch, process, row), so that a run with gradient accumulation or on
several processes drops exactly the samples the same global batch drops on one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..modeling import MultimodalModel
from .base import HookContext, Metric, Modulation, Paper
from .mechanics import StepSums, discrepancy_ratios, true_class_probabilities, with_sample_count


@dataclass
class OPMConfig:
    """OPM's hyperparameters (`modulation_kwargs`). The values are ours (the reference's defaults were
    not checked): see docs/methods/opm.md."""

    q_base: float = field(
        default=0.5,
        metadata={
            "help": "Drop probability of a dominant modality at `rho = 1` (the base of the formula)."
        },
    )
    lam: float = field(
        default=0.5,
        metadata={
            "help": "How fast the drop probability grows with the imbalance: `q_base * (1 + lam * tanh(rho - 1))`."
        },
    )

    def __post_init__(self) -> None:
        if not 0 <= self.q_base <= 1:
            raise ValueError(f"opm's q_base must lie in [0, 1], got {self.q_base}.")
        if self.lam < 0:
            raise ValueError(f"opm's lam must be >= 0, got {self.lam}.")


def drop_probabilities(scores: torch.Tensor, q_base: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ratios and drop probabilities `q_base * (1 + lam * tanh(rho - 1))` where `rho > 1`, else 0
    (clipped to [0, 1]), for a 1-D tensor of per-modality scores."""
    ratios = discrepancy_ratios(scores)
    probs = (q_base * (1 + lam * torch.tanh(ratios - 1))).clamp(0, 1)
    return ratios, torch.where(ratios > 1, probs, torch.zeros_like(probs))


class OPM(Modulation):
    name = "opm"
    label = "OPM"
    title = "OPM (On-the-fly Prediction Modulation)"
    paper = Paper(
        "On-the-fly Modulation for Balanced Multimodal Learning", "IEEE TPAMI 2025",
        "https://arxiv.org/abs/2410.11582",
    )
    citation = """@article{wei2025onthefly,
  title   = {On-the-fly Modulation for Balanced Multimodal Learning},
  author  = {Wei, Yake and Hu, Di and Du, Henghui and Wen, Ji-Rong},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume  = {47},
  number  = {1},
  pages   = {469--485},
  year    = {2025}
}"""
    metric_prefix = "opm"
    metrics = (
        Metric("opm/active", "1 when the next step's drops are on"),
        Metric("opm/score/<m>", "mean true-class probability of m's share, over the samples that kept m"),
        Metric("opm/ratio/<m>", "m's score over the others' (rho)"),
        Metric("opm/drop_prob/<m>", "the probability of dropping m's feature in the next step"),
        Metric("opm/dropped/<m>", "the share of this step's samples whose m feature was dropped"),
    )
    # The reference drops nothing in its warm-up, epochs 0-5 of 100 (docs/methods/opm.md).
    default_start = 0.06
    Config = OPMConfig
    forward_arguments = ("feature_keep",)

    def __init__(self, model: MultimodalModel, *args: Any) -> None:
        super().__init__(model, *args)
        # Drop probability per modality for the coming step (state: it decides the next step's draws).
        self.drop_prob = torch.zeros(len(self.modalities))
        self._sums = StepSums()  # per modality: score sums, kept counts; then the sample count
        self._keep: dict[str, torch.Tensor] | None = None

    def on_micro_batch_begin(self, ctx: HookContext) -> None:
        self._keep = None
        if not bool((self.drop_prob > 0).any()):
            return
        # The step's draws for its global batch's rows up to this micro-batch's last, of which this
        # micro-batch takes its own: a sample's draw depends on its place in the global batch only.
        offset = ctx.first_example
        generator = torch.Generator().manual_seed(ctx.step_seed)
        uniform = torch.rand(offset + ctx.labels.shape[0], len(self.modalities), generator=generator)[offset:]
        device = next(self.model.parameters()).device
        self._keep = {
            m: (uniform[:, i] >= self.drop_prob[i]).float().to(device)
            for i, m in enumerate(self.modalities)
            if self.drop_prob[i] > 0
        }
        ctx.pass_to_forward(feature_keep=self._keep)

    def on_forward_end(self, ctx: HookContext) -> None:
        with torch.no_grad():
            sums, counts = [], []
            for m in self.modalities:
                p = true_class_probabilities(ctx.outputs.modality_logits[m], ctx.labels)
                keep = self._keep[m] if self._keep and m in self._keep else torch.ones_like(p)
                sums.append((p * keep).sum())
                counts.append(keep.sum())
            self._sums.add(with_sample_count(sums + counts, ctx.labels))

    def on_gradients_ready(self, ctx: HookContext) -> None:
        totals = self._sums.reduce_unless_skipped(ctx.model, ctx.grad_scale)
        if totals is None:  # nothing added, or a step the GradScaler skips: the state stays as it was
            return
        num = len(self.modalities)
        sums, kept, count = totals[:num], totals[num : 2 * num], totals[-1]
        if bool((kept == 0).any()):  # a modality dropped from every sample has no score this step
            return
        scores = sums / kept
        ratios, probs = drop_probabilities(scores, self.config.q_base, self.config.lam)
        active = self.is_active(ctx.step + 1, ctx.max_steps)
        self.drop_prob = probs.cpu() if active else torch.zeros(num)
        metrics = {"opm/active": float(active)}
        for i, m in enumerate(self.modalities):
            metrics[f"opm/score/{m}"] = scores[i].item()
            metrics[f"opm/ratio/{m}"] = ratios[i].item()
            metrics[f"opm/drop_prob/{m}"] = self.drop_prob[i].item()
            metrics[f"opm/dropped/{m}"] = 1 - (kept[i] / count).item()
        ctx.log(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"drop_prob": self.drop_prob.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drop_prob = state["drop_prob"].clone()
