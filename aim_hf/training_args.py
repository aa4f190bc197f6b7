"""`AIMConfig`: `TrainingArguments` plus the modulation method and its hyperparameters."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments

from .learning_rates import check_learning_rate_mapping


class _ModulationHelp(Mapping):
    """The `modulation` field's metadata, whose help names the methods registered when the command
    line's parser reads it (not those of when this module was imported)."""

    def __getitem__(self, key: str) -> str:
        if key != "help":
            raise KeyError(key)
        from .modulation import MODULATIONS

        methods = ", ".join(f"'{name}' ({cls.label})" for name, cls in MODULATIONS.items())
        return (
            f"Balanced-learning method: {methods}. `aim-hf methods` lists them with their papers, "
            "`aim-hf methods NAME` one method's options; docs/methods/<method>.md. Several methods trained "
            "together: joined by '+', e.g. 'aim+unimodal_losses' (a list in Python; docs/methods/compositions.md)."
        )

    def __iter__(self) -> Iterator[str]:
        return iter(["help"])

    def __len__(self) -> int:
        return 1

    def copy(self) -> dict[str, str]:  # what `metadata.copy()` (older HfArgumentParser) gets
        return dict(self)


# AIM's options that the study (docs/method.md) rejected and that are gone, with the one value (AIM's
# behaviour) their deprecated `aim_*` parameter still accepts.
_REMOVED_AIM_OPTIONS = {"aux_mode": "add", "mask_by": "high"}


def _aim_alias(option: str) -> Any:
    """The field of the deprecated parameter `aim_<option>`: None unless set."""
    if option in _REMOVED_AIM_OPTIONS:
        help_text = (
            "Deprecated, goes in the next release: the option is removed; only "
            f"{_REMOVED_AIM_OPTIONS[option]!r} (AIM's behaviour) is accepted."
        )
    else:
        help_text = f'Deprecated, goes in the next release: modulation_kwargs {{"{option}": ...}}.'
    return field(default=None, metadata={"help": help_text})


