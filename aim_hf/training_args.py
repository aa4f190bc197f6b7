"""`AIMConfig`: `TrainingArguments` plus the modulation method and its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class AIMConfig(TrainingArguments):
    r"""Training arguments of [`AIMTrainer`]: every [`~transformers.TrainingArguments`] field, plus
    the balanced-learning method and its hyperparameters. Defaults follow `AIM_SPEC.md` (AIM) and
    the OGM-GE reference code.

    `remove_unused_columns` defaults to `False`: the raw modality columns (images, audio, text) are
    consumed by the [`MultimodalCollator`], not by the model's `forward`.
    """

    modulation: str = field(
        default="aim",
        metadata={"help": "Balanced-learning method: 'aim', 'ogm_ge' or 'none' (plain joint training)."},
    )
    modulation_start: float | None = field(
        default=None,
        metadata={
            "help": "Optimizer step at which the modulation starts; a value < 1 is a fraction of all steps. "
            "Default: the method's (AIM: 0.1, a warm-up of a tenth of the steps; OGM-GE: 0)."
        },
    )
    modulation_end: float | None = field(
        default=None,
        metadata={"help": "Optimizer step at which the modulation stops (< 1: a fraction of all steps). Default: never."},
    )
    # OGM-GE
    ogm_alpha: float = field(default=0.8, metadata={"help": "OGM-GE: alpha in k = 1 - tanh(alpha * rho)."})
    ogm_noise: bool = field(
        default=True, metadata={"help": "OGM-GE: add Gaussian noise N(0, std(grad)) (GE); False gives plain OGM."}
    )
    ogm_conv_only: bool = field(
        default=False,
        metadata={
            "help": "OGM-GE: modulate only 4-D (convolution) gradients, as the reference code does. The default "
            "modulates every encoder parameter (the reference's choice does nothing to a transformer)."
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
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep the raw modality columns for the collator (the model's forward takes none of them)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        from .modulation import MODULATIONS

        if self.modulation not in MODULATIONS:
            raise ValueError(f"Unknown modulation {self.modulation!r}: choose one of {', '.join(MODULATIONS)}.")
        if self.modulation_start is not None and self.modulation_start < 0:
            raise ValueError(f"modulation_start must be >= 0, got {self.modulation_start}.")
        if self.aim_r_max < 0 or self.aim_r_max > 1:
            raise ValueError(f"aim_r_max must lie in [0, 1], got {self.aim_r_max}.")
        if not 0 <= self.aim_min_lambda < 1:
            raise ValueError(f"aim_min_lambda must lie in [0, 1), got {self.aim_min_lambda}.")
        if not 0 <= self.aim_momentum < 1:
            raise ValueError(f"aim_momentum must lie in [0, 1), got {self.aim_momentum}.")
