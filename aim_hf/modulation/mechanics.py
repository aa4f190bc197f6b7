"""The mechanics modulation methods share: cross-process sums, the scores they compare modalities
by, the optimizer's modality parameter groups, and the anchored pull of InfoReg-like methods.

Every method may use this module (and `base`); no method imports another method's file, so that
removing one method breaks no other (`tests/modulation/test_method_registry.py` checks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..modeling import MultimodalModel, MultimodalOutput


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes ((0, 1) without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes in place (a no-op on one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# Optimizers that divide each parameter's step by a running scale of its own gradient (or take its
# sign), matched against the class names of the optimizer's type (torch.optim, transformers'
# Adafactor, bitsandbytes, ...): a constant factor on a gradient hardly changes their update.
_ADAPTIVE_NAMES = ("adam", "adagrad", "adadelta", "rmsprop", "rprop", "adafactor", "lamb", "lion")


class StepSums:
    """Statistics summed over an optimizer step's micro-batches (`add`), then summed over every
    process once per step (`reduce`, which also starts the next step): what a method computes from
    the global batch, identical on every process."""

    def __init__(self) -> None:
        self._total: torch.Tensor | None = None

    def add(self, batch: torch.Tensor) -> None:
        self._total = batch if self._total is None else self._total + batch

    def reduce(self) -> torch.Tensor | None:
        """The step's sums over all processes (None if nothing was added), and a fresh start."""
        total, self._total = self._total, None
        return None if total is None else all_reduce_sum(total)

    def discard(self) -> None:
        """Drop the step's sums without reducing them (a step where nobody needs them: no process
        reduces, so no process waits)."""
        self._total = None

    def reduce_unless_skipped(self, model: MultimodalModel, grad_scale: float | None) -> torch.Tensor | None:
        """`reduce()`, or None also when the GradScaler skips this optimizer step (an fp16 overflow,
        `grad_scale` given and a gradient not finite): a method's state must then stay as it was. The
        reduction runs either way, so that every process takes part in it."""
        totals = self.reduce()
        if totals is None or (grad_scale is not None and not gradients_finite(model)):
            return None
        return totals


