"""Configuration of the multimodal classifier built from one Hugging Face encoder per modality.

This file imports only torch/transformers so that it can travel with a pushed model as remote code.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

FUSIONS = ("concat", "sum", "gated", "film")
POOLINGS = ("mean", "cls")


class MultimodalConfig(PretrainedConfig):
    r"""Configuration of a [`MultimodalModel`].

    Args:
        encoder_configs (`dict[str, PretrainedConfig | dict]`):
            One encoder configuration per modality, keyed by the modality's name ("vision", "audio",
            "text", ... any names, at least two). Dicts are turned into configs with `AutoConfig.for_model`.
        fusion (`str`, *optional*, defaults to `"concat"`):
            How the per-modality features are fused: `"concat"`, `"sum"` (of per-modality logits),
            `"gated"` or `"film"`.
        fusion_dim (`int`, *optional*, defaults to 256):
            Width of the per-modality projections of the `"gated"` and `"film"` fusions.
        film_condition (`str`, *optional*):
            Modality whose feature conditions the others in the `"film"` fusion (default: the first).
        num_depth_groups (`int`, *optional*, defaults to 4):
            Number of contiguous groups ("depths") each encoder's layers are split into; an encoder
            with fewer layers gets one group per layer.
        pooling (`dict[str, str]`, *optional*):
            Per-modality pooling of a depth group's output: `"mean"` (masked mean over tokens, or over
            the spatial grid of a convolutional stage; the default) or `"cls"` (first token).
        layer_paths (`dict[str, str]`, *optional*):
            Per-modality dotted path of the encoder's `nn.ModuleList` of layers (e.g.
            `"encoder.layer"`). Found automatically when not given.
        freeze (`dict[str, int]`, *optional*):
            Per-modality number of leading layers to freeze together with the embeddings; `-1` freezes
            the whole encoder.
        num_labels (`int`): Number of classes (`id2label` / `label2id` as in any classifier config).
    """

    model_type = "aim_multimodal"
    keys_to_ignore_at_inference = ["depth_features", "fused_loss"]

    def __init__(
        self,
        encoder_configs: dict[str, PretrainedConfig | dict[str, Any]] | None = None,
        fusion: str = "concat",
        fusion_dim: int = 256,
        film_condition: str | None = None,
        num_depth_groups: int = 4,
        pooling: dict[str, str] | None = None,
        layer_paths: dict[str, str] | None = None,
        freeze: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        encoder_configs = dict(encoder_configs or {})
        # JSON files sort keys: the saved modality order restores the fusion's column order.
        order = kwargs.pop("modality_order", None)
        if order is not None:
            encoder_configs = {m: encoder_configs[m] for m in order}
        for name, cfg in encoder_configs.items():
            if isinstance(cfg, dict):
                cfg = dict(cfg)
                encoder_configs[name] = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        self.encoder_configs = encoder_configs
        self.fusion = fusion
        self.fusion_dim = fusion_dim
        self.film_condition = film_condition
        self.num_depth_groups = num_depth_groups
        self.pooling = dict(pooling or {})
        self.layer_paths = dict(layer_paths or {})
        self.freeze = dict(freeze or {})
        super().__init__(**kwargs)
        # A bare config (as `PretrainedConfig.to_diff_dict` builds for its defaults) has no encoders;
        # every config that builds a model is validated.
        if encoder_configs:
            self.validate()

    @property
    def modalities(self) -> list[str]:
        return list(self.encoder_configs)

    def validate(self) -> None:
        """Raise a `ValueError` naming what is wrong with this configuration."""
        if len(self.encoder_configs) < 2:
            raise ValueError(
                f"A multimodal model needs at least two modalities, got {self.modalities}."
            )
        if self.fusion not in FUSIONS:
            raise ValueError(f"Unknown fusion {self.fusion!r}: choose one of {', '.join(FUSIONS)}.")
        if self.num_depth_groups < 1:
            raise ValueError(f"num_depth_groups must be >= 1, got {self.num_depth_groups}.")
        for field in ("pooling", "layer_paths", "freeze"):
            unknown = set(getattr(self, field)) - set(self.modalities)
            if unknown:
                raise ValueError(
                    f"{field} names modalities {sorted(unknown)} that have no encoder; "
                    f"the modalities are {self.modalities}."
                )
        for modality, pooling in self.pooling.items():
            if pooling not in POOLINGS:
                raise ValueError(
                    f"Unknown pooling {pooling!r} for {modality!r}: choose one of {', '.join(POOLINGS)}."
                )
        if self.film_condition is not None and self.film_condition not in self.encoder_configs:
            raise ValueError(
                f"film_condition {self.film_condition!r} is not a modality; the modalities are {self.modalities}."
            )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        encoders = {}
        for name, cfg in self.encoder_configs.items():
            cfg_dict = cfg.to_dict()
            cfg_dict.pop("transformers_version", None)
            encoders[name] = cfg_dict
        output["encoder_configs"] = encoders
        output["modality_order"] = list(self.encoder_configs)
        return output
