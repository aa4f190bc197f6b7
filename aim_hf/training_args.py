"""`AIMConfig`: `TrainingArguments` plus the modulation method and its hyperparameters."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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


@dataclass
class AIMConfig(TrainingArguments):
    r"""Training arguments of [`AIMTrainer`]: every [`~transformers.TrainingArguments`] field, plus
    the balanced-learning method and its hyperparameters. Defaults follow `AIM_SPEC.md` (AIM) and
    each method's reference code.

    A method's own hyperparameters are not fields here: they travel in `modulation_kwargs` and are
    checked against the method's `Config` dataclass (`aim_hf.modulation.base`), e.g.
    `AIMConfig(modulation="ogm_ge", modulation_kwargs={"alpha": 0.3})` or on the command line
    `--modulation ogm_ge --modulation_kwargs '{"alpha": 0.3}'`. (AIM's `aim_*` fields move there later.)

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
            'e.g. \'{"alpha": 0.3}\' for ogm_ge. Each method lists its options in the dataclass `Config` beside '
            "it (docs/methods/<method>.md); an unknown key fails with the method's options. AIM still takes its "
            "aim_* options. A composition keys each method's options by its name, e.g. "
            '\'{"unimodal_losses": {"weight": 0.5}, "ogm_ge": {"alpha": 0.3}}\'.'
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
    # AIM
    aim_alpha: float = field(default=1.0, metadata={"help": "AIM (DAM): alpha in lambda = tanh(alpha * (rho - 1))."})
    aim_r_max: float = field(
        default=0.5,
        metadata={"help": "AIM (PAM): largest fraction of a layer's units switched off in an Auxiliary Block."},
    )
    aim_min_lambda: float = field(
        default=0.1,
        metadata={
            "help": "AIM: depth groups whose strength lambda is at most this get no Auxiliary Block. 0 is the spec: "
            "any lambda > 0 switches off at least one unit per layer, so a depth where the modalities score almost "
            "alike gets an auxiliary pass for one unit (docs/method.md, 'Benchmark study')."
        },
    )
    aim_beta_aux: float = field(default=1.0, metadata={"help": "AIM: weight of the auxiliary loss."})
    aim_tau: float = field(default=0.1, metadata={"help": "AIM (DAP): temperature of the prototype softmax."})
    aim_momentum: float = field(
        default=0.9,
        metadata={"help": "AIM: EMA momentum of the prototypes, the depth scores and the unit importances."},
    )
    aim_prototypes: str = field(
        default="learned",
        metadata={
            "help": "AIM (DAP): 'learned': per modality, depth and class a tensor in that depth's output space, "
            "optimised by cross-entropy through the frozen rest of the network; 'class_mean': EMA of the class "
            "means of the pooled features (the first reading, an ablation)."
        },
    )
    aim_prototype_tokens: int = field(
        default=2,
        metadata={
            "help": "AIM (DAP, learned): tokens of a prototype at a transformer depth; side of its square map at a "
            "convolutional stage (uncut where the encoder's later layers cannot run on that shape)."
        },
    )
    aim_prototype_every: int = field(
        default=25, metadata={"help": "AIM (DAP, learned): refresh the prototypes every this many optimizer steps."}
    )
    aim_prototype_iters: int = field(
        default=5, metadata={"help": "AIM (DAP, learned): Adam iterations per refresh (warm-started)."}
    )
    aim_prototype_lr: float = field(default=0.1, metadata={"help": "AIM (DAP, learned): Adam's learning rate."})
    aim_pam: str = field(
        default="dominant",
        metadata={
            "help": "AIM (PAM): 'dominant': Auxiliary Blocks only in the modalities stronger than the weakest at a "
            "depth (the default, chosen by the study in docs/method.md); 'symmetric': every modality weaker than "
            "the strongest also gets one there, of strength tanh(alpha * (1 - s / s_max))."
        },
    )
    aim_aux_trains: str = field(
        default="weak_only",
        metadata={
            "help": "AIM [ours]: what the auxiliary loss trains: 'weak_only' (the head and the encoders of the "
            "modalities dominant at no depth; the default, chosen by the study in docs/method.md: the dominant "
            "encoder learns as in joint training), 'all' (the head and every encoder) or 'no_head' (the encoders "
            "only)."
        },
    )
    aim_aux_mode: str = field(
        default="add",
        metadata={
            "help": "AIM: 'add': L = L_mm + beta_aux * L_aux; 'replace': in steps with an auxiliary pass the joint "
            "loss is taken on the auxiliary logits instead (L = L_aux, beta_aux unused)."
        },
    )
    aim_mask_by: str = field(
        default="high",
        metadata={
            "help": "AIM (PAM): which units an Auxiliary Block switches off: 'high' (the most important, so that "
            "L_aux trains the under-optimized ones) or 'low' (the least important)."
        },
    )
    aim_dam_cap: str = field(
        default="min",
        metadata={
            "help": "AIM (DAM) [ours]: bound each strength by the weakest modality's capacity at that depth, "
            "c = clip((s_min - 1/K) / (s - 1/K), 0, 1), so that a modality is not switched off for a weak one that "
            "decodes next to nothing: 'min' (min(lambda, c), the default), 'product' (lambda * c) or 'none' (the "
            "spec's lambda)."
        },
    )
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
        self.learning_rate_mapping = check_learning_rate_mapping(
            json_mapping("learning_rate_mapping", self.learning_rate_mapping)
        )
        # Fail at parse time, not in the trainer.
        if is_composition(self.modulation):
            composition_members(self.modulation, self.modulation_kwargs, MODULATIONS)
        else:
            MODULATIONS[self.modulation].make_config(self.modulation_kwargs)
        if self.aim_r_max < 0 or self.aim_r_max > 1:
            raise ValueError(f"aim_r_max must lie in [0, 1], got {self.aim_r_max}.")
        if not 0 <= self.aim_min_lambda < 1:
            raise ValueError(f"aim_min_lambda must lie in [0, 1), got {self.aim_min_lambda}.")
        if not 0 <= self.aim_momentum < 1:
            raise ValueError(f"aim_momentum must lie in [0, 1), got {self.aim_momentum}.")
        from .modulation.aim import AIM_CHOICES

        for name, choices in AIM_CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"Unknown {name} {getattr(self, name)!r}: choose one of {', '.join(choices)}.")
        for name in ("aim_prototype_tokens", "aim_prototype_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.aim_prototype_iters < 0:
            raise ValueError(f"aim_prototype_iters must be >= 0, got {self.aim_prototype_iters}.")


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
