"""Pretrained encoders and their processors, by Hub id or local folder, as `aim-hf train` loads them.

One encoder per modality comes with its own processor from the same Hub id or folder: a tokenizer,
an image processor or a feature extractor. Of a dual-encoder checkpoint (CLIP, SigLIP, CLAP, ...)
only the tower that takes that processor's input is kept.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoConfig, AutoModel, PreTrainedModel

from .model_card import hub_id
from .modeling import load_pretrained_encoder, tower_class
from .processing import _LOADERS

# The sub-config of a dual-encoder checkpoint that describes the tower of each kind of input.
_TOWERS = {"image": "vision_config", "text": "text_config", "audio": "audio_config"}


def check_name_or_path(what: str, name: str | None, local: str = "folder") -> None:
    """Refuse `name` (what the message calls `what`, e.g. "--vision_encoder") when it is neither an
    existing local `local` (folder, file) nor a Hub id, before anything is loaded or downloaded."""
    if name and not os.path.exists(name) and hub_id(name) is None:
        raise ValueError(f"{what} {name!r} not found: no such {local} and not a Hub id.")


def load_processor(name: str, modality: str) -> Any:
    """The processor saved with the encoder `name` (Hub id or folder). The `text` modality takes its
    tokenizer; any other takes its image processor or feature extractor, else its tokenizer (so a
    CLIP folder gives `vision` its image processor and `text` its tokenizer, a Whisper folder gives
    `audio` its feature extractor). Images are processed with Pillow (`backend="pil"`)."""
    kinds = ("text",) if modality == "text" else ("image", "audio", "text")
    for kind in kinds:
        try:
            return _LOADERS[kind](name, **({"backend": "pil"} if kind == "image" else {}))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the folder has no processor of this kind
    wanted = "a tokenizer" if modality == "text" else "an image processor, a feature extractor or a tokenizer"
    raise ValueError(f"the {modality!r} encoder {name!r} has no processor: save {wanted} with it.")


def load_encoder(name: str, kind: str) -> PreTrainedModel:
    """The encoder `name` (Hub id or folder) for inputs of `kind` (`"image"`, `"audio"`, `"text"`, as
    `processor_kind` names its processor's): of a dual-encoder checkpoint the matching tower (e.g.
    `CLIPVisionModel` for images), of an encoder-decoder model (Whisper, T5) its encoder."""
    config = AutoConfig.from_pretrained(name)
    tower = getattr(config, _TOWERS[kind], None)
    if tower is not None and tower_class(tower) is not None:
        # A tower AutoModel does not map (CLAP's audio) is taken out of the whole model: loaded alone,
        # its weights' names would miss the dual model's prefix and it would start random.
        model = AutoModel.from_pretrained(name)
        return next(m for m in model.children() if isinstance(m, PreTrainedModel) and type(m.config) is type(tower))
    if tower is not None:
        return AutoModel.from_pretrained(name, config=tower)
    return load_pretrained_encoder(name)


__all__ = ["check_name_or_path", "load_encoder", "load_processor"]
