"""The interface every modulation method implements, and what they share.

The trainer calls a method at these points of each optimizer step:

0. `begin_micro_batch(global_step, labels, grad_scale)` before each training micro-batch's forward:
   the step under way, the micro-batch's labels and the fp16 loss scale its backward will use
   (OPM seeds its per-sample draws by the step and sizes them by the labels; MMPareto scales the
   losses it differentiates itself);
1. `forward_kwargs()` before each training micro-batch's forward: extra keyword arguments for the
   model (AIM passes the unit masks of its Auxiliary Blocks, OPM a per-sample keep-mask of each
   modality's feature, `feature_keep`);
2. `compute_loss(outputs, labels)` after each micro-batch's forward: the extra loss terms, and the
   batch statistics the method accumulates over the step's micro-batches (MMPareto also takes
   per-loss gradients there, with `torch.autograd.grad` on the retained graph);
3. `step(model, state)` once per optimizer step, after the last micro-batch's backward (gradients
   accumulated and, under DDP, all-reduced; still scaled under fp16) and before clipping: reduce
   the statistics across processes, change gradients, update the method's state;
4. `lr_scales()` just before `optimizer.step()`: per-modality factors on the learning rate of each
   encoder's parameter groups (see `modality_param_groups`) for that one step, undone right after;
5. `after_optimizer_step(model, optimizer)` right after `optimizer.step()` (before the scheduler
   steps and the gradients are cleared): a decoupled parameter update applied once per optimizer
   step, as AdamW applies its weight decay (InfoReg and RedReg pull an encoder toward earlier
   values there, rather than through a loss term whose gradient would reach the optimizer).

In evaluation and prediction (labels given) the trainer calls `evaluation_logits(outputs)`: a
method may evaluate with other logits than the fused ones (MLA's entropy-weighted fusion).

Once the trainer has built the optimizer it calls `use_optimizer(optimizer)`, so that a method can
adapt to it (OGM-GE picks gradient or update scaling) or warn that the optimizer cancels it.

A method's state (`state_dict` / `load_state_dict`) is saved in every checkpoint.

Configuring a method: a method's own hyperparameters live with it, as a small dataclass `Config`
beside the class in its file (documented fields, defaults = the reference's). The user gives them
in one field, `AIMConfig.modulation_kwargs` (a JSON object on the command line, a mapping in a
YAML/JSON config file, a dict in Python), as `TrainingArguments.lr_scheduler_kwargs` carries a
scheduler's options. `Modulation.make_config` checks the keys and types against `Config` (an
unknown key fails with the method's options listed), and the method reads `self.config`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist

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
    multiplies either the encoder gradients or, through `lr_scales`, the encoder updates, for the
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


def _accepts(value: Any, hint: Any) -> bool:
    """Whether `value` fits the type hint `hint` (a plain type, `X | None` or a `Literal`); an int
    passes for a float, a bool never for a number."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool) and hint is not bool:
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin or hint)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


@dataclasses.dataclass
class NoConfig:
    """A method without hyperparameters of its own."""


class Modulation:
    """Base class of the modulation methods. Subclasses set `name`, `default_start`, `Config`
    (the dataclass of their own hyperparameters, see the module docstring) and `reads_gradients`,
    and override the hooks they need; the defaults do nothing (plain joint training)."""

    name: ClassVar[str] = ""
    default_start: ClassVar[float] = 0.0
    Config: ClassVar[type] = NoConfig
    # Whether the method reads or writes parameters' `.grad` (scores, scales, projects or clears them).
    # FSDP and DeepSpeed ZeRO keep gradients in sharded or flat buffers that `.grad` does not show, so
    # AIMTrainer refuses such a method under them rather than let it silently do nothing.
    reads_gradients: ClassVar[bool] = False
    # The keyword arguments of the model's forward that `forward_kwargs` may pass: a composition
    # refuses two methods that pass the same one (`aim_hf.modulation.composite`).
    forward_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: MultimodalModel, args: Any) -> None:
        self.model = model
        self.args = args
        self.modalities = model.modalities
        self.config = self.make_config(args.modulation_kwargs)
        self.start = args.modulation_start if args.modulation_start is not None else self.default_start
        self.end = args.modulation_end

    @classmethod
    def make_config(cls, kwargs: Mapping[str, Any] | None) -> Any:
        """`cls.Config` from the user's `modulation_kwargs`, with a one-line ValueError for an unknown
        key (listing the method's options) or a value of the wrong type."""
        kwargs = dict(kwargs or {})
        hints = typing.get_type_hints(cls.Config)
        options = [f.name for f in dataclasses.fields(cls.Config)]
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            listed = ", ".join(f"{o} ({_type_name(hints[o])})" for o in options)
            raise ValueError(
                f"modulation_kwargs {unknown} are not options of {cls.name!r}; its options: {listed or 'none'}."
            )
        for key, value in kwargs.items():
            if not _accepts(value, hints[key]):
                expected = _type_name(hints[key])
                raise ValueError(f"modulation_kwargs {key!r} of {cls.name!r} must be {expected}, got {value!r}.")
            if hints[key] is float:
                kwargs[key] = float(value)
        return cls.Config(**kwargs)

    def is_active(self, step: int, max_steps: int) -> bool:
        """Whether the modulation applies at optimizer step `step` (0-based) of `max_steps`."""
        start = resolve_step(self.start, max_steps)
        end = resolve_step(self.end, max_steps)
        return step >= start and (end is None or step < end)

    def begin_micro_batch(self, global_step: int, labels: torch.Tensor, grad_scale: float | None = None) -> None:
        """Called before each training micro-batch's `forward_kwargs`, with the optimizer step under
        way (0-based), the micro-batch's labels and the GradScaler's scale under fp16 loss scaling
        (None without), which the trainer's backward of this micro-batch multiplies the loss by."""

    def forward_kwargs(self) -> dict[str, Any]:
        return {}

    def compute_loss(self, outputs: MultimodalOutput, labels: torch.Tensor) -> torch.Tensor | None:
        return None

    def step(
        self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float | None = None
    ) -> dict[str, float]:
        """Called once per optimizer step; returns the metrics to log for this step. `grad_scale` is the
        GradScaler's scale under fp16 loss scaling (the gradients are still multiplied by it, and the
        optimizer skips a step whose gradients are not finite), None without loss scaling."""
        return {}

    def use_optimizer(self, optimizer: torch.optim.Optimizer) -> str | None:
        """Called once the trainer has built the optimizer, before the first step. Returns a warning
        for the user when this optimizer cancels what the method does, else None."""
        return None

    def evaluation_logits(self, outputs: MultimodalOutput) -> torch.Tensor | None:
        """Logits to evaluate and predict with in place of the model's fused ones (None: keep them);
        the trainer also recomputes the fused part of the evaluation loss from them."""
        return None

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors per modality for the coming optimizer step (missing: 1). The trainer
        applies them to `modality_param_groups(optimizer)` for that step only."""
        return {}

    def after_optimizer_step(self, model: MultimodalModel, optimizer: torch.optim.Optimizer) -> None:
        """Called right after each `optimizer.step()`, learning rates restored, gradients still there.
        The GradScaler may have skipped that step (an fp16 overflow): a method decides in `step`, which
        sees the gradients, whether anything is to be done here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class NoModulation(Modulation):
    """Plain joint training: the same model, probes and loss, nothing modulated."""

    name = "none"