@dataclass
class AIMConfig(TrainingArguments):
    r"""Training arguments of [`AIMTrainer`]: every [`~transformers.TrainingArguments`] field, plus
    the balanced-learning method and its hyperparameters.

    A method's own hyperparameters are not fields here: they travel in `modulation_kwargs` and are
    checked against the method's `Config` dataclass (`aim_hf.modulation.base`), e.g.
    `AIMConfig(modulation="ogm_ge", modulation_kwargs={"alpha": 0.3})` or on the command line
    `--modulation ogm_ge --modulation_kwargs '{"alpha": 0.3}'`; AIM's too, e.g. `modulation_kwargs={"dam_cap":
    "none"}`. Its former fields `aim_<option>` are deprecated parameters, kept for one release: one that is set
    warns and is moved into `modulation_kwargs`.

    Several methods train together as a composition: `modulation="aim+unimodal_losses"`, or a list
    (`["aim", "unimodal_losses"]`, stored joined by `+`), each method's options under its name in
    `modulation_kwargs`; what each hook then does: `aim_hf.modulation.composite`.

    `remove_unused_columns` defaults to `False`: the raw modality columns (images, audio, text) are
    consumed by the [`MultimodalCollator`], not by the model's `forward`.
    """

    modulation: str = field(default="aim", metadata=_ModulationHelp())
    modulation_start: float | None = field(
        default=None,
        metadata={
            "help": "Optimizer step at which the modulation starts; a value < 1 is a fraction of all steps. "
            "Default: the method's (AIM: 0.1, a warm-up of a tenth of the steps; OGM-GE: 0)."
        },
    )
    modulation_end: float | None = field(
        default=None,
        metadata={
            "help": "Optimizer step at which the modulation stops (< 1: a fraction of all steps). Default: the "
            "method's, its reference's schedule (OGM-GE: 0.5; PMR: 0.54; AIM and the others: never); "
            "`aim-hf methods NAME` shows it. A step past the last (e.g. 1e9) modulates to the end."
        },
    )
    modulation_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "The method's own hyperparameters, as a JSON object (a mapping in a YAML/JSON config file), "
            'e.g. \'{"alpha": 0.3}\' for ogm_ge, \'{"dam_cap": "none"}\' for aim. Each method lists its options in '
            "the dataclass `Config` beside it (docs/methods/<method>.md); an unknown key fails with the method's "
            'options. A composition keys each method\'s options by its name, e.g. \'{"unimodal_losses": {"weight": '
            '0.5}, "aim": {"dam_cap": "none"}}\'.'
        },
    )
    learning_rate_mapping: dict | str | None = field(
        default=None,
        metadata={
            "help": "Learning rates of chosen parameters, as a JSON object (a mapping in a YAML/JSON config file): "
            "key a modality name (its whole encoder) or a regex matching whole parameter names, value a "
            'learning rate, e.g. \'{"text": 2e-5, "fusion\\\\..*": 1e-2}\'. A parameter takes the first key that '
            "matches it, the rest learning_rate; the scheduler scales each from its own rate. A key that takes "
            "no trainable parameter is an error."
        },
    )
    # Deprecated parameters: AIM's options as they were before they moved to `modulation_kwargs`, kept
    # for one release; one that is set is warned of and moved there (`_move_aim_aliases`).
    aim_alpha: float | None = _aim_alias("alpha")
    aim_r_max: float | None = _aim_alias("r_max")
    aim_min_lambda: float | None = _aim_alias("min_lambda")
    aim_beta_aux: float | None = _aim_alias("beta_aux")
    aim_tau: float | None = _aim_alias("tau")
    aim_momentum: float | None = _aim_alias("momentum")
    aim_prototypes: str | None = _aim_alias("prototypes")
    aim_prototype_tokens: int | None = _aim_alias("prototype_tokens")
    aim_prototype_every: int | None = _aim_alias("prototype_every")
    aim_prototype_iters: int | None = _aim_alias("prototype_iters")
    aim_prototype_lr: float | None = _aim_alias("prototype_lr")
    aim_pam: str | None = _aim_alias("pam")
    aim_aux_trains: str | None = _aim_alias("aux_trains")
    aim_aux_mode: str | None = _aim_alias("aux_mode")
    aim_mask_by: str | None = _aim_alias("mask_by")
    aim_dam_cap: str | None = _aim_alias("dam_cap")
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep the raw modality columns for the collator (the model's forward takes none of them)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        import torch

        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # pinning needs a GPU; else torch warns on every run
        from .modulation import MODULATIONS
        from .modulation.composite import composition_members, is_composition, join_methods

        self.modulation = join_methods(self.modulation)  # a list in Python: a composition
        if self.modulation not in MODULATIONS and not is_composition(self.modulation):
            raise ValueError(f"Unknown modulation {self.modulation!r}: choose one of {', '.join(MODULATIONS)}.")
        if self.modulation_start is not None and self.modulation_start < 0:
            raise ValueError(f"modulation_start must be >= 0, got {self.modulation_start}.")
        self.modulation_kwargs = json_mapping("modulation_kwargs", self.modulation_kwargs)
        self._move_aim_aliases()
        self.learning_rate_mapping = check_learning_rate_mapping(
            json_mapping("learning_rate_mapping", self.learning_rate_mapping)
        )
        # Fail at parse time, not in the trainer.
        if is_composition(self.modulation):
            composition_members(self.modulation, self.modulation_kwargs, MODULATIONS)
        else:
            MODULATIONS[self.modulation].make_config(self.modulation_kwargs)

    def _move_aim_aliases(self) -> None:
        """Each deprecated `aim_<option>` that is set: a FutureWarning naming its new spelling, then the
        value moved into `modulation_kwargs` (a composition's `"aim"` entry) and the field unset. A
        one-line ValueError where the same option is also in `modulation_kwargs`, where the
        modulation does not run AIM, or for a value a removed option never had."""
        from .modulation.composite import SEPARATOR

        composed = SEPARATOR in self.modulation
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.name.startswith("aim_") or value is None:
                continue
            option = f.name[len("aim_") :]
            setattr(self, f.name, None)
            if option in _REMOVED_AIM_OPTIONS:
                kept = _REMOVED_AIM_OPTIONS[option]
                warnings.warn(
                    f"{f.name} is deprecated and goes in the next release: AIM always uses {option}={kept!r}.",
                    FutureWarning,
                    stacklevel=4,
                )
                if value != kept:
                    raise ValueError(
                        f"{f.name}={value!r} is no longer available (rejected by the study in docs/method.md): "
                        f"AIM always uses {kept!r}."
                    )
                continue
            spelling = "modulation_kwargs " + json.dumps({"aim": {option: value}} if composed else {option: value})
            warnings.warn(
                f"{f.name} is deprecated and goes in the next release: use {spelling}.", FutureWarning, stacklevel=4
            )
            if "aim" not in self.modulation.split(SEPARATOR):
                raise ValueError(f"{f.name} is an option of AIM, which modulation {self.modulation!r} does not run.")
            kwargs = dict(self.modulation_kwargs)  # the caller's mapping stays as given
            if composed:
                if not isinstance(kwargs.get("aim", {}), Mapping):
                    return  # composition_members names the mistake
                kwargs["aim"] = target = dict(kwargs.get("aim", {}))
            else:
                target = kwargs
            if option in target:
                raise ValueError(f"{f.name} and modulation_kwargs both give {option!r}: keep {spelling} only.")
            target[option] = value
            self.modulation_kwargs = kwargs


def json_mapping(name: str, value: dict | str | None) -> dict:
    """A dict field given as a dict, a JSON object string (the command line) or None (empty)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} is not a JSON object: {err}.") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object / mapping, got {value!r}.")
    return value
