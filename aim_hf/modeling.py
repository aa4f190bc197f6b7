"""A multimodal classifier built from one pretrained Hugging Face encoder per modality.

Each encoder's layers are split into contiguous depth groups; the pooled output of every group is
returned so that a modulation method (AIM) can score each depth, and the groups' layers and units
are exposed (`depth_layers`, `depth_groups`, `unit_modules`, `pool`) for a method's own passes.

This file imports only torch/transformers and `configuration.py`, so it can travel as remote code.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
import transformers
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration import MultimodalConfig

_LAYER_LIST_NAMES = ("layer", "layers", "stages", "blocks", "block")
_UNIT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class MultimodalOutput(ModelOutput):
    """Output of [`MultimodalModel`].

    Args:
        loss: cross-entropy of the fused logits plus the sum of the probes' cross-entropies.
        logits: fused logits `(batch, num_labels)`.
        modality_logits: each modality's additive share of the fused logits (as OGM-GE scores them).
        probe_logits: logits of each modality's linear probe on its detached final feature.
        depth_features: each modality's pooled feature per depth group, shallow to deep.
        fused_loss: cross-entropy of the fused logits alone.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    modality_logits: dict[str, torch.Tensor] | None = None
    probe_logits: dict[str, torch.Tensor] | None = None
    depth_features: dict[str, tuple[torch.Tensor, ...]] | None = None
    fused_loss: torch.Tensor | None = None


def find_layer_list(encoder: nn.Module, path: str | None = None) -> tuple[str, nn.ModuleList]:
    """The encoder's stack of layers (or stages): `path` if given, else the shallowest
    `nn.ModuleList` named like a layer stack (`layer`, `layers`, `stages`, `blocks`), longest first."""
    if path is not None:
        module = encoder.get_submodule(path)
        if not isinstance(module, nn.ModuleList):
            raise ValueError(f"layer path {path!r} of {type(encoder).__name__} is not an nn.ModuleList.")
        return path, module
    candidates = [
        (name.count("."), -len(module), name, module)
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES
        and "decoder" not in name
    ]
    if not candidates:
        raise ValueError(
            f"Could not find the layer stack of {type(encoder).__name__}; pass its dotted path in "
            "`layer_paths` (e.g. {'vision': 'encoder.layer'})."
        )
    _, _, name, module = min(candidates, key=lambda c: c[:2])
    return name, module


