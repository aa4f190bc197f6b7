"""Compositions: several modulation methods trained together, e.g. `modulation="aim+unimodal_losses"`.

A composition is named by its members joined with `+` (a list in Python, `["aim", "unimodal_losses"]`,
is joined the same way by `AIMConfig`); the order given is the order in which every hook below
calls the members. Each member keeps its own options: `modulation_kwargs` of a composition is keyed
by member (`{"unimodal_losses": {"weight": 0.5}, "ogm_ge": {"alpha": 0.3}}`; a member left out
takes its defaults), and a single method keeps the flat form. The schedule fields
(`modulation_start`, `modulation_end`) apply to every member as they would alone: a member that
runs over the whole training (`unimodal_losses`, `mla`) refuses a window here too.

What each hook of `Modulation` (see `base`) does for a composition:

- `begin_micro_batch`, `use_optimizer`, `after_optimizer_step`: every member, in order; the
  optimizer warnings of the members are joined.
- `forward_kwargs`: the members' arguments merged. Two members that declare the same forward
  argument (`Modulation.forward_arguments`, e.g. OPM's and MLA's `feature_keep`) are refused when
  the composition is built.
- `compute_loss`: the members' loss terms add (None when no member has one). Every member sees
  every micro-batch, so that each accumulates its own statistics.
- `step`: every member, in order: a member's gradient change (scaling, noise, projection, clearing)
  applies to the gradients as the members before it left them; `ogm_ge+unimodal_losses` scales
  the encoder gradients of both losses. The members' metrics are merged (their keys are disjoint).
- `lr_scales`: the members' per-modality factors multiply.
- `evaluation_logits`: those of the one member that replaces the fused logits (MLA); two such
  members are refused when the composition is built.
- `is_active`: each member keeps its own window (its own `default_start` and `default_end`, where
  `modulation_start` / `modulation_end` are unset); the composition is active at a step where any
  member is.
- `state_dict` / `load_state_dict`: one entry per member, keyed by its name.
- `reads_gradients`: whether any member reads them.

Also refused when built, in one line: an unknown method, a method named twice, `none` (the absence
of a method), and two of `unimodal_losses`, `mmpareto`, `inforeg`, `redreg` (each adds every
modality's own cross-entropy, which two would count twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..modeling import MultimodalModel, MultimodalOutput
from .base import Modulation

SEPARATOR = "+"

# The methods whose loss holds each modality's own cross-entropy: two of them would count it twice.
_UNIMODAL_LOSS_METHODS = ("unimodal_losses", "mmpareto", "inforeg", "redreg")


def join_methods(modulation: str | Sequence[str]) -> str:
    """The `modulation` string of a method or a list of methods (`["aim", "unimodal_losses"]` ->
    `"aim+unimodal_losses"`)."""
    return modulation if isinstance(modulation, str) else SEPARATOR.join(modulation)


def is_composition(modulation: str) -> bool:
    return SEPARATOR in modulation


def _replaces_evaluation_logits(cls: type[Modulation]) -> bool:
    return cls.evaluation_logits is not Modulation.evaluation_logits


def composition_members(
    modulation: str, kwargs: Mapping[str, Any] | None, registry: Mapping[str, type[Modulation]]
) -> list[tuple[type[Modulation], dict[str, Any]]]:
    """Each member's class (from `registry`) and its own `modulation_kwargs`, in the order given;
    a one-line ValueError for a composition that cannot run (see the module docstring) or a
    `modulation_kwargs` key that is not a member. Each member's options are checked by its
    `make_config`."""
    names = modulation.split(SEPARATOR)
    for name in names:
        if name not in registry:
            raise ValueError(f"Unknown modulation {name!r} in {modulation!r}: choose from {', '.join(registry)}.")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"modulation {modulation!r} names {twice[0]!r} twice: each method appears once.")
    if "none" in names:
        raise ValueError(f"modulation {modulation!r} composes 'none', which is no method: leave it out.")
    with_unimodal = [n for n in names if n in _UNIMODAL_LOSS_METHODS]
    if len(with_unimodal) > 1:
        raise ValueError(
            f"{with_unimodal[0]} and {with_unimodal[1]} both add each modality's own cross-entropy: compose at most "
            "one of them."
        )
    replacing = [n for n in names if _replaces_evaluation_logits(registry[n])]
    if len(replacing) > 1:
        raise ValueError(
            f"{replacing[0]} and {replacing[1]} both replace the evaluation logits: compose at most one of them."
        )
    owner: dict[str, str] = {}
    for name in names:
        for argument in registry[name].forward_arguments:
            if argument in owner:
                raise ValueError(
                    f"{owner[argument]} and {name} both pass the model's forward argument {argument!r}: "
                    "they cannot be composed."
                )
            owner[argument] = name
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise ValueError(
            f"modulation_kwargs keys {unknown} are not methods of {modulation!r}: key each method's options by its "
            f'name, e.g. {{"{names[-1]}": {{...}}}}.'
        )
    members = []
    for name in names:
        own = kwargs.get(name, {})
        if not isinstance(own, Mapping):
            raise ValueError(f"modulation_kwargs[{name!r}] must be a mapping of the options of {name}, got {own!r}.")
        registry[name].make_config(own)
        members.append((registry[name], dict(own)))
    return members


class _MemberArgs:
    """The training arguments as one member of a composition reads them: its own `modulation` and
    `modulation_kwargs`, every other field the composition's."""

    def __init__(self, args: Any, name: str, kwargs: dict[str, Any]) -> None:
        self._args = args
        self.modulation = name
        self.modulation_kwargs = kwargs

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._args, attribute)


