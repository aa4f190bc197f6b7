"""[`MultimodalProcessor`]: one Hugging Face processor per modality, saved side by side.

It is registered with `AutoProcessor` and saved with an `auto_map` and its code (this file and
`spectrogram.py`), as the model is, so that `AutoProcessor.from_pretrained(path_or_repo,
trust_remote_code=True)` loads it where aim_hf is not installed. This file imports only
transformers, torch, `configuration.py`, `spectrogram.py` and `raw_inputs.py`, so it can travel as
remote code.

Called on one raw example (`processor({"vision": image, "text": "..."})`), it gives the model's
inputs, reading each value as the collator does: images as PIL images, paths or bytes; audio as
arrays, `{"array", "sampling_rate"}` dicts or files; text as strings.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.dynamic_module_utils import custom_object_save
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.utils import PROCESSOR_NAME, cached_file

from .configuration import MultimodalConfig
from .raw_inputs import as_audio, as_image, as_text
from .spectrogram import SpectrogramFeatureExtractor  # noqa: F401  (registers it with AutoFeatureExtractor)

PROCESSOR_CONFIG_NAME = "multimodal_processor.json"
# Hub download options that the sub-processors' loaders share with this one.
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only")


def processor_kind(processor: Any) -> str:
    """`"text"`, `"image"` or `"audio"`: which raw input a Hugging Face processor takes."""
    if isinstance(processor, PreTrainedTokenizerBase):
        return "text"
    if isinstance(processor, ImageProcessingMixin):
        return "image"
    if isinstance(processor, FeatureExtractionMixin):
        return "audio"
    raise TypeError(
        f"Unsupported processor {type(processor).__name__}: give a tokenizer, an image processor or a feature extractor."
    )


def _load_image_processor(path: str, **kwargs: Any) -> Any:
    """`AutoImageProcessor`, or where it needs torchvision and torchvision is missing (some
    transformers 5.x releases), the saved class's Pillow variant loaded directly."""
    try:
        return AutoImageProcessor.from_pretrained(path, **kwargs)
    except ImportError:
        import transformers

        kwargs.pop("trust_remote_code", None)  # the Pillow classes are transformers' own
        kwargs.pop("backend", None)  # they are the Pillow backend
        with open(cached_file(path, "preprocessor_config.json", **kwargs)) as f:
            name = json.load(f)["image_processor_type"].removesuffix("Fast")
        return getattr(transformers, name if name.endswith("Pil") else name + "Pil").from_pretrained(path, **kwargs)


_LOADERS = {
    "text": AutoTokenizer.from_pretrained,
    "image": _load_image_processor,
    "audio": AutoFeatureExtractor.from_pretrained,
}


class MultimodalProcessor:
    """One Hugging Face processor per modality, saved side by side (one sub-folder per modality).

    Args:
        processors: modality name -> tokenizer, image processor or feature extractor.
    """

    _auto_class: str | None = None

    def __init__(self, processors: Mapping[str, Any]) -> None:
        self.processors = dict(processors)
        self.kinds = {m: processor_kind(p) for m, p in self.processors.items()}

    @property
    def modalities(self) -> list[str]:
        return list(self.processors)

    def __getitem__(self, modality: str) -> Any:
        return self.processors[modality]

    def process(
        self, modality: str, values: Sequence[Any], max_text_length: int | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """The tensors of a batch of raw `values` of `modality`, through its processor (padded, with
        masks). Raw values as [`MultimodalCollator`] takes them (see the module's docstring); a bad
        one raises a `ValueError` naming its position in `values` ("Example i"). `max_text_length`
        truncates texts; `kwargs` go to the processor's call."""
        processor, kind = self.processors[modality], self.kinds[modality]
        where = [f"Example {i}, modality {modality!r}" for i in range(len(values))]
        if kind == "text":
            texts = [as_text(v, at) for v, at in zip(values, where)]
            kwargs.setdefault("padding", True)
            kwargs.setdefault("truncation", True)
            if max_text_length is not None:
                kwargs.setdefault("max_length", max_text_length)
            encoded = processor(texts, return_tensors="pt", **kwargs)
        elif kind == "image":
            images = [as_image(v, at) for v, at in zip(values, where)]
            encoded = processor(images=images, return_tensors="pt", **kwargs)
        else:
            rate = getattr(processor, "sampling_rate", None)
            audio = [as_audio(v, rate, at) for v, at in zip(values, where)]
            if rate is not None:
                kwargs.setdefault("sampling_rate", rate)
            if "padding" in inspect.signature(processor.__call__).parameters:
                kwargs.setdefault("padding", True)  # variable-length audio (wav2vec2 family)
            encoded = processor(audio, return_tensors="pt", **kwargs)
        return {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}

    def __call__(
        self, example: Mapping[str, Any], max_text_length: int | None = None
    ) -> dict[str, dict[str, torch.Tensor]]:
        """The model's inputs (`model(**inputs)`) for one raw example, a mapping modality -> its raw
        value (see the module's docstring); `max_text_length` truncates the text."""
        missing = [m for m in self.modalities if m not in example]
        if missing:
            raise ValueError(f"the example has no value for the modalities {missing}; its keys: {sorted(example)}.")
        return {m: self.process(m, [example[m]], max_text_length) for m in self.modalities}

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Mark the class for `save_pretrained` to write its code and an `auto_map` (as
        `ProcessorMixin.register_for_auto_class` does; `AutoProcessor` calls it on remote classes)."""
        cls._auto_class = auto_class

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        os.makedirs(save_directory, exist_ok=True)
        files = []
        for modality, processor in self.processors.items():
            files += list(processor.save_pretrained(os.path.join(save_directory, modality)) or [])
        path = os.path.join(save_directory, PROCESSOR_CONFIG_NAME)
        with open(path, "w") as f:
            json.dump({"modalities": self.kinds}, f, indent=2)
        files.append(path)
        if self._auto_class is not None:
            # processor_config.json is where AutoProcessor looks for the class and its remote code.
            auto = {"processor_class": type(self).__name__}
            files += custom_object_save(self, save_directory, config=auto) or []
            files.append(os.path.join(save_directory, PROCESSOR_NAME))
            with open(files[-1], "w") as f:
                json.dump(auto, f, indent=2)
        return files

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs: Any) -> "MultimodalProcessor":
        """Load the processors saved by `save_pretrained` from a local folder or a Hub repo id.
        `trust_remote_code` and the Hub options (`revision`, `token`, ...) reach every sub-processor."""
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        with open(cached_file(str(directory), PROCESSOR_CONFIG_NAME, **hub)) as f:
            kinds = json.load(f)["modalities"]
        if "trust_remote_code" in kwargs:
            hub["trust_remote_code"] = kwargs["trust_remote_code"]
        return cls({m: _LOADERS[k](str(directory), subfolder=m, **hub) for m, k in kinds.items()})


MultimodalProcessor.register_for_auto_class()
# With aim_hf imported, AutoProcessor finds the class by the name in processor_config.json: no remote code.
AutoProcessor.register(MultimodalConfig, MultimodalProcessor, exist_ok=True)

__all__ = ["PROCESSOR_CONFIG_NAME", "MultimodalProcessor", "processor_kind"]