def split_depth_groups(num_layers: int, num_groups: int) -> list[range]:
    """Split `num_layers` layers into `min(num_groups, num_layers)` contiguous, near-equal groups."""
    num_groups = min(num_groups, num_layers)
    bounds = [round(i * num_layers / num_groups) for i in range(num_groups + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(num_groups)]


def hidden_state(output: Any) -> torch.Tensor:
    """A layer's hidden state: its output, or the first element of the tuple it returns."""
    return output if isinstance(output, torch.Tensor) else output[0]


class _EncoderDepths:
    """How one encoder is split into depth groups, and the Linear/Conv units inside each group."""

    def __init__(self, encoder: nn.Module, num_groups: int, path: str | None) -> None:
        self.layer_path, self.layers = find_layer_list(encoder, path)
        self.groups = split_depth_groups(len(self.layers), num_groups)

    def units(self) -> dict[str, tuple[int, nn.Module]]:
        """Every unit module, named relative to the encoder (the names `unit_modules` gives), with its
        depth group: the Linear/Conv layers inside the groups' layers whose weight is trainable, found
        now, so that frozen layers and the frozen base layers under a PEFT adapter (whose `lora_A` /
        `lora_B` Linears are units instead) are left out, even when adapters were injected after the
        model was built."""
        units = {}
        for g, layer_range in enumerate(self.groups):
            for i in layer_range:
                for name, module in self.layers[i].named_modules():
                    if isinstance(module, _UNIT_TYPES) and module.weight.requires_grad:
                        full = f"{self.layer_path}.{i}.{name}" if name else f"{self.layer_path}.{i}"
                        units[full] = (g, module)
        return units


class _Fusion(nn.Module):
    """Fuses per-modality features into logits and returns each modality's additive share."""

    def __init__(self, config: MultimodalConfig, dims: dict[str, int]) -> None:
        super().__init__()
        self.modalities = list(dims)
        self.num_labels = config.num_labels

    def split_classify(self, vectors: dict[str, torch.Tensor], weight: torch.Tensor, bias: torch.Tensor):
        """Apply one linear classifier to the concatenation of `vectors`, split by modality columns
        (the bias shared equally), as OGM-GE decomposes a concat fusion."""
        shares, start = {}, 0
        for m in self.modalities:
            width = vectors[m].shape[-1]
            shares[m] = F.linear(vectors[m], weight[:, start : start + width]) + bias / len(self.modalities)
            start += width
        return sum(shares.values()), shares

    def logits_with(self, features: dict[str, torch.Tensor], present: Iterable[str]) -> torch.Tensor:
        """The fused logits with only the modalities in `present`: every other one's feature enters as
        zeros, as `feature_keep=0` drops it in the model's forward (AGM's coalitions, MLA's unimodal
        logits, `aim-hf evaluate`'s blanked modalities)."""
        present = set(present)
        return self({m: f if m in present else torch.zeros_like(f) for m, f in features.items()})[0]


class ConcatFusion(_Fusion):
    """`fc(concat(f_1, ..., f_M))`."""

    def __init__(self, config: MultimodalConfig, dims: dict[str, int]) -> None:
        super().__init__(config, dims)
        self.fc = nn.Linear(sum(dims.values()), config.num_labels)

    def forward(self, features: dict[str, torch.Tensor]):
        return self.split_classify(features, self.fc.weight, self.fc.bias)


class SumFusion(_Fusion):
    """`sum_m fc_m(f_m)`: the sum of per-modality logits."""

    def __init__(self, config: MultimodalConfig, dims: dict[str, int]) -> None:
        super().__init__(config, dims)
        self.fc = nn.ModuleDict({m: nn.Linear(d, config.num_labels) for m, d in dims.items()})

    def forward(self, features: dict[str, torch.Tensor]):
        shares = {m: self.fc[m](features[m]) for m in self.modalities}
        return sum(shares.values()), shares


class GatedFusion(_Fusion):
    """Each modality's projection is gated by a sigmoid of all features, then classified:
    `fc(concat_m(sigmoid(g_m(concat f)) * p_m(f_m)))`. With two modalities this generalises
    OGM-GE's gated fusion (one modality gating the other) to gates that see every modality."""

    def __init__(self, config: MultimodalConfig, dims: dict[str, int]) -> None:
        super().__init__(config, dims)
        h = config.fusion_dim
        self.proj = nn.ModuleDict({m: nn.Linear(d, h) for m, d in dims.items()})
        self.gate = nn.ModuleDict({m: nn.Linear(sum(dims.values()), h) for m in dims})
        self.fc = nn.Linear(h * len(dims), config.num_labels)

    def forward(self, features: dict[str, torch.Tensor]):
        joint = torch.cat([features[m] for m in self.modalities], dim=-1)
        vectors = {m: torch.sigmoid(self.gate[m](joint)) * self.proj[m](features[m]) for m in self.modalities}
        return self.split_classify(vectors, self.fc.weight, self.fc.bias)


class FiLMFusion(_Fusion):
    """Feature-wise linear modulation: the conditioning modality `c` scales and shifts every other
    modality's projection, `h_m = gamma_m(f_c) * p_m(f_m) + beta_m(f_c)`, then `fc(concat h)`."""

    def __init__(self, config: MultimodalConfig, dims: dict[str, int]) -> None:
        super().__init__(config, dims)
        h = config.fusion_dim
        self.condition = config.film_condition or self.modalities[0]
        self.proj = nn.ModuleDict({m: nn.Linear(d, h) for m, d in dims.items()})
        self.film = nn.ModuleDict(
            {m: nn.Linear(dims[self.condition], 2 * h) for m in dims if m != self.condition}
        )
        self.fc = nn.Linear(h * len(dims), config.num_labels)

    def forward(self, features: dict[str, torch.Tensor]):
        cond = features[self.condition]
        vectors = {}
        for m in self.modalities:
            projected = self.proj[m](features[m])
            if m != self.condition:
                gamma, beta = self.film[m](cond).chunk(2, dim=-1)
                projected = gamma * projected + beta
            vectors[m] = projected
        return self.split_classify(vectors, self.fc.weight, self.fc.bias)


FUSION_CLASSES = {"concat": ConcatFusion, "sum": SumFusion, "gated": GatedFusion, "film": FiLMFusion}


def _zero_token_embeddings(encoder: nn.Module) -> list[str]:
    """The class/distillation tokens and position embeddings of `encoder` that are all zero: left so
    they make every input start from the same tokens (and an all-zero patch gives an all-zero token)."""
    embeddings = getattr(encoder, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        return []
    return [
        name
        for name, param in embeddings.named_parameters()
        if name.endswith(("token", "position_embeddings")) and not param.any()
    ]


def tower_class(config: Any) -> type[PreTrainedModel] | None:
    """For a config that `AutoModel` does not map, such as a dual encoder's tower (CLAP's
    `ClapAudioConfig`), the transformers model class named after it (`ClapAudioModel`); None where
    `AutoModel` maps the config or transformers has no such class."""
    if type(config) in MODEL_MAPPING:
        return None
    cls = getattr(transformers, type(config).__name__.removesuffix("Config") + "Model", None)
    return cls if isinstance(cls, type) and issubclass(cls, PreTrainedModel) else None


def _encoder_of(model: PreTrainedModel) -> PreTrainedModel:
    """The encoder of an encoder-decoder model (Whisper; T5 too when its config, as a saved
    `T5EncoderModel`'s, does not say it is one), else `model`."""
    if getattr(model.config, "is_encoder_decoder", False) or isinstance(getattr(model, "decoder", None), nn.Module):
        return model.get_encoder()
    return model


def build_encoder(config: Any) -> PreTrainedModel:
    """An encoder from its config with the Auto classes (or its [`tower_class`]); encoder-decoder
    models (Whisper, T5) keep only their encoder."""
    tower = tower_class(config)
    return _encoder_of(tower._from_config(config) if tower is not None else AutoModel.from_config(config))


def load_pretrained_encoder(name: str, **kwargs: Any) -> PreTrainedModel:
    """`AutoModel.from_pretrained(name, **kwargs)`, or for a saved tower that `AutoModel` does not map
    (a `ClapAudioModel`) its [`tower_class`]; of an encoder-decoder model (Whisper, T5) the encoder."""
    try:
        model = AutoModel.from_pretrained(name, **kwargs)
    except ValueError:
        tower = tower_class(AutoConfig.from_pretrained(name, return_unused_kwargs=True, **kwargs)[0])
        if tower is None:
            raise
        model = tower.from_pretrained(name, **kwargs)
    return _encoder_of(model)


def _feature_dim(encoder: nn.Module, depths: _EncoderDepths) -> int:
    """Width of the last layer's output, read from the layer itself rather than from a config field
    that some families lack (MobileNets, EfficientNet, MobileViT): the output width of its last
    Linear / convolution (a transformer block's output projection, a CNN block's last convolution)."""
    for module in reversed(list(depths.layers[-1].modules())):
        for attr in ("out_features", "out_channels", "nf"):  # nf: transformers' GPT-2 style Conv1D
            if isinstance(getattr(module, attr, None), int):
                return getattr(module, attr)
    raise ValueError(
        f"Cannot tell the feature width of {type(encoder).__name__}: its last layer "
        f"({depths.layer_path}.{len(depths.layers) - 1}) has no Linear or convolution."
    )


class MultimodalModel(PreTrainedModel):
    r"""A classifier over several modalities, each encoded by a Hugging Face encoder.

    The model returns fused logits, each modality's share of them, per-modality linear probes on
    detached final features (the "unimodal" accuracies used to judge balance), and each modality's
    pooled feature per depth group.

    Example:

    ```python
    >>> model = MultimodalModel.from_encoders(
    ...     {"vision": "google/vit-base-patch16-224-in21k", "audio": "MIT/ast-finetuned-audioset-10-10-0.4593"},
    ...     num_labels=6, fusion="concat")
    >>> out = model(vision={"pixel_values": pixels}, audio={"input_values": spectrograms}, labels=labels)
    ```
    """

    config_class = MultimodalConfig
    base_model_prefix = "multimodal"
    main_input_name = "labels"
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: MultimodalConfig, encoders: dict[str, PreTrainedModel] | None = None) -> None:
        if not config.encoder_configs:
            raise ValueError(
                "the config has no encoder_configs, so it is not a MultimodalModel's config (a single encoder's "
                "checkpoint?). Build a model from encoders with MultimodalModel.from_encoders({...}), or load a "
                "folder written by MultimodalModel.save_pretrained or AIMTrainer."
            )
        config.validate()
        super().__init__(config)
        given = encoders is not None
        if encoders is None:
            encoders = {m: build_encoder(cfg) for m, cfg in config.encoder_configs.items()}
        if list(encoders) != config.modalities:
            raise ValueError(f"encoders {list(encoders)} do not match the config's modalities {config.modalities}.")
        for m, encoder in encoders.items():
            # Layer-drop skips layers at random, which would make the depth groups meaningless.
            for attr in ("layerdrop", "encoder_layerdrop"):
                if getattr(encoder.config, attr, 0):
                    setattr(encoder.config, attr, 0.0)
            # Keep one config object, so that the saved config describes the encoder as it runs.
            config.encoder_configs[m] = encoder.config
        self.encoders = nn.ModuleDict(encoders)
        self._depths = {
            m: _EncoderDepths(enc, config.num_depth_groups, config.layer_paths.get(m)) for m, enc in encoders.items()
        }
        dims = {m: _feature_dim(enc, self._depths[m]) for m, enc in encoders.items()}
        self.fusion = FUSION_CLASSES[config.fusion](config, dims)
        self.probes = nn.ModuleDict({m: nn.Linear(d, config.num_labels) for m, d in dims.items()})
        if given:
            # Given encoders keep their weights: post_init would re-draw modules their own init does
            # not know, such as a PEFT adapter injected into them (LoRA's B starts at zero).
            for module in self.encoders.modules():
                module._is_hf_initialized = True
        self.post_init()
        self._apply_freeze()

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> "MultimodalModel":
        """`PreTrainedModel.from_pretrained`, with errors that name what was being loaded."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except ValueError as err:
            raise ValueError(f"Cannot load a MultimodalModel from {str(pretrained_model_name_or_path)!r}: {err}") from err

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, the weight files given the mode of the config file:
        safetensors writes them owner-only (600) whatever the umask, the other files follow it."""
        super().save_pretrained(save_directory, *args, **kwargs)
        config = os.path.join(save_directory, "config.json")
        if os.path.isfile(config):
            mode = os.stat(config).st_mode & 0o777
            for name in os.listdir(save_directory):
                if name.endswith(".safetensors"):
                    os.chmod(os.path.join(save_directory, name), mode)

    @classmethod
    def from_encoders(
        cls,
        encoders: Mapping[str, str | PreTrainedModel],
        num_labels: int | None = None,
        fusion: str = "concat",
        freeze: dict[str, int] | None = None,
        encoder_kwargs: dict[str, dict[str, Any]] | None = None,
        **config_kwargs: Any,
    ) -> "MultimodalModel":
        """Build a model from one encoder per modality.

        Args:
            encoders: modality name -> Hub model id, local path, or an already loaded model (a
                `PreTrainedModel`, or one wrapped by PEFT: `peft.get_peft_model(encoder, LoraConfig(...))`,
                without a `task_type`). Ids and paths are loaded with `AutoModel.from_pretrained` (for an
                encoder-decoder model such as Whisper, its encoder is kept; a tower AutoModel does not
                map, such as a saved `ClapAudioModel`, by its own class).
            num_labels: number of classes (or give `id2label`).
            fusion: `"concat"`, `"sum"`, `"gated"` or `"film"`.
            freeze: modality -> number of leading layers to freeze with the embeddings; -1 freezes
                the whole encoder.
            encoder_kwargs: modality -> extra keyword arguments for `from_pretrained`.
            config_kwargs: any other [`MultimodalConfig`] field (`num_depth_groups`, `id2label`, ...).
        """
        if len(encoders) < 2:
            raise ValueError(f"A multimodal model needs at least two encoders, got {list(encoders)}.")
        encoder_kwargs = encoder_kwargs or {}
        loaded = {}
        for m, enc in encoders.items():
            if isinstance(enc, str):
                try:
                    enc = load_pretrained_encoder(enc, **encoder_kwargs.get(m, {}))
                except (OSError, ValueError) as err:
                    raise ValueError(
                        f"Could not load the {m!r} encoder from {enc!r}: {err}\nGive a Hub model id or a "
                        "local folder that AutoModel.from_pretrained can load."
                    ) from err
            elif not isinstance(getattr(enc, "get_base_model", lambda: enc)(), PreTrainedModel):
                raise TypeError(
                    f"Encoder {m!r} must be a model id, a path, a PreTrainedModel or a PEFT model around one, got {type(enc)}."
                )
            loaded[m] = enc
            zero = _zero_token_embeddings(enc)
            if zero:
                warnings.warn(
                    f"The {m!r} encoder's {', '.join(zero)} are all zero (an AST built from a config leaves them so): "
                    "initialise them, e.g. with aim_hf.data.init_token_embeddings(encoder).",
                    stacklevel=2,
                )
        if num_labels is not None:
            config_kwargs["num_labels"] = num_labels
        config = MultimodalConfig(
            encoder_configs={m: enc.config for m, enc in loaded.items()},
            fusion=fusion,
            freeze=freeze,
            **config_kwargs,
        )
        return cls(config, encoders=loaded)

    def _init_weights(self, module: nn.Module) -> None:
        # Only the heads are ours; the encoders initialise (or load) their own weights.
        if isinstance(module, nn.Linear):
            module.reset_parameters()

    def _apply_freeze(self) -> None:
        for m, n in self.config.freeze.items():
            depths = self._depths[m]
            frozen_layers = len(depths.layers) if n < 0 else n
            keep = {id(p) for layer in list(depths.layers)[frozen_layers:] for p in layer.parameters()}
            for p in self.encoders[m].parameters():
                if id(p) not in keep:
                    p.requires_grad_(False)

    # ------------------------------------------------------------------------------ introspection
    @property
    def modalities(self) -> list[str]:
        return self.config.modalities

    def depth_layers(self, modality: str) -> nn.ModuleList:
        """The stack of layers (or stages) of `modality`'s encoder that the depth groups split."""
        return self._depths[modality].layers

    def depth_groups(self, modality: str) -> list[range]:
        """The layer indices of each depth group of `modality`'s encoder."""
        return self._depths[modality].groups

    def unit_modules(self, modality: str) -> list[dict[str, nn.Module]]:
        """Per depth group, the Linear/Conv layers whose output units AIM scores and masks, by name:
        those with a trainable weight (under PEFT's LoRA, the adapters' `lora_A` / `lora_B`)."""
        groups: list[dict[str, nn.Module]] = [{} for _ in self._depths[modality].groups]
        for name, (g, module) in self._depths[modality].units().items():
            groups[g][name] = module
        return groups

    # ---------------------------------------------------------------------- activation checkpointing
    @property
    def supports_gradient_checkpointing(self) -> bool:
        """Whether every encoder can checkpoint its layers (`TrainingArguments(gradient_checkpointing=True)`)."""
        encoders = self._modules.get("encoders")
        return bool(encoders) and all(getattr(e, "supports_gradient_checkpointing", False) for e in encoders.values())

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint, **kwargs: Any
    ) -> None:
        super()._set_gradient_checkpointing(enable, gradient_checkpointing_func, **kwargs)
        if enable:
            # A reentrant checkpoint gives no gradient to its layer's weights (LoRA adapters,
            # unfrozen layers) when the layer's input needs none, as after frozen embeddings.
            self.enable_input_require_grads()
        else:
            self.disable_input_require_grads()

    # ------------------------------------------------------------------------------------ forward
    def _check_inputs(self, inputs: dict[str, Any], labels: torch.Tensor | None) -> int:
        missing = [m for m in self.modalities if m not in inputs]
        unknown = [k for k in inputs if k not in self.modalities]
        if missing or unknown:
            raise ValueError(
                f"The model expects inputs for the modalities {self.modalities}"
                + (f"; missing: {missing}" if missing else "")
                + (f"; unexpected keyword arguments: {unknown}" if unknown else "")
                + ". Pass each modality's processor outputs as a dict, e.g. vision={'pixel_values': ...}."
            )
        sizes = {}
        for m in self.modalities:
            if not isinstance(inputs[m], Mapping) or not inputs[m]:
                raise ValueError(f"Inputs for {m!r} must be a non-empty dict of tensors, got {type(inputs[m]).__name__}.")
            for key, value in inputs[m].items():
                if isinstance(value, torch.Tensor):
                    sizes[f"{m}.{key}"] = value.shape[0]
        if labels is not None:
            sizes["labels"] = labels.shape[0]
            bad = (labels < 0) | (labels >= self.config.num_labels)
            if bool(bad.any()):
                raise ValueError(
                    f"Labels must lie in [0, {self.config.num_labels - 1}] (num_labels={self.config.num_labels}); "
                    f"got {', '.join(map(str, labels[bad].unique().tolist()))} at batch position(s) "
                    f"{bad.nonzero().flatten().tolist()}. Fix those rows' labels, or build the model with the "
                    "right num_labels."
                )
        if len(set(sizes.values())) > 1:
            raise ValueError(f"All inputs must have the same batch size; got {sizes}.")
        return next(iter(sizes.values()))

    def _token_mask(self, modality: str, inputs: Mapping[str, Any], length: int) -> torch.Tensor | None:
        mask = inputs.get("attention_mask")
        if mask is None or mask.dim() != 2:
            return None
        if mask.shape[1] == length:
            return mask
        encoder = self.encoders[modality]
        if hasattr(encoder, "_get_feature_vector_attention_mask"):  # wav2vec2 family: samples -> frames
            return encoder._get_feature_vector_attention_mask(length, mask)
        return None

    def pool(self, modality: str, hidden: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """`modality`'s feature from a depth group's output `hidden`: a CNN stage's spatial mean, else
        the first token (`pooling="cls"`) or the mean over the tokens that `inputs`' attention mask keeps."""
        if hidden.dim() == 4:  # (batch, channels, height, width) from a convolutional stage
            return hidden.mean(dim=(2, 3))
        if hidden.dim() == 2:
            return hidden
        if self.config.pooling.get(modality, "mean") == "cls":
            return hidden[:, 0]
        mask = self._token_mask(modality, inputs, hidden.shape[1])
        if mask is None:
            return hidden.mean(dim=1)
        mask = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    @contextmanager
    def _capture_group_outputs(self, modality: str, store: dict[int, Any]) -> Iterator[None]:
        """Record the raw output of the last layer of every depth group into `store`."""
        depths = self._depths[modality]
        handles = []
        for g, layer_range in enumerate(depths.groups):
            def hook(module, args, output, g=g):
                store[g] = output
            handles.append(depths.layers[layer_range[-1]].register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _encode(self, modality: str, inputs: Mapping[str, Any]) -> tuple[list[torch.Tensor], dict[int, Any]]:
        store: dict[int, Any] = {}
        with self._capture_group_outputs(modality, store):
            self.encoders[modality](**inputs)
        pooled = [self.pool(modality, hidden_state(store[g]), inputs) for g in range(len(self._depths[modality].groups))]
        return pooled, store

    def depth_outputs(self, modality: str, inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """The raw (unpooled) output of each depth group of `modality`'s encoder on `inputs`: tokens
        `(batch, length, width)` for a transformer, `(batch, channels, height, width)` for a CNN stage."""
        _, store = self._encode(modality, inputs)
        return [hidden_state(store[g]) for g in range(len(self._depths[modality].groups))]

    def forward(
        self,
        labels: torch.Tensor | None = None,
        feature_keep: Mapping[str, torch.Tensor] | None = None,
        **modality_inputs: Mapping[str, torch.Tensor],
    ) -> MultimodalOutput:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices in `[0, num_labels)`.
            feature_keep (`dict[str, torch.Tensor]`, *optional*): modality -> `(batch,)` 0/1 mask; a
                sample's final feature of that modality enters the fusion multiplied by it (0: dropped,
                as OPM drops the dominant modality). The probes and `depth_features` see the features
                unmasked. The trainer passes it in training only.
            **modality_inputs: one keyword per modality (e.g. `vision=`, `audio=`, `text=`), each the
                dict of tensors its encoder takes (`pixel_values`, `input_values`, `input_ids`,
                `attention_mask`, ...), as the [`MultimodalCollator`] builds it.
        """
        self._check_inputs(modality_inputs, labels)
        depth_features = {m: self._encode(m, modality_inputs[m])[0] for m in self.modalities}
        features = {m: feats[-1] for m, feats in depth_features.items()}
        fused_input = dict(features)
        unknown_keep = [m for m in feature_keep or {} if m not in features]
        if unknown_keep:
            raise ValueError(f"feature_keep names modalities the model does not have: {unknown_keep}")
        for m, keep in (feature_keep or {}).items():
            fused_input[m] = features[m] * keep.to(features[m].dtype).view(-1, *(1,) * (features[m].dim() - 1))
        logits, modality_logits = self.fusion(fused_input)
        probe_logits = {m: self.probes[m](f.detach()) for m, f in features.items()}

        loss = fused_loss = None
        if labels is not None:
            fused_loss = F.cross_entropy(logits.float(), labels)
            loss = fused_loss + sum(F.cross_entropy(p.float(), labels) for p in probe_logits.values())
        return MultimodalOutput(
            loss=loss,
            logits=logits,
            modality_logits=modality_logits,
            probe_logits=probe_logits,
            depth_features={m: tuple(f) for m, f in depth_features.items()},
            fused_loss=fused_loss,
        )


def register_auto_classes() -> None:
    """Register the config and model with the Auto classes (safe to call more than once), and mark
    them for `save_pretrained` to copy this file and `configuration.py` next to the weights (with an
    `auto_map` in config.json), so that a saved or pushed model loads without aim_hf installed:
    `AutoModel.from_pretrained(path_or_repo, trust_remote_code=True)`."""
    from transformers import AutoModelForSequenceClassification

    MultimodalConfig.register_for_auto_class()
    MultimodalModel.register_for_auto_class("AutoModel")

    try:
        AutoConfig.register(MultimodalConfig.model_type, MultimodalConfig)
    except ValueError:
        pass  # already registered
    for auto in (AutoModel, AutoModelForSequenceClassification):
        try:
            auto.register(MultimodalConfig, MultimodalModel)
        except ValueError:
            pass


__all__ = ["MultimodalModel", "MultimodalOutput", "find_layer_list", "split_depth_groups", "register_auto_classes"]
