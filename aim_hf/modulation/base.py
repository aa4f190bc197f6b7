"""The interface every modulation method implements, and how a method declares itself.

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

Declaring a method: besides its hooks a method's class carries what the rest of the library shows
about it, so that adding a method is its own file plus one line in `MODULATIONS`: its `name`, a short
`label` and a `title`, its `paper` and BibTeX `citation`, its default window (`default_start`,
`default_end`), its options (`Config`, below), the `metrics` it logs (under its `metric_prefix`)
and the one number the console shows for it (`summary`). The model card, the console, the plots,
the `--modulation` help and `aim-hf methods` read them from the registry. The mechanics methods
share live in `mechanics`; no method imports another method's file.

Configuring a method: a method's own hyperparameters live with it, as a small dataclass `Config`
beside the class in its file (each field with its `help` in the field's metadata, defaults = the
reference's; `Modulation.options` lists them). The user gives them in one field,
`AIMConfig.modulation_kwargs` (a JSON object on the command line, a mapping in a YAML/JSON config
file, a dict in Python), as `TrainingArguments.lr_scheduler_kwargs` carries a scheduler's options.
`Modulation.make_config` checks the keys and types against `Config` (an unknown key fails with the
method's options listed; a `Literal` field takes only its choices), `Config.__post_init__` checks
the ranges (a one-line ValueError naming the method and the option, which `make_config` lets
through), and the method reads `self.config`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..modeling import MultimodalModel, MultimodalOutput
from .mechanics import resolve_step


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


@dataclass(frozen=True)
class Paper:
    """The paper a method comes from, as the model card and `aim-hf methods` show it."""

    title: str
    venue: str
    """Where and when it appeared, e.g. "CVPR 2022"."""
    url: str


@dataclass(frozen=True)
class Metric:
    """A key a method logs at each optimizer step, with what it holds. `<m>` stands for a modality,
    `<d>` for a depth group."""

    key: str
    help: str


@dataclass(frozen=True)
class Summary:
    """The one number the console shows for a method: per modality `<m>`, the mean of the logged
    values under `<prefix>/<m>` (and `<prefix>/<m>/...`), taken for the modality whose mean is the
    `pick` ("max" or "min"), shown as `<label> <symbol> <m> <value>`."""

    prefix: str
    pick: Literal["max", "min"]
    symbol: str


@dataclass(frozen=True)
class Option:
    """One option of a method, as `aim-hf methods NAME` lists it: a key of `modulation_kwargs`."""

    name: str
    type: str
    default: Any
    help: str


class Modulation:
    """Base class of the modulation methods. Subclasses declare themselves (see the module
    docstring), set their default window (`default_start`, `default_end`), `Config` (the dataclass of
    their own hyperparameters) and `reads_gradients`, and override the hooks they need; the defaults
    do nothing (plain joint training)."""

    name: ClassVar[str] = ""
    # A short name (plots, the console, listings) and the model card's title.
    label: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    citation: ClassVar[str | None] = None  # BibTeX
    # The first part of the keys the method logs (`ogm` for `ogm/coeff/<m>`): its plots' panels.
    metric_prefix: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    summary: ClassVar[Summary | None] = None
    # The window of optimizer steps in which the method modulates when the user leaves
    # `modulation_start` / `modulation_end` unset (< 1: a fraction of all steps; `default_end` None:
    # to the end of training): its reference's schedule, each method's page says where it comes from.
    default_start: ClassVar[float] = 0.0
    default_end: ClassVar[float | None] = None
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
        self.end = args.modulation_end if args.modulation_end is not None else self.default_end

    @classmethod
    def options(cls) -> list[Option]:
        """The method's options (the fields of `Config`), with their types, defaults and help."""
        hints = typing.get_type_hints(cls.Config)
        return [
            Option(f.name, _type_name(hints[f.name]), f.default, f.metadata.get("help", ""))
            for f in dataclasses.fields(cls.Config)
        ]

    @classmethod
    def make_config(cls, kwargs: Mapping[str, Any] | None) -> Any:
        """`cls.Config` from the user's `modulation_kwargs`, with a one-line ValueError for an unknown
        key (listing the method's options), a value of the wrong type, or one out of range (raised by
        `Config.__post_init__`)."""
        kwargs = dict(kwargs or {})
        hints = typing.get_type_hints(cls.Config)
        options = [f.name for f in dataclasses.fields(cls.Config)]
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            listed = ", ".join(f"{o} ({_type_name(hints[o])})" for o in options)
            takes = f"its options: {listed}" if listed else "it takes no options"
            raise ValueError(f"modulation_kwargs {unknown} are not options of {cls.name!r}; {takes}.")
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
