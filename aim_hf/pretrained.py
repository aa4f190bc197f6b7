"""Pretrained encoders and their processors, by Hub id or local folder, as `aim-hf train` loads them.

One encoder per modality comes with its own processor from the same Hub id or folder: a tokenizer,
an image processor or a feature extractor. Of a dual-encoder checkpoint (CLIP, SigLIP, CLAP, ...)
only the tower that takes that processor's input is kept.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import CONFIG_NAME, logging

from .model_card import hub_id
from .modeling import load_pretrained_encoder, tower_class
from .processing import _LOADERS

logger = logging.get_logger(__name__)

# The sub-config of a dual-encoder checkpoint that describes the tower of each kind of input.
_TOWERS = {"image": "vision_config", "text": "text_config", "audio": "audio_config"}


def check_name_or_path(what: str, name: str | None, local: str = "folder") -> None:
    """Refuse `name` (what the message calls `what`, e.g. "--vision_encoder") when it is neither an
    existing local `local` (folder, file) nor a Hub id, before anything is loaded or downloaded."""
    if name and not os.path.exists(name) and hub_id(name) is None:
        raise ValueError(f"{what} {name!r} not found: no such {local} and not a Hub id.")


def find_pretrained(what: str, name: str) -> bool:
    """Make sure the encoder `name` (what the message calls `what`, e.g. "the 'vision' encoder") can
    be loaded, before any loader asks the Hub for file after file (each with seconds of retries when
    the Hub cannot be reached): a local folder, a Hub repo that exists, or one in the local cache.
    One request decides; offline (`HF_HUB_OFFLINE`) none is made. A ValueError names the cause: no
    such folder or repo, or the Hub out of reach. Returns whether to load it from the local cache
    alone (`local_files_only`): the Hub is out of reach but the cache holds it."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    check_name_or_path(what, name)
    if os.path.exists(name):
        return False
    cached = isinstance(try_to_load_from_cache(name, CONFIG_NAME), str)
    unreachable = f"{what} {name!r}: no local folder of that name, and cannot reach the Hub (offline?)"
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise ValueError(f"{unreachable}: HF_HUB_OFFLINE is set and the local cache does not hold it.")
    try:
        model_info(name)
    except GatedRepoError:
        return False  # it exists; the loader says what access it needs
    except RepositoryNotFoundError as err:
        raise ValueError(f"{what} not found: no local folder {name!r} and no Hub repo of that name.") from err
    except HfHubHTTPError:
        return False  # the Hub answered: the loader reports its own error
    except Exception as err:  # connection refused, DNS, timeout, proxy: the Hub is out of reach
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        if not cached:
            raise ValueError(f"{unreachable} at {constants.ENDPOINT}: {cause}.") from err
        logger.warning(f"{what} {name!r}: cannot reach the Hub at {constants.ENDPOINT} ({cause}); from the cache.")
        return True
    return False


def load_processor(name: str, modality: str, local_files_only: bool = False) -> Any:
    """The processor saved with the encoder `name` (Hub id or folder). The `text` modality takes its
    tokenizer; any other takes its image processor or feature extractor, else its tokenizer (so a
    CLIP folder gives `vision` its image processor and `text` its tokenizer, a Whisper folder gives
    `audio` its feature extractor). Images are processed with Pillow (`backend="pil"`)."""
    kinds = ("text",) if modality == "text" else ("image", "audio", "text")
    for kind in kinds:
        try:
            extra = {"backend": "pil"} if kind == "image" else {}
            return _LOADERS[kind](name, local_files_only=local_files_only, **extra)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the folder has no processor of this kind
    wanted = "a tokenizer" if modality == "text" else "an image processor, a feature extractor or a tokenizer"
    raise ValueError(f"the {modality!r} encoder {name!r} has no processor: save {wanted} with it.")


def load_encoder(name: str, kind: str, local_files_only: bool = False) -> PreTrainedModel:
    """The encoder `name` (Hub id or folder) for inputs of `kind` (`"image"`, `"audio"`, `"text"`, as
    `processor_kind` names its processor's): of a dual-encoder checkpoint the matching tower (e.g.
    `CLIPVisionModel` for images), of an encoder-decoder model (Whisper, T5) its encoder."""
    config = AutoConfig.from_pretrained(name, local_files_only=local_files_only)
    # AutoModel's look-up of a PEFT adapter takes local_files_only from adapter_kwargs only.
    hub = {"local_files_only": True, "adapter_kwargs": {"local_files_only": True}} if local_files_only else {}
    tower = getattr(config, _TOWERS[kind], None)
    if tower is not None and tower_class(tower) is not None:
        # A tower AutoModel does not map (CLAP's audio) is taken out of the whole model: loaded alone,
        # its weights' names would miss the dual model's prefix and it would start random.
        model = AutoModel.from_pretrained(name, **hub)
        return next(m for m in model.children() if isinstance(m, PreTrainedModel) and type(m.config) is type(tower))
    if tower is not None:
        return AutoModel.from_pretrained(name, config=tower, **hub)
    return load_pretrained_encoder(name, **hub)


__all__ = ["check_name_or_path", "find_pretrained", "load_encoder", "load_processor"]
