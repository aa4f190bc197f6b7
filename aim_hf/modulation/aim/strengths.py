"""DAP's depth scores and DAM's strengths: how strongly AIM modulates each modality at each depth.

- Depth score `s^m_d`: the mean true-class probability of a softmax over the cosine similarities of
  the pooled depth output to the pooled class prototypes (temperature `tau`; with `center=True` both
  less the running mean of the normalised pooled output), smoothed across steps by an EMA.
- DAM: `lambda^m_d = tanh(alpha * (s^m_d / min_m' s^m'_d - 1))`, 0 for the weakest modality at a
  depth; symmetric PAM's weak-side strength `mu^m_d = tanh(alpha * (1 - s^m_d / max_m' s^m'_d))`.
- The capacity bound [ours] (`dam_cap`): `c^m_d = clip((s_min - 1/K) / (s^m_d - 1/K), 0, 1)`, how
  much of m's above-chance score the weakest modality reaches there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def true_class_score_sum(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    tau: float,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over the batch of the true-class probability of `softmax(cos(h, p_k) / tau)`, `features`
    L2-normalised pooled outputs (batch x dim), `prototypes` pooled (classes x dim); shape (1,).
    With `center` (the mean normalised feature, `center=True`), the cosines are taken between
    `h - center` and `p_k - center`: a pretrained encoder's pooled features share one large
    direction (their mean pairwise cosine is 0.5-0.65 at MobileNetV2's and MiniLM's first depths),
    which makes every raw cosine alike and the score near chance however well the depth separates
    the classes."""
    if center is not None:
        features, prototypes = F.normalize(features - center, dim=-1), prototypes - center
    probs = (features @ F.normalize(prototypes, dim=-1).T / tau).softmax(-1)
    return probs.gather(1, labels[:, None]).sum().view(1)


def ema(previous: torch.Tensor | None, value: torch.Tensor, momentum: float) -> torch.Tensor:
    """One step of an exponential moving average across optimizer steps: `value` itself at the first."""
    return value.clone() if previous is None else momentum * previous + (1 - momentum) * value


def smoothed_scores(
    previous: dict[str, torch.Tensor] | None, batch: dict[str, torch.Tensor], momentum: float
) -> dict[str, torch.Tensor]:
    """The depth scores' EMA, per modality."""
    return {m: ema(None if previous is None else previous[m], s, momentum) for m, s in batch.items()}


def smoothed_centers(
    previous: dict[str, list[torch.Tensor]] | None, batch: dict[str, list[torch.Tensor]], momentum: float
) -> dict[str, list[torch.Tensor]]:
    """`center=True`: the EMA of the mean normalised pooled output, per modality and depth."""
    return {
        m: [ema(None if previous is None else previous[m][d], c, momentum) for d, c in enumerate(means)]
        for m, means in batch.items()
    }


def _per_depth(scores: dict[str, torch.Tensor], strength: Any) -> dict[str, list[float]]:
    """`strength(s, weakest, strongest)` per modality and depth over the modalities that have that
    depth (a depth only one modality has gets 0)."""
    values = {m: s.tolist() for m, s in scores.items()}
    strengths = {m: [0.0] * len(v) for m, v in values.items()}
    for d in range(max(len(v) for v in values.values())):
        at_depth = {m: v[d] for m, v in values.items() if d < len(v)}
        if len(at_depth) < 2:
            continue
        weakest, strongest = max(min(at_depth.values()), 1e-12), max(max(at_depth.values()), 1e-12)
        for m, s in at_depth.items():
            strengths[m][d] = strength(s, weakest, strongest)
    return strengths


def dam_strengths(scores: dict[str, torch.Tensor], alpha: float) -> dict[str, list[float]]:
    """DAM: per modality and depth, `tanh(alpha * (rho - 1))` with `rho = s / min` over the
    modalities that have that depth (a depth only one modality has gets 0)."""
    return _per_depth(scores, lambda s, weakest, strongest: math.tanh(alpha * (s / weakest - 1.0)))


def weak_capacities(scores: dict[str, torch.Tensor], chance: float) -> dict[str, list[float]]:
    """Per modality and depth, the share of its depth score above chance that the weakest modality
    there reaches: `clip((s_min - chance) / (s - chance), 0, 1)` (0 where `s` is not above chance).
    1 for the weakest; near 0 where the weakest decodes next to nothing."""

    def capacity(s: float, weakest: float, strongest: float) -> float:
        gain = s - chance
        return 0.0 if gain <= 0 else min(max((weakest - chance) / gain, 0.0), 1.0)

    return _per_depth(scores, capacity)


def capped_strengths(
    lambdas: dict[str, list[float]], capacities: dict[str, list[float]], cap: str
) -> dict[str, list[float]]:
    """DAM's strengths bounded by the weakest modality's capacity (`dam_cap`): `"min"`:
    `min(lambda, c)`; `"none"`: lambda as is."""
    if cap == "none":
        return lambdas
    return {m: [min(lam, c) for lam, c in zip(lambdas[m], capacities[m])] for m in lambdas}


def weak_strengths(scores: dict[str, torch.Tensor], alpha: float) -> dict[str, list[float]]:
    """Symmetric PAM: per modality and depth, `tanh(alpha * (1 - s / max))`: 0 for the strongest
    modality at a depth, more for weaker ones (never more than the strongest's lambda there)."""
    return _per_depth(scores, lambda s, weakest, strongest: math.tanh(alpha * (1.0 - s / strongest)))


def dominant_modalities(lambdas: dict[str, list[float]], min_lambda: float) -> list[str]:
    """The modalities `aux_trains="weak_only"` keeps `L_aux` from training: those with an Auxiliary
    Block (a strength above `min_lambda` at some depth), but never the least modulated one (lowest
    mean strength over the depths). When the weak modality out-scores the dominant one at a single
    depth, both get a block; detaching both would leave `L_aux` nothing to train while AIM still
    pays for the auxiliary pass."""
    blocked = [m for m, strengths in lambdas.items() if max(strengths) > min_lambda]
    if len(blocked) < len(lambdas):
        return blocked
    means = {m: sum(strengths) / len(strengths) for m, strengths in lambdas.items()}
    least = min(means.values())
    return [m for m in blocked if means[m] > least]