class Composition(Modulation):
    """Several methods trained together (`args.modulation` such as `"aim+unimodal_losses"`), with
    the semantics of the module docstring. `members` holds the methods, in the order given."""

    def __init__(
        self, model: MultimodalModel, args: Any, members: list[tuple[type[Modulation], dict[str, Any]]]
    ) -> None:
        self.model = model
        self.args = args
        self.modalities = model.modalities
        self.name = args.modulation
        self.members = [cls(model, _MemberArgs(args, cls.name, kwargs)) for cls, kwargs in members]
        self.reads_gradients = any(m.reads_gradients for m in self.members)

    def is_active(self, step: int, max_steps: int) -> bool:
        return any(m.is_active(step, max_steps) for m in self.members)

    def begin_micro_batch(self, global_step: int, labels: torch.Tensor, grad_scale: float | None = None) -> None:
        for member in self.members:
            member.begin_micro_batch(global_step, labels, grad_scale)

    def forward_kwargs(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for member in self.members:
            kwargs = member.forward_kwargs()
            shared = merged.keys() & kwargs.keys()
            if shared:  # a member passes an argument it does not declare in `forward_arguments`
                raise RuntimeError(f"{member.name} passes the forward arguments {sorted(shared)} another member passes.")
            merged.update(kwargs)
        return merged

    def compute_loss(self, outputs: MultimodalOutput, labels: torch.Tensor) -> torch.Tensor | None:
        terms = [term for member in self.members if (term := member.compute_loss(outputs, labels)) is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def step(
        self, model: MultimodalModel, global_step: int, max_steps: int, grad_scale: float | None = None
    ) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for member in self.members:
            metrics.update(member.step(model, global_step, max_steps, grad_scale))
        return metrics

    def use_optimizer(self, optimizer: torch.optim.Optimizer) -> str | None:
        warnings = [warning for member in self.members if (warning := member.use_optimizer(optimizer))]
        return " ".join(warnings) or None

    def evaluation_logits(self, outputs: MultimodalOutput) -> torch.Tensor | None:
        for member in self.members:
            logits = member.evaluation_logits(outputs)
            if logits is not None:
                return logits
        return None

    def lr_scales(self) -> dict[str, float]:
        scales: dict[str, float] = {}
        for member in self.members:
            for modality, factor in member.lr_scales().items():
                scales[modality] = scales.get(modality, 1.0) * factor
        return scales

    def after_optimizer_step(self, model: MultimodalModel, optimizer: torch.optim.Optimizer) -> None:
        for member in self.members:
            member.after_optimizer_step(model, optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {member.name: member.state_dict() for member in self.members}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for member in self.members:
            member.load_state_dict(state[member.name])


def members_of(modulation: Modulation) -> list[Modulation]:
    """The methods `modulation` runs: a composition's members, else the method itself."""
    return modulation.members if isinstance(modulation, Composition) else [modulation]
