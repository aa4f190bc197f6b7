"""The interface every modulation method implements, and how a method declares itself.

One hook contract: every hook takes one `HookContext` and returns nothing, as every
`TrainerCallback` event takes the same `(args, state, control)`. The context carries what the trainer
knows at that point (the unwrapped model, the optimizer step under way, the micro-batch, the outputs,
the optimizer) and collects what the method gives back, through methods that define how several
methods' contributions combine (`aim_hf.modulation.composite`): `pass_to_forward` (forward
arguments merge; the same one twice is an error), `add_loss` (loss terms add), `scale_lr`
(learning-rate factors multiply), `log` (metrics merge), `replace_logits`, `warn`.

The trainer calls a method's hooks at these points, named after when they run:

1. `on_train_begin(ctx)` once the trainer has built the optimizer (`ctx.optimizer`), before the first
   step: a method adapts to it (OGM-GE picks gradient or update scaling) or `warn`s that the
   optimizer cancels it;
2. `on_micro_batch_begin(ctx)` before each training micro-batch's forward, with the step under way
   (`ctx.step`), the micro-batch (`ctx.inputs`, `ctx.labels`; `ctx.micro_batch` its index in the
   step, `ctx.first_example` the index of its first example in the step's global batch) and the fp16
   loss scale its backward will use (`ctx.grad_scale`): extra arguments for the model's forward
   (`pass_to_forward`; OPM passes a per-sample keep-mask of each modality's feature, `feature_keep`);
3. `on_forward_end(ctx)` after each training micro-batch's forward (`ctx.outputs`): the extra loss
   terms (`add_loss`), and the batch statistics the method accumulates over the step's micro-batches
   (in a `mechanics.StepSums`). A method may run more of the model here, under `ctx.autocast()` (the
   forward's mixed precision): AIM's auxiliary pass; MMPareto takes per-loss gradients with
   `torch.autograd.grad` on the retained graph;
4. `on_gradients_ready(ctx)` once per optimizer step, after the last micro-batch's backward
   (gradients accumulated and, under DDP, all-reduced; still scaled by `ctx.grad_scale` under fp16)
   and before clipping: reduce the statistics across processes, change gradients, update the
   method's state, `log` the step's metrics and `scale_lr` the coming `optimizer.step()` per modality
   (the trainer applies the factors to `modality_param_groups(optimizer)` for that one step);
5. `on_optimizer_step(ctx)` right after `optimizer.step()` (learning rates restored, before the
   scheduler steps and the gradients are cleared): a decoupled parameter update applied once per
   optimizer step, as AdamW applies its weight decay (InfoReg and RedReg pull an encoder toward
   earlier values there). The GradScaler may have skipped that step (an fp16 overflow): a method
   decides in `on_gradients_ready`, which sees the gradients, whether anything is to be done here;
6. `on_prediction_step(ctx)` at evaluation and prediction, labelled or not (`ctx.outputs`): a method
   may `replace_logits` to evaluate with other logits than the fused ones (MLA's entropy-weighted
   fusion).

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

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

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


@dataclass
class HookContext:
    """What a hook sees, and what it gives back (see the module docstring). The trainer fills the
    fields its hook point knows; the others keep their defaults."""

    model: MultimodalModel
    """The unwrapped model."""
    step: int = 0
    """The optimizer step under way (0-based): `state.global_step`."""
    max_steps: int = 0
    seed: int = 0
    """The run's seed (`args.seed`), for the draws a method makes."""
    grad_scale: float | None = None
    """The GradScaler's scale under fp16 loss scaling (the micro-batch's backward multiplies the loss
    by it, and the gradients still carry it), None without loss scaling."""
    micro_batch: int = 0
    first_example: int = 0
    inputs: Mapping[str, Any] | None = None
    """The micro-batch's inputs per modality, as the model's forward takes them."""
    labels: torch.Tensor | None = None
    outputs: MultimodalOutput | None = None
    optimizer: torch.optim.Optimizer | None = None
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext
    """The mixed-precision context the model's forward runs under, for a method's own forward passes."""

    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    lr_scales: dict[str, float] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def step_seed(self) -> int:
        """A seed for this optimizer step's random draws, from the run's seed and the step: the same on
        every process, another at every step (OPM's modality drops, OGM-GE's gradient noise)."""
        return self.seed * 1_000_003 + self.step

    def pass_to_forward(self, **kwargs: Any) -> None:
        """Extra keyword arguments for the coming forward; one already passed is an error."""
        shared = sorted(self.forward_kwargs.keys() & kwargs.keys())
        if shared:
            raise RuntimeError(f"The forward arguments {shared} are passed twice (two methods pass them).")
        self.forward_kwargs.update(kwargs)

    def add_loss(self, term: torch.Tensor) -> None:
        """A loss term, added to the model's loss before the backward."""
        self.loss = term if self.loss is None else self.loss + term

    def scale_lr(self, modality: str, factor: float) -> None:
        """Multiply `modality`'s encoder learning rate by `factor` for the coming `optimizer.step()`."""
        self.lr_scales[modality] = self.lr_scales.get(modality, 1.0) * factor

    def log(self, metrics: Mapping[str, float]) -> None:
        """Metrics of this optimizer step (averaged over the logging interval by the trainer)."""
        self.metrics.update(metrics)

    def replace_logits(self, logits: torch.Tensor) -> None:
        """Evaluate and predict with `logits` in place of the model's fused ones."""
        if self.logits is not None:
            raise RuntimeError("Two methods replace the evaluation logits.")
        self.logits = logits

    def warn(self, message: str) -> None:
        """A warning for the user (the trainer logs it once)."""
        self.warnings.append(message)


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
    # The keyword arguments of the model's forward that the method passes (`pass_to_forward`): a composition
    # refuses two methods that pass the same one (`aim_hf.modulation.composite`).
    forward_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: MultimodalModel,
        options: Mapping[str, Any] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> None:
        """`options`: the method's `modulation_kwargs` (checked against `Config`); `start` / `end`:
        the modulation window (`modulation_start` / `modulation_end`; None: the method's default)."""
        self.model = model
        self.modalities = model.modalities
        self.config = self.make_config(options)
        self.start = start if start is not None else self.default_start
        self.end = end if end is not None else self.default_end

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

    def on_train_begin(self, ctx: HookContext) -> None:
        """Once the optimizer is built (`ctx.optimizer`), before the first step."""

    def on_micro_batch_begin(self, ctx: HookContext) -> None:
        """Before each training micro-batch's forward."""

    def on_forward_end(self, ctx: HookContext) -> None:
        """After each training micro-batch's forward (`ctx.outputs`)."""

    def on_gradients_ready(self, ctx: HookContext) -> None:
        """Once per optimizer step, gradients complete, before clipping and `optimizer.step()`."""

    def on_optimizer_step(self, ctx: HookContext) -> None:
        """Right after each `optimizer.step()`."""

    def on_prediction_step(self, ctx: HookContext) -> None:
        """At each evaluation or prediction forward (`ctx.outputs`)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
