"""DAP with online linear probes (`prototypes="probe"`, ours): per modality and depth a softmax
regression (a weight row per class, the bias a last column) on the L2-normalised pooled output,
standardised by the running mean and variance of each feature, trained on the detached features of
each step's global batch.

- The score of a batch is its mean true-class probability *before* the step's update: the probe has
  not seen the batch, so the score measures what the depth separates, not what the probe memorised.
- Standardising matters for pretrained encoders: their pooled outputs at the first depths share one
  large direction (mean pairwise cosine 0.5-0.65 for MobileNetV2 and MiniLM), which leaves the
  classes a small part of each normalised feature; an unstandardised probe needs hundreds of steps
  to grow weights that large, and meanwhile scores such a depth below a worse one.
- The gradients and the feature moments are summed over the step's micro-batches and processes in
  AIM's one `StepSums` buffer, so every process takes the same Adam step and holds the same probes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .strengths import ema

EPS = 1e-6


class DepthProbes:
    """One softmax regression per modality and depth (`weights[m][d]`: classes x (dim + 1)), zero at
    the start (every class equally likely: the score starts at chance), trained by Adam (`lr`) on
    features standardised by the EMA (`momentum`) of their mean and variance (`moments[m][d]`:
    2 x dim; before the first step 0 and 1)."""

    def __init__(
        self, weights: dict[str, list[torch.Tensor]], moments: dict[str, list[torch.Tensor]], lr: float, momentum: float
    ) -> None:
        self.weights, self.moments, self.momentum = weights, moments, momentum
        self.optimizer = torch.optim.Adam([w for ws in weights.values() for w in ws], lr=lr)

    @classmethod
    def zeros(
        cls, dims: dict[str, list[int]], num_labels: int, lr: float, momentum: float, device: torch.device
    ) -> DepthProbes:
        weights = {m: [torch.zeros(num_labels, dim + 1, device=device) for dim in ds] for m, ds in dims.items()}
        moments = {m: [torch.stack([torch.zeros(dim), torch.ones(dim)]).to(device) for dim in ds] for m, ds in dims.items()}
        return cls(weights, moments, lr, momentum)

    @staticmethod
    def width(dim: int, num_labels: int) -> int:
        """The length of `sums`'s flat part for a depth of width `dim`."""
        return num_labels * (dim + 1) + 2 * dim

    def sums(
        self, modality: str, depth: int, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For a micro-batch of normalised pooled `features`: the sums over its examples of the
        cross-entropy's gradient w.r.t. the probe, of the features and of their squares (flat), and of
        the true-class probability (shape (1,))."""
        mean, var = self.moments[modality][depth]
        x = (features - mean) / (var + EPS).sqrt()
        x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
        probs = (x @ self.weights[modality][depth].T).softmax(-1)
        error = probs - F.one_hot(labels, probs.shape[1]).to(probs.dtype)
        flat = torch.cat([(error.T @ x).flatten(), features.sum(0), features.square().sum(0)])
        return flat, probs.gather(1, labels[:, None]).sum().view(1)

    def step(self, totals: dict[str, list[torch.Tensor]], n: float) -> None:
        """One Adam step on the mean gradient over the step's `n` examples (`totals`: the reduced sums
        of `sums`), then the moments' EMA update."""
        for m, per_depth in totals.items():
            for d, total in enumerate(per_depth):
                w = self.weights[m][d]
                gradient, feature_sum, square_sum = total.split([w.numel(), w.shape[1] - 1, w.shape[1] - 1])
                w.grad = (gradient / n).view_as(w)
                mean = feature_sum / n
                batch = torch.stack([mean, (square_sum / n - mean.square()).clamp(min=0)])
                self.moments[m][d] = ema(self.moments[m][d], batch, self.momentum)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "moments": self.moments, "optimizer": self.optimizer.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any], lr: float, momentum: float) -> DepthProbes:
        """Probes from `state` (`state_dict`'s, its weights and moments on the device to use)."""
        weights = {m: [w.clone() for w in ws] for m, ws in state["weights"].items()}
        probes = cls(weights, {m: [v.clone() for v in vs] for m, vs in state["moments"].items()}, lr, momentum)
        probes.optimizer.load_state_dict(state["optimizer"])
        return probes
