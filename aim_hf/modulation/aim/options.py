"""AIM's options (`modulation_kwargs`, checked by `Modulation.make_config`). The paper gives no
values we know of: the defaults are ours, the choices among readings made on the benchmark's
validation split; docs/methods/aim.md says where each comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class AIMOptions:
    """AIM's hyperparameters (`modulation_kwargs`, e.g. `{"dam_cap": "none"}`; in a composition
    `{"aim": {...}}`)."""

    alpha: float = field(
        default=1.0,
        metadata={"help": "DAM: alpha in lambda = tanh(alpha * (rho - 1)) (and in symmetric PAM's mu)."},
    )
    r_max: float = field(
        default=0.5,
        metadata={"help": "PAM: largest fraction of a layer's units switched off in an Auxiliary Block, in [0, 1]."},
    )
    min_lambda: float = field(
        default=0.1,
        metadata={
            "help": "Depth groups whose strength is at most this get no Auxiliary Block, in [0, 1). 0 is the "
            "paper's reading: any strength > 0 switches off at least one unit per layer, so a depth where the "
            "modalities score almost alike gets an auxiliary pass for one unit (ours: 0.1)."
        },
    )
    beta_aux: float = field(
        default=1.0, metadata={"help": "Weight of the auxiliary loss: L = L_mm + beta_aux * L_aux."}
    )
    tau: float = field(default=0.1, metadata={"help": "DAP: temperature of the softmax over prototype cosines."})
    momentum: float = field(
        default=0.9,
        metadata={
            "help": "EMA momentum of the depth scores, the unit importances and the class-mean prototypes, in [0, 1)."
        },
    )
    center: bool = field(
        default=False,
        metadata={
            "help": "DAP, ours: take the cosines between the pooled depth output and the prototypes after "
            "subtracting the running mean (EMA, `momentum`) of the normalised pooled output, so that a direction "
            "every example shares (a pretrained encoder's, at its first depths) does not make every cosine alike "
            "and the depth score near chance."
        },
    )
    prototypes: Literal["learned", "class_mean"] = field(
        default="learned",
        metadata={
            "help": "DAP: 'learned': per modality, depth and class a tensor in that depth's output space, optimised "
            "by cross-entropy through the frozen rest of the network; 'class_mean': EMA of the class means of the "
            "pooled features (the first reading, an ablation)."
        },
    )
    prototype_tokens: int = field(
        default=2,
        metadata={
            "help": "DAP, learned: tokens of a prototype at a transformer depth; side of its square map at a "
            "convolutional stage (uncut where the encoder's later layers cannot run on that shape); >= 1."
        },
    )
    prototype_every: int = field(
        default=25, metadata={"help": "DAP, learned: refresh the prototypes every this many optimizer steps (>= 1)."}
    )
    prototype_iters: int = field(
        default=5, metadata={"help": "DAP, learned: Adam iterations per refresh, warm-started (>= 0)."}
    )
    prototype_lr: float = field(default=0.1, metadata={"help": "DAP, learned: Adam's learning rate."})
    pam: Literal["dominant", "symmetric"] = field(
        default="dominant",
        metadata={
            "help": "PAM: 'dominant': Auxiliary Blocks only in the modalities stronger than the weakest at a depth "
            "(chosen by the study in docs/method.md); 'symmetric' (our reading of the paper's 'each modality', "
            "rejected by the study): every modality weaker than the strongest also gets one there, of strength "
            "tanh(alpha * (1 - s / s_max))."
        },
    )
    aux_trains: Literal["weak_only", "all"] = field(
        default="weak_only",
        metadata={
            "help": "What the auxiliary loss trains: 'weak_only' (ours, chosen by the study in docs/method.md): "
            "the encoders of the modalities dominant at no depth, while the head and the dominant encoders learn "
            "as in joint training; 'all' (the first reading, the default before the study): the head and every "
            "encoder."
        },
    )
    dam_cap: Literal["min", "none"] = field(
        default="min",
        metadata={
            "help": "DAM, ours: bound each strength by the weakest modality's capacity at that depth, "
            "c = clip((s_min - 1/K) / (s - 1/K), 0, 1), so that a modality is not switched off for a weak one that "
            "decodes next to nothing: 'min' (min(lambda, c), chosen by the study) or 'none' (the paper's lambda)."
        },
    )

    def __post_init__(self) -> None:
        if not 0 <= self.r_max <= 1:
            raise ValueError(f"aim's r_max must lie in [0, 1], got {self.r_max}.")
        if not 0 <= self.min_lambda < 1:
            raise ValueError(f"aim's min_lambda must lie in [0, 1), got {self.min_lambda}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"aim's momentum must lie in [0, 1), got {self.momentum}.")
        for name in ("prototype_tokens", "prototype_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"aim's {name} must be >= 1, got {getattr(self, name)}.")
        if self.prototype_iters < 0:
            raise ValueError(f"aim's prototype_iters must be >= 0, got {self.prototype_iters}.")
