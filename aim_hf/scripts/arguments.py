"""The options of `aim-hf train` and `aim-hf evaluate` besides [`AIMConfig`]: the model, the data
(embedded, a setting for pretrained encoders, or your own), what to do with an output folder that
holds checkpoints; and the command's defaults."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from aim_hf.batch_norm import check_batch_norm
from aim_hf.training_args import json_mapping

# Defaults of the command that differ from AIMConfig's: sized for the embedded data and small encoders.
TRAIN_DEFAULTS: dict[str, Any] = {
    "output_dir": "aim_hf_output",
    "num_train_epochs": 10,
    "learning_rate": 5e-3,
    "warmup_steps": 0.1,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",  # an interrupted run resumes from its last epoch (--resume_from_checkpoint true)
    "save_total_limit": 2,
    "logging_steps": 20,
    "report_to": "none",
    "seed": 0,
}


@dataclass
class ModelArguments:
    """The multimodal model: its encoders and how their features are fused."""

    _argument_group_name = "model"

    encoders: dict | str | None = field(
        default=None,
        metadata={
            "help": "One encoder per modality, as a JSON object modality -> Hub id or local folder (a mapping in a "
            'YAML/JSON config file), e.g. \'{"vision": "google/vit-base-patch16-224-in21k", "text": '
            '"google-bert/bert-base-uncased"}\'. Each one\'s processor is loaded from the same place: the text '
            "modality takes the tokenizer, any other the image processor or feature extractor (else the "
            "tokenizer); of a CLIP-like checkpoint the matching tower is kept. Needed with --dataset_name and "
            "--setting emoji/spoken; on the embedded data a modality not named gets a small encoder built from "
            "its config (--hidden_size ...)."
        },
    )
    freeze: dict | str | None = field(
        default=None,
        metadata={
            "help": "Leading layers of each modality's encoder frozen with its embeddings, as a JSON object "
            'modality -> number of layers (-1: the whole encoder), e.g. \'{"vision": 2, "text": -1}\'; a modality '
            "not named trains whole."
        },
    )
    hidden_size: int = field(default=32, metadata={"help": "Width of the embedded data's from-config encoders."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers of the from-config encoders."})
    num_attention_heads: int = field(default=2, metadata={"help": "Attention heads of the from-config encoders."})
    intermediate_size: int = field(default=64, metadata={"help": "MLP width of the from-config encoders."})
    fusion: str = field(default="concat", metadata={"help": "Fusion: 'concat', 'sum', 'gated' or 'film'."})
    num_depth_groups: int = field(default=4, metadata={"help": "Depth groups each encoder's layers are split into."})
    batch_norm: str = field(
        default="as_loaded",
        metadata={
            "help": "The encoders' BatchNorm layers while training: 'as_loaded'; 'eval' (always normalise with the "
            "stored pretrained statistics, never update them); or a momentum, e.g. 0.1 (transformers' MobileNetV2 "
            "uses 0.997: each batch replaces the statistics). See aim_hf.batch_norm."
        },
    )
    # Deprecated: kept for one release, each moved into `encoders` or `freeze` with a FutureWarning.
    vision_encoder: str | None = field(
        default=None, metadata={"help": 'Deprecated, goes in the next release: --encoders \'{"vision": NAME}\'.'}
    )
    audio_encoder: str | None = field(
        default=None, metadata={"help": 'Deprecated, goes in the next release: --encoders \'{"audio": NAME}\'.'}
    )
    freeze_vision: int | None = field(
        default=None, metadata={"help": 'Deprecated, goes in the next release: --freeze \'{"vision": N}\'.'}
    )
    freeze_audio: int | None = field(
        default=None, metadata={"help": 'Deprecated, goes in the next release: --freeze \'{"audio": N}\'.'}
    )
    freeze_text: int | None = field(
        default=None, metadata={"help": 'Deprecated, goes in the next release: --freeze \'{"text": N}\'.'}
    )

    def __post_init__(self) -> None:
        self.encoders = json_mapping("encoders", self.encoders)
        self.freeze = json_mapping("freeze", self.freeze)
        for modality in ("vision", "audio"):
            _move_alias(self, f"{modality}_encoder", "encoders", modality)
        for modality in ("vision", "audio", "text"):
            _move_alias(self, f"freeze_{modality}", "freeze", modality)
        for modality, layers in self.freeze.items():
            if isinstance(layers, bool) or not isinstance(layers, int) or layers < -1:
                raise ValueError(f"--freeze {modality!r}: a number of layers (-1: the whole encoder), got {layers!r}.")
        self.batch_norm = check_batch_norm(self.batch_norm)


def _move_alias(args: Any, alias: str, mapping: str, modality: str) -> None:
    """A deprecated per-modality option, if given, warned of and moved into `args.<mapping>[modality]`."""
    value = getattr(args, alias)
    if value is None:
        return
    new = f"--{mapping} '{json.dumps({modality: value})}'"
    warnings.warn(f"--{alias} is deprecated and goes in the next release: use {new}.", FutureWarning, stacklevel=3)
    if modality in getattr(args, mapping):
        raise ValueError(f"--{alias} and --{mapping} both give {modality!r}: keep {new} only.")
    getattr(args, mapping)[modality] = value
    setattr(args, alias, None)


@dataclass
class DatasetArguments:
    """The embedded AV-digits data (see docs/av_digits.md)."""

    _argument_group_name = "data"

    setting: str = field(
        default="av_digits",
        metadata={
            "help": "Which construction of the embedded data: 'av_digits' (as embedded), 'strong' (vision cannot "
            "tell three digit pairs apart: a real suppression of audio) or 'hopeless' (audio near chance alone); "
            "or a setting for pretrained encoders, given with --encoders: 'emoji' (vision + text) or 'spoken' "
            "(vision + audio). See docs/settings.md."
        },
    )
    setting_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "With --setting emoji/spoken: knobs of its construction replacing the defaults, as a JSON object "
            '(a mapping in a YAML/JSON config file), e.g. \'{"image_size": 32, "label_level": "subgroup"}\' '
            "(docs/settings.md lists them; --image_noise is its image_noise)."
        },
    )
    dataset_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the pairing, the split and the image noise; with --dataset_name, of the validation "
            "split drawn from train."
        },
    )
    image_noise: float = field(
        default=0.0,
        metadata={"help": "Std of Gaussian noise added to the images, as a fraction of the 0-255 range."},
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N validation and test examples only."}
    )


@dataclass
class OwnDataArguments:
    """Your own data (`--dataset_name`), read by `aim_hf.data.loading`; shared by `train` and `evaluate`."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Your own data (default: the embedded AV-digits): a Hub dataset id; a folder written by "
            "save_to_disk (a DatasetDict, or a Dataset: the train split); a folder load_dataset reads (imagefolder, "
            "audiofolder, or csv / json / parquet files named train / validation / test); a csv / json / parquet "
            "file (the train split); or a builder name (csv, json, parquet, imagefolder, audiofolder) with "
            "--data_files. Give --encoders too."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    data_files: dict | str | None = field(
        default=None,
        metadata={
            "help": "Data files for load_dataset: a path or glob, or a JSON object split -> path(s) (a mapping in a "
            'YAML/JSON config file), e.g. \'{"train": "train.csv", "test": "test.csv"}\'.'
        },
    )
    modality_columns: dict | str | None = field(
        default=None,
        metadata={
            "help": "With --dataset_name: the column of each modality, as a JSON object modality -> column (a "
            'mapping in a YAML/JSON config file), e.g. \'{"vision": "image", "text": "caption"}\'. A modality not '
            "named takes the column of its own name. Images: Image features, paths or bytes; audio: Audio "
            "features or file paths (read with soundfile at the feature extractor's rate) or arrays; text: strings."
        },
    )
    label_column: str = field(
        default="label",
        metadata={"help": "The column of labels: a ClassLabel (its names kept), class names, or class ids."},
    )
    validation_split_percentage: float = field(
        default=10,
        metadata={
            "help": "Where the dataset has no validation split: the percentage of train held out as one "
            "(drawn with --dataset_seed)."
        },
    )
    max_text_length: int | None = field(
        default=None, metadata={"help": "Texts are truncated to this many tokens (default: the tokenizer's limit)."}
    )

    def __post_init__(self) -> None:
        self.modality_columns = json_mapping("modality_columns", self.modality_columns)
        if isinstance(self.data_files, str) and self.data_files.lstrip().startswith("{"):
            self.data_files = json_mapping("data_files", self.data_files)


@dataclass
class EvaluationDataArguments(OwnDataArguments, DatasetArguments):
    """The data `aim-hf evaluate` reads: the embedded AV-digits, or your own with --dataset_name."""


@dataclass
class DataArguments(OwnDataArguments, DatasetArguments):
    """The data: the embedded AV-digits (see docs/av_digits.md), or your own with --dataset_name."""

    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N examples only."})
    skip_data_check: bool = field(
        default=False,
        metadata={
            "help": "With --dataset_name: skip the pass that reads every row of every split before training (images "
            "open, audio files decode to a finite non-empty signal, texts and labels present) and names the first "
            "bad row. The class check (at least 2 classes in train) still runs."
        },
    )
    only_modality: str | None = field(
        default=None,
        metadata={
            "help": "Unimodal baseline: train and evaluate with every other modality's input blanked (zeros); "
            "the fused accuracy is then this modality's accuracy alone."
        },
    )


@dataclass
class OutputArguments:
    """What the command does with an --output_dir that already holds checkpoints."""

    _argument_group_name = "training"  # beside output_dir

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Delete the checkpoints already in --output_dir and train from scratch. Without it, an "
            "--output_dir that holds checkpoints is refused unless --resume_from_checkpoint is given."
        },
    )
