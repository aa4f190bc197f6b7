"""Compositions: several modulation methods trained together, e.g. `modulation="aim+unimodal_losses"`.

A composition is named by its members joined with `+` (a list in Python, `["aim", "unimodal_losses"]`,
is joined the same way by `AIMConfig`); the order given is the order in which every hook below
calls the members. Each member keeps its own options: `modulation_kwargs` of a composition is keyed
by member (`{"unimodal_losses": {"weight": 0.5}, "ogm_ge": {"alpha": 0.3}}`; a member left out
takes its defaults), and a single method keeps the flat form. The schedule fields
(`modulation_start`, `modulation_end`) apply to every member as they would alone: a member that
runs over the whole training (`unimodal_losses`, `mla`) refuses a window here too.

Every hook of `Modulation` (see `base`) calls every member, in order, on the same `HookContext`,
whose methods define how the members' contributions combine:

- forward arguments merge (`pass_to_forward`): two members that declare the same forward argument
  (`Modulation.forward_arguments`, e.g. OPM's and MLA's `feature_keep`) are refused when the
  composition is built;
- loss terms add (`add_loss`); every member sees every micro-batch, so that each accumulates its own
  statistics;
- gradient changes (scaling, noise, projection, clearing) in `on_gradients_ready` apply in the
  members' order, each to the gradients as the members before it left them:
  `ogm_ge+unimodal_losses` scales the encoder gradients of both losses. The members' metrics merge
  (their keys are disjoint);
- learning-rate factors multiply (`scale_lr`);
- evaluation logits: those of the one member that replaces the fused logits (MLA); two such members
  are refused when the composition is built;
- optimizer warnings are joined.

Each member keeps its own window (its own `default_start` and `default_end`, where
`modulation_start` / `modulation_end` are unset; `is_active`): the composition is active at a step
where any member is. `state_dict` / `load_state_dict`: one entry per member, keyed by its name.
`reads_gradients`: whether any member reads them.

Also refused when built, in one line: an unknown method, a method named twice, `none` (the absence
of a method), and two of `unimodal_losses`, `mmpareto`, `inforeg`, `redreg` (each adds every
modality's own cross-entropy, which two would count twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..modeling import MultimodalModel
from .base import HookContext, Modulation

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
    return cls.on_prediction_step is not Modulation.on_prediction_step


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


class Composition(Modulation):
    """Several methods trained together (`modulation` such as `"aim+unimodal_losses"`), with the
    semantics of the module docstring. `members` holds the methods, in the order given; `start` and
    `end` are every member's window."""

    def __init__(
        self,
        model: MultimodalModel,
        members: list[tuple[type[Modulation], dict[str, Any]]],
        start: float | None = None,
        end: float | None = None,
    ) -> None:
        self.model = model
        self.modalities = model.modalities
        self.members = [cls(model, options, start, end) for cls, options in members]
        self.name = SEPARATOR.join(member.name for member in self.members)
        self.reads_gradients = any(m.reads_gradients for m in self.members)

    def is_active(self, step: int, max_steps: int) -> bool:
        return any(m.is_active(step, max_steps) for m in self.members)

    def on_train_begin(self, ctx: HookContext) -> None:
        for member in self.members:
            member.on_train_begin(ctx)

    def on_micro_batch_begin(self, ctx: HookContext) -> None:
        for member in self.members:
            member.on_micro_batch_begin(ctx)

    def on_forward_end(self, ctx: HookContext) -> None:
        for member in self.members:
            member.on_forward_end(ctx)

    def on_gradients_ready(self, ctx: HookContext) -> None:
        for member in self.members:
            member.on_gradients_ready(ctx)

    def on_optimizer_step(self, ctx: HookContext) -> None:
        for member in self.members:
            member.on_optimizer_step(ctx)

    def on_prediction_step(self, ctx: HookContext) -> None:
        for member in self.members:
            member.on_prediction_step(ctx)

    def state_dict(self) -> dict[str, Any]:
        return {member.name: member.state_dict() for member in self.members}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for member in self.members:
            member.load_state_dict(state[member.name])


def members_of(modulation: Modulation) -> list[Modulation]:
    """The methods `modulation` runs: a composition's members, else the method itself."""
    return modulation.members if isinstance(modulation, Composition) else [modulation]