def true_class_probabilities(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example, the float32 softmax probability of its true class: the score OGM-GE, OPM, AGM,
    InfoReg and RedReg compare modalities by."""
    return logits.float().softmax(-1).gather(1, labels[:, None]).squeeze(1)


def with_sample_count(values: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """`values` (scalars or 1-d) flattened into one vector, followed by the micro-batch's number of
    examples: the layout of a `StepSums` buffer whose sums are divided by the global count."""
    count = torch.tensor([float(labels.shape[0])], device=labels.device)
    return torch.cat([v.reshape(-1) for v in values] + [count])


def is_adaptive_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` (or the optimizer it wraps) normalises each update by its gradient's scale."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    return any(word in cls.__name__.lower() for cls in type(optimizer).__mro__ for word in _ADAPTIVE_NAMES)


def choose_scaling_mode(
    method: str, requested: str, optimizer: torch.optim.Optimizer, modalities: Iterable[str]
) -> tuple[str, str | None]:
    """The scaling mode (`"gradient"` or `"update"`) of a method whose per-modality coefficient
    multiplies either the encoder gradients or, through `HookContext.scale_lr`, the encoder updates, for the
    `requested` mode (`"auto"`: "update" under an adaptive optimizer, which would cancel a gradient
    factor, else "gradient"); with a warning when a gradient factor runs under an adaptive optimizer.
    Fails now (not at a step) if update mode finds no modality-tagged parameter groups."""
    adaptive = is_adaptive_optimizer(optimizer)
    mode = ("update" if adaptive else "gradient") if requested == "auto" else requested
    if mode == "update":
        modality_param_groups(optimizer, required=modalities)
        return mode, None
    if adaptive:
        name = type(getattr(optimizer, "optimizer", optimizer)).__name__
        return mode, (
            f"{method} with mode='gradient' multiplies the encoders' gradients by its coefficients, but {name} "
            "divides each update by the gradient's own scale, so the modulation does almost nothing. Use "
            "modulation_kwargs mode='update' (or 'auto') to scale the encoders' updates instead, or an SGD "
            "optimizer."
        )
    return mode, None


def modality_param_groups(
    optimizer: torch.optim.Optimizer, required: Iterable[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """The optimizer's parameter groups of each modality's encoder: those tagged `"modality": m`
    (`AIMTrainer.create_optimizer` tags them; the other groups carry `"modality": None`). Raises a
    ValueError if a modality in `required` has none."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for group in optimizer.param_groups:
        if group.get("modality") is not None:
            groups.setdefault(group["modality"], []).append(group)
    missing = [m for m in required if m not in groups]
    if missing:
        raise ValueError(
            f"No optimizer parameter group is tagged 'modality' for {missing}, so their encoders' learning rate "
            "cannot be scaled: let AIMTrainer build the optimizer, or tag each encoder's groups with 'modality'."
        )
    return groups


def resolve_step(value: float | None, max_steps: int) -> int | None:
    """A step given as a fraction of training (< 1) or as an absolute optimizer step (>= 1)."""
    if value is None:
        return None
    return int(math.floor(value * max_steps)) if 0 <= value < 1 else int(value)


@torch.no_grad()
def gradients_finite(model: torch.nn.Module) -> bool:
    """Whether every gradient of `model` is finite (one host sync): under fp16 loss scaling, a step
    with an overflow is skipped by the optimizer, and a method must then leave its state alone.
    Gradients are all-reduced, so every process reaches the same answer. Batched: the max-norm of
    each gradient cannot overflow and is inf or nan exactly when some entry is."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all())


def discrepancy_ratios(scores: torch.Tensor) -> torch.Tensor:
    """`rho_m = s_m / mean_{m' != m} s_m'` for a 1-D tensor of per-modality scores (for two
    modalities OGM-GE's `s_a / s_b`); OGM-GE, OPM, PMR and AGM compare modalities by it."""
    others = (scores.sum() - scores) / (scores.numel() - 1)
    return scores / others.clamp(min=1e-12)


def unimodal_cross_entropies(outputs: MultimodalOutput, modalities: list[str], labels: torch.Tensor) -> torch.Tensor:
    """Each modality's cross-entropy on its share of the fused logits, in `modalities`' order."""
    return torch.stack([F.cross_entropy(outputs.modality_logits[m].float(), labels) for m in modalities])


class EncoderAnchors:
    """Each encoder's trainable parameters at the start of the current period, and the decoupled pull
    toward them (InfoReg's and RedReg's). Refreshed every `period` optimizer steps: at the first
    step `refresh_due` is asked, and then `period` steps after the last refresh (a skipped fp16 step
    does not ask, and so delays the refresh by one step)."""

    def __init__(self, model: MultimodalModel, modalities: list[str]) -> None:
        self.params = {
            m: {n: p for n, p in model.encoders[m].named_parameters() if p.requires_grad} for m in modalities
        }
        self.values: dict[str, dict[str, torch.Tensor]] = {}
        self.next_refresh = 0

    def refresh_due(self, global_step: int, period: int) -> bool:
        """Whether step `global_step` starts a new period; if so, the anchors become the current parameters."""
        if global_step < self.next_refresh:
            return False
        with torch.no_grad():
            self.values = {m: {n: p.detach().clone() for n, p in ps.items()} for m, ps in self.params.items()}
        self.next_refresh = global_step + period
        return True

    @torch.no_grad()
    def pull(self, optimizer: torch.optim.Optimizer, coeffs: dict[str, float], orthogonal: bool = False) -> None:
        """`theta <- theta - lr * beta_m * d` for each parameter of each encoder m in `coeffs`, with
        `d = theta - anchor` (`orthogonal`: d without its component along the parameter's gradient,
        `d - (d . g / |g|^2) g`; d itself where the gradient is missing or zero) and `lr` the learning
        rate of the parameter's optimizer group."""
        lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        for m, beta in coeffs.items():
            for name, p in self.params[m].items():
                d = p - self.values[m][name]
                if orthogonal and p.grad is not None:
                    g = p.grad.to(d.dtype)
                    norm = (g * g).sum()
                    if norm > 0:
                        d -= (d * g).sum() / norm * g
                p.sub_(d, alpha=lr_of.get(id(p), 0.0) * beta)

    def state_dict(self) -> dict[str, Any]:
        values = {m: {n: v.clone() for n, v in vs.items()} for m, vs in self.values.items()}
        return {"values": values, "next_refresh": self.next_refresh}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_refresh = state["next_refresh"]
        self.values = {
            m: {n: v.to(self.params[m][n].device) for n, v in vs.items()} for m, vs in state["values"].items()
        }
