"""The `aim-hf` command: `aim-hf train [config.yaml|config.json] [--option value ...]` and
`aim-hf evaluate MODEL_DIR [--option value ...]`.

Trains a [`MultimodalModel`] with balanced multimodal learning (AIM by default) on the embedded
AV-digits dataset, or on your own (`--dataset_name`, `--modality_columns`, `--encoders`; see
`aim_hf.data.loading`), evaluates it on the validation and test splits, saves it with its processors
and prints fused and per-modality probe accuracy. Every option is a field of [`ModelArguments`],
[`DataArguments`] or [`AIMConfig`]; a YAML/JSON file gives them too, and command-line options
override the file. The same command runs under `accelerate launch -m aim_hf train ...`.

`aim-hf evaluate` loads a saved model and its processors and reports, on a split of the embedded
data or of your own, fused and probe accuracy and what each modality contributes (`aim_hf.evaluation`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import HfArgumentParser, TrainingArguments

from aim_hf.cli_methods import METHODS_USAGE, methods
from aim_hf.data.av_digits import LABEL_NAMES, MODALITIES, av_digits_encoders, av_digits_processor
from aim_hf.batch_norm import apply_batch_norm, check_batch_norm
from aim_hf.data.settings import PRETRAINED_SETTINGS, load_setting, pretrained_setting
from aim_hf.data.unimodal import BlankModalities
from aim_hf.pretrained import check_name_or_path
from aim_hf.training_args import AIMConfig, _json_mapping

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedModel

    from aim_hf.modeling import MultimodalModel
    from aim_hf.processing import MultimodalProcessor
    from aim_hf.trainer import AIMTrainer

TRAIN_USAGE = "aim-hf train [CONFIG.yaml|CONFIG.json] [--option value ...] [--debug]"
EVALUATE_USAGE = (
    "aim-hf evaluate MODEL_DIR [--split test|validation] [--output_json PATH] [--option value ...] [--debug]"
)
USAGE = f"""usage: aim-hf COMMAND [...]

commands:
  train     train a balanced multimodal model on the embedded AV-digits data or your own
            (--dataset_name), evaluate and save it
            ({TRAIN_USAGE}; `aim-hf train --help` lists its options)
  evaluate  a saved model's fused and probe accuracy and each modality's contribution (accuracy
            alone, Shapley value) on a split of the embedded data or your own (--dataset_name)
            ({EVALUATE_USAGE}; `aim-hf evaluate --help` lists its options)
  methods   the balanced-learning methods with their papers, or one method's options ({METHODS_USAGE})
  compare   train several balancing methods over paired seeds (and each modality alone) on the
            same data and report which helps, with paired 95% intervals and a verdict
            (aim-hf compare --methods none aim ... --seeds 0 1 2 [aim-hf train options];
            `aim-hf compare --help` lists its own options)"""
DEBUG_ENV = "AIM_HF_DEBUG"
# A --dataset_name ending so names a data file.
DATA_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".arrow", ".txt")

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

    encoders: dict | str | None = field(
        default=None,
        metadata={
            "help": "With --dataset_name or --setting emoji/spoken: one encoder per modality, as a JSON object modality -> Hub id or local "
            'folder (a mapping in a YAML/JSON config file), e.g. \'{"vision": "google/vit-base-patch16-224-in21k", '
            '"text": "google-bert/bert-base-uncased"}\'. Each one\'s processor is loaded from the same place: the '
            "text modality takes the tokenizer, any other the image processor or feature extractor (else the "
            "tokenizer); of a CLIP-like checkpoint the matching tower is kept."
        },
    )
    vision_encoder: str | None = field(
        default=None,
        metadata={"help": "Pretrained vision encoder (Hub id or local folder). Default: a small ViT from its config."},
    )
    audio_encoder: str | None = field(
        default=None,
        metadata={"help": "Pretrained AST audio encoder (Hub id or local folder). Default: a small AST from its config."},
    )
    hidden_size: int = field(default=32, metadata={"help": "Width of the default (from-config) encoders."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Layers of the default encoders."})
    num_attention_heads: int = field(default=2, metadata={"help": "Attention heads of the default encoders."})
    intermediate_size: int = field(default=64, metadata={"help": "MLP width of the default encoders."})
    fusion: str = field(default="concat", metadata={"help": "Fusion: 'concat', 'sum', 'gated' or 'film'."})
    num_depth_groups: int = field(default=4, metadata={"help": "Depth groups each encoder's layers are split into."})
    freeze_vision: int = field(
        default=0, metadata={"help": "Leading vision layers frozen with the embeddings (-1: the whole encoder)."}
    )
    freeze_audio: int = field(
        default=0, metadata={"help": "Leading audio layers frozen with the embeddings (-1: the whole encoder)."}
    )
    freeze_text: int = field(
        default=0, metadata={"help": "Leading text layers frozen with the embeddings (-1: the whole encoder)."}
    )
    batch_norm: str = field(
        default="as_loaded",
        metadata={
            "help": "The encoders' BatchNorm layers while training: 'as_loaded'; 'eval' (always normalise with the "
            "stored pretrained statistics, never update them); or a momentum, e.g. 0.1 (transformers' MobileNetV2 "
            "uses 0.997: each batch replaces the statistics). See aim_hf.batch_norm."
        },
    )

    def __post_init__(self) -> None:
        self.encoders = _json_mapping("encoders", self.encoders)
        self.batch_norm = check_batch_norm(self.batch_norm)


@dataclass
class DatasetArguments:
    """The embedded AV-digits data (see docs/av_digits.md)."""

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
        self.modality_columns = _json_mapping("modality_columns", self.modality_columns)
        if isinstance(self.data_files, str) and self.data_files.lstrip().startswith("{"):
            self.data_files = _json_mapping("data_files", self.data_files)


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

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Delete the checkpoints already in --output_dir and train from scratch. Without it, an "
            "--output_dir that holds checkpoints is refused unless --resume_from_checkpoint is given."
        },
    )


def _subset(dataset: Any, limit: int | None) -> Any:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def check_setting(data_args: DatasetArguments) -> None:
    """A one-line error, before anything loads, for a setting `aim-hf evaluate` does not load."""
    if data_args.setting in PRETRAINED_SETTINGS:
        raise ValueError(
            f"aim-hf evaluate does not load --setting {data_args.setting!r} yet; load its data with "
            f"aim_hf.data.settings.load_setting({data_args.setting!r})."
        )


def setting_options(data_args: DataArguments) -> dict[str, Any]:
    """The knobs of a pretrained setting's construction: --setting_kwargs and --image_noise."""
    options = _json_mapping("setting_kwargs", data_args.setting_kwargs)
    if "image_noise" in options:
        raise ValueError("give the image noise as --image_noise, not in --setting_kwargs.")
    return {**options, "image_noise": data_args.image_noise}


def load_data(data_args: DatasetArguments, num_mel_bins: int) -> DatasetDict:
    """The AV-digits splits of `data_args` (spectrograms of `num_mel_bins` bins), the validation and
    test splits cut to `max_eval_samples`."""
    data = load_setting(
        data_args.setting, seed=data_args.dataset_seed, num_mel_bins=num_mel_bins, image_noise=data_args.image_noise
    )
    for split in ("validation", "test"):
        data[split] = _subset(data[split], data_args.max_eval_samples)
    return data


def build_parser() -> HfArgumentParser:
    """The `aim-hf train` parser: no abbreviated options, and the help shows the model, data and
    modulation options first, each in its titled group, then `TrainingArguments`' own."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, AIMConfig, OutputArguments),
        prog="aim-hf train",
        usage=TRAIN_USAGE,
        description="A YAML/JSON file gives options too; options on the command line override the file's. "
        f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error.",
        allow_abbrev=False,  # `--learning_rat` must not pass as `--learning_rate`
    )
    parser.set_defaults(**TRAIN_DEFAULTS)
    # learning_rate_mapping is AIMConfig's but belongs beside learning_rate; overwrite_output_dir beside output_dir.
    trainer_own = {f.name for f in fields(TrainingArguments)} | {"learning_rate_mapping", "overwrite_output_dir"}
    groups = [
        ("model", ModelArguments.__doc__, {f.name for f in fields(ModelArguments)}),
        ("data", DataArguments.__doc__, {f.name for f in fields(DataArguments)}),
        ("modulation", "The balanced-learning method and its hyperparameters (AIMConfig).",
         {f.name for f in fields(AIMConfig)} - trainer_own),
        ("training", "transformers.TrainingArguments, learning_rate_mapping and overwrite_output_dir. Checkpoints: "
         "every epoch by default, the last 2 kept (--save_total_limit); --save_steps N alone saves every N steps "
         "instead; --resume_from_checkpoint true resumes from the newest one in --output_dir.", trainer_own),
    ]  # fmt: skip
    # HfArgumentParser puts every option in one group; regroup them by field (a bool's --no_x too).
    actions = [a for a in parser._optionals._group_actions if a.dest != "help"]
    parser._optionals._group_actions = [a for a in parser._optionals._group_actions if a.dest == "help"]
    for title, description, names in groups:
        group = parser.add_argument_group(title, description)
        group._group_actions.extend(a for a in actions if a.dest in names)
    return parser


@dataclass
class EvaluateArguments:
    """What `aim-hf evaluate` reports on, and where."""

    split: str | None = field(
        default=None,
        metadata={"help": "The split to evaluate on: 'validation' or 'test' (default: test, else validation)."},
    )
    output_json: str | None = field(
        default=None, metadata={"help": "Write the JSON report there (default: print it after the table)."}
    )
    batch_size: int = field(default=128, metadata={"help": "Examples per forward pass."})


def build_evaluate_parser() -> HfArgumentParser:
    """The `aim-hf evaluate` parser (MODEL_DIR, the first argument, is taken before it)."""
    return HfArgumentParser(
        (EvaluateArguments, EvaluationDataArguments),
        prog="aim-hf evaluate",
        usage=EVALUATE_USAGE,
        description="MODEL_DIR: a folder written by `aim-hf train` (or AIMTrainer.save_model). Blanking a modality "
        "zeroes its feature before the fusion; see aim_hf.evaluation. Give the data options the model was "
        "trained with: --setting, --dataset_seed, --image_noise (the embedded data), or --dataset_name and its "
        f"column options (your own). --debug (or {DEBUG_ENV}=1) shows the traceback "
        "of an error.",
        allow_abbrev=False,
    )


def parse_evaluate_args(argv: list[str]) -> tuple[str, EvaluateArguments, EvaluationDataArguments]:
    """Parse `MODEL_DIR [--option value ...]`."""
    parser = build_evaluate_parser()
    if "-h" in argv or "--help" in argv:
        parser.parse_args(["--help"])  # prints the help and exits
    if not argv or argv[0].startswith("-"):
        raise ValueError(f"give the model folder first: {EVALUATE_USAGE}")
    model_dir, argv = argv[0], argv[1:]
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"MODEL_DIR {model_dir!r} is not a saved model (no config.json there).")
    eval_args, data_args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise ValueError(f"unknown options {unknown} (options are not abbreviated); see `aim-hf evaluate --help`.")
    if eval_args.split not in (None, "validation", "test"):
        raise ValueError(f"--split must be 'validation' or 'test', got {eval_args.split!r}.")
    if not data_args.dataset_name:
        check_setting(data_args)
    return model_dir, eval_args, data_args


def prepare_evaluation(
    model_dir: str, eval_args: EvaluateArguments, data_args: EvaluationDataArguments
) -> tuple[MultimodalModel, MultimodalProcessor, Dataset]:
    """The saved model (on the GPU when there is one) and processor, and the split to evaluate on, of
    the embedded data or of `--dataset_name`. Without `--split`: test, else validation (said on the
    console), written into `eval_args.split`."""
    import torch

    from aim_hf.modeling import MultimodalModel
    from aim_hf.processing import MultimodalProcessor

    model = MultimodalModel.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    processor = MultimodalProcessor.from_pretrained(model_dir)
    if data_args.dataset_name:
        return model, processor, _own_evaluation_split(model, processor, eval_args, data_args)
    if list(model.modalities) != list(MODALITIES):
        raise ValueError(
            f"{model_dir} holds a model over {model.modalities}; the embedded data has {MODALITIES}: give "
            "--dataset_name (and --modality_columns) for the data it was trained on."
        )
    data = load_data(data_args, model.config.encoder_configs["audio"].num_mel_bins)
    return model, processor, data[_choose_split(eval_args, data)]


def _choose_split(eval_args: EvaluateArguments, data: DatasetDict) -> str:
    """`--split`, or where it is not given the test split, else the validation split (and say which)."""
    if eval_args.split is None:
        eval_args.split = next((s for s in ("test", "validation") if s in data), "test")
        print(f"No --split given: evaluating on the {eval_args.split!r} split (its splits: {list(data)}).")
    return eval_args.split


def _own_evaluation_split(
    model: MultimodalModel,
    processor: MultimodalProcessor,
    eval_args: EvaluateArguments,
    data_args: EvaluationDataArguments,
) -> Dataset:
    """The split of `--dataset_name` to evaluate on ([`_choose_split`]), its labels checked against the
    model's classes."""
    data, names = _load_own_data(processor, data_args)
    split = _choose_split(eval_args, data)
    if split not in data:
        raise ValueError(f"{data_args.dataset_name!r} has no {split!r} split; its splits: {list(data)}.")
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != model_names:
        raise ValueError(
            f"--label_column {data_args.label_column!r} gives the classes {names}, the model was trained on "
            f"{model_names}: evaluate on data with the training data's classes."
        )
    return _subset(data[split], data_args.max_eval_samples)


def evaluate_report(
    model_dir: str,
    eval_args: EvaluateArguments,
    data_args: EvaluationDataArguments,
    model: MultimodalModel,
    processor: MultimodalProcessor,
    dataset: Dataset,
) -> dict[str, Any]:
    """Evaluate `model` on `dataset` (`aim_hf.evaluation.modality_contributions`), print the table and
    write or print the JSON report (what was evaluated, then `ModalityContributions.to_dict()`);
    returns the report."""
    from aim_hf.evaluation import modality_contributions

    from aim_hf.collator import MultimodalCollator

    collator = MultimodalCollator(
        processor,
        columns=_columns(processor, data_args) if data_args.dataset_name else None,
        label_column=data_args.label_column if data_args.dataset_name else "label",
        max_text_length=data_args.max_text_length,
    )
    result = modality_contributions(model, processor, dataset, batch_size=eval_args.batch_size, collator=collator)
    # The data options that chose the examples: the embedded data's, or your dataset's.
    if data_args.dataset_name:
        kept = {f.name for f in fields(OwnDataArguments)} | {"dataset_seed", "max_eval_samples"}
    else:
        kept = {f.name for f in fields(DatasetArguments)}
    data_options = {k: v for k, v in asdict(data_args).items() if k in kept}
    report = {"model": model_dir, "split": eval_args.split, **data_options, **result.to_dict()}
    if data_args.dataset_name:
        where = f"{data_args.dataset_name}, {eval_args.split} split"
    else:
        where = f"AV-digits {data_args.setting!r} (dataset_seed {data_args.dataset_seed}), {eval_args.split} split"
    print(f"{where}; model {model_dir}")
    print(result.format_table())
    text = json.dumps(report, indent=2)
    if eval_args.output_json:
        Path(eval_args.output_json).write_text(text + "\n")
        print(f"JSON report written to {eval_args.output_json}")
    else:
        print(text)
    return report


def parse_train_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, AIMConfig]:
    """Parse `[CONFIG.yaml|CONFIG.json] [--option value ...]`: the file's values replace the defaults
    and the options given on the command line replace the file's. `--save_steps N` without
    `--save_strategy` saves every N steps. Checks the options before anything is loaded, the
    checkpoints of `--output_dir` among them (see [`prepare_output_dir`]), and `--push_to_hub`'s
    token and Hub."""
    parser = build_parser()
    values: dict[str, Any] = {}
    if argv and Path(argv[0]).suffix in (".yaml", ".yml", ".json"):
        text = Path(argv[0]).read_text()
        if Path(argv[0]).suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
        known = {f.name for dc in parser.dataclass_types for f in fields(dc) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{argv[0]} sets unknown options {unknown}; see `aim-hf train --help`.")
        parser.set_defaults(**values)
        argv = argv[1:]
    given = set(values) | {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    if "save_steps" in given and "save_strategy" not in given:
        parser.set_defaults(save_strategy="steps")
    model_args, data_args, training_args, output_args, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if unknown:
        raise ValueError(f"unknown options {unknown} (options are not abbreviated); see `aim-hf train --help`.")
    if data_args.dataset_name is None and data_args.setting in PRETRAINED_SETTINGS:
        _check_setting_job(model_args, data_args)
    elif data_args.dataset_name is None:
        _check_embedded_job(model_args, data_args)
    else:
        _check_own_data_job(model_args, data_args)
    prepare_output_dir(training_args, output_args.overwrite_output_dir)
    _check_push(training_args)
    return model_args, data_args, training_args


def prepare_output_dir(args: AIMConfig, overwrite: bool = False) -> None:
    """Settle `args.resume_from_checkpoint` before anything is loaded: `true` (any case) becomes the
    newest complete checkpoint in `output_dir`, a path must be a complete checkpoint, `false` is
    None. Without a checkpoint to resume from, an `output_dir` that holds checkpoints is refused,
    unless `overwrite`: then the main process deletes them (a later `true` must not find them)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import sort_checkpoints

    from aim_hf.trainer import last_complete_checkpoint

    resume = args.resume_from_checkpoint
    if isinstance(resume, bool) or str(resume).lower() in ("true", "false"):
        resume = str(resume).lower() == "true"
    if resume is True:
        try:
            args.resume_from_checkpoint = last_complete_checkpoint(args.output_dir)
        except ValueError:
            raise ValueError(
                f"--resume_from_checkpoint true: --output_dir {args.output_dir!r} holds no complete checkpoint "
                "to resume from."
            ) from None
        return
    if resume:
        if not os.path.isdir(resume):
            raise ValueError(f"--resume_from_checkpoint {resume!r}: no such folder.")
        if not os.path.isfile(os.path.join(resume, TRAINER_STATE_NAME)):
            raise ValueError(
                f"--resume_from_checkpoint {resume!r} is not a complete checkpoint (no {TRAINER_STATE_NAME}: not a "
                "checkpoint folder, or its save was interrupted)."
            )
        return
    args.resume_from_checkpoint = None
    checkpoints = sort_checkpoints(args.output_dir) if os.path.isdir(args.output_dir) else []
    if checkpoints and not overwrite:
        names = ", ".join(os.path.basename(c) for c in checkpoints)
        raise ValueError(
            f"--output_dir {args.output_dir!r} already holds checkpoints ({names}): resume with "
            "--resume_from_checkpoint true, or give --overwrite_output_dir to delete them and train from scratch."
        )
    if checkpoints and args.should_save:
        import shutil

        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint)


def _check_push(args: AIMConfig) -> None:
    """`--push_to_hub` needs a token and a Hub that answers: checked with one request before anything
    is loaded or trained (Trainer would otherwise fail on creating the repo, or after training)."""
    if not args.push_to_hub:
        return
    from huggingface_hub import constants, get_token, whoami
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise ValueError("--push_to_hub: cannot reach the Hub, HF_HUB_OFFLINE is set (offline).")
    token = args.hub_token or get_token()
    if not token:
        raise ValueError(
            "--push_to_hub needs a Hub token with write access: none is set (HF_TOKEN, `hf auth login`, or "
            "--hub_token)."
        )
    try:
        whoami(token=token)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        raise ValueError(f"--push_to_hub: the Hub at {constants.ENDPOINT} refuses the token (HTTP {status}).") from err
    except Exception as err:  # connection refused, DNS, timeout, proxy
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        raise ValueError(f"--push_to_hub: cannot reach the Hub at {constants.ENDPOINT} (offline?): {cause}.") from err


def _check_only_modality(only_modality: str | None, modalities: Sequence[str]) -> None:
    """`--only_modality`, if given, names one of `modalities`."""
    if only_modality is not None and only_modality not in modalities:
        raise ValueError(f"only_modality must be one of {modalities}, got {only_modality!r}.")


def _check_encoders(encoders: dict[str, str], only_modality: str | None) -> None:
    """Each of `--encoders` a local folder or a Hub id, and `--only_modality` one of their modalities."""
    for modality, name in encoders.items():
        check_name_or_path(f"the {modality!r} encoder", name)
    _check_only_modality(only_modality, list(encoders))


def _check_embedded_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """The options of a run on the embedded data, before anything is loaded."""
    for option in ("encoders", "modality_columns", "setting_kwargs"):
        if getattr(model_args, option, None) or getattr(data_args, option, None):
            raise ValueError(
                f"--{option} needs --dataset_name or --setting emoji/spoken (the embedded data takes "
                "--vision_encoder / --audio_encoder)."
            )
    _check_only_modality(data_args.only_modality, MODALITIES)
    check_name_or_path("--vision_encoder", model_args.vision_encoder)
    check_name_or_path("--audio_encoder", model_args.audio_encoder)


def _check_setting_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """The options of a run on a setting for pretrained encoders (`emoji`, `spoken`), before anything loads."""
    setting = pretrained_setting(data_args.setting, **setting_options(data_args))
    encoders = model_args.encoders
    if model_args.vision_encoder or model_args.audio_encoder or data_args.modality_columns:
        raise ValueError(
            f"--setting {setting.name!r} takes its encoders in --encoders (not --vision_encoder / --audio_encoder) "
            "and its own columns (no --modality_columns)."
        )
    if sorted(encoders) != sorted(setting.modalities):
        example = json.dumps({m: f"path/to/{m}_encoder" for m in setting.modalities})
        raise ValueError(f"--setting {setting.name!r} needs --encoders for {list(setting.modalities)}, e.g. '{example}'.")
    _check_encoders(encoders, data_args.only_modality)


def _check_own_data_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """The options of a run on your own data, before anything is loaded or downloaded."""
    name = data_args.dataset_name
    if Path(name).suffix.lower() in DATA_FILE_SUFFIXES and not os.path.exists(name):
        raise ValueError(f"--dataset_name {name!r}: no such file.")  # a data file's name, never a Hub id
    check_name_or_path("--dataset_name", name, local="file or folder")
    encoders = model_args.encoders
    if model_args.vision_encoder or model_args.audio_encoder:
        raise ValueError(
            "with --dataset_name, name every encoder in --encoders (not --vision_encoder / --audio_encoder)."
        )
    if not encoders:
        raise ValueError(
            "--dataset_name needs --encoders, one per modality, e.g. "
            '\'{"vision": "google/vit-base-patch16-224-in21k", "text": "google-bert/bert-base-uncased"}\'.'
        )
    for modality in data_args.modality_columns:
        if modality not in encoders:
            raise ValueError(
                f"modality {modality!r} of --modality_columns has no encoder in --encoders {list(encoders)}."
            )
    _check_encoders(encoders, data_args.only_modality)


def _embedded_parts(
    model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig
) -> tuple[dict[str, PreTrainedModel], MultimodalProcessor, DatasetDict, list[str]]:
    """The encoders, processors, splits and class names of a run on the embedded AV-digits data."""
    from aim_hf.pretrained import find_pretrained

    for modality, name in (("vision", model_args.vision_encoder), ("audio", model_args.audio_encoder)):
        if name:
            find_pretrained(f"--{modality}_encoder", name)
    encoders = av_digits_encoders(
        vision=model_args.vision_encoder,
        audio=model_args.audio_encoder,
        seed=training_args.seed,
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
    )
    data = load_data(data_args, encoders["audio"].config.num_mel_bins)
    processor = av_digits_processor(encoders, data["train"], vision=model_args.vision_encoder)
    return encoders, processor, data, LABEL_NAMES


def _own_data_parts(
    model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig
) -> tuple[dict[str, PreTrainedModel], MultimodalProcessor, DatasetDict, list[str]]:
    """The encoders, processors, splits and class names of a run on `--dataset_name`."""
    return _encoder_parts(
        model_args, data_args, training_args,
        lambda processor: _load_own_data(processor, data_args, check=not data_args.skip_data_check),
    )  # fmt: skip


def _setting_parts(
    model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig
) -> tuple[dict[str, PreTrainedModel], MultimodalProcessor, DatasetDict, list[str]]:
    """The encoders, processors, splits and class names of a run on `--setting emoji/spoken`."""

    def load(processor: MultimodalProcessor) -> tuple[DatasetDict, list[str]]:
        data = load_setting(data_args.setting, seed=data_args.dataset_seed, **setting_options(data_args))
        return data, data["train"].features["label"].names

    return _encoder_parts(model_args, data_args, training_args, load)


def _encoder_parts(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: AIMConfig,
    load: Callable[[MultimodalProcessor], tuple[DatasetDict, list[str]]],
) -> tuple[dict[str, PreTrainedModel], MultimodalProcessor, DatasetDict, list[str]]:
    """The encoders of `--encoders` and their processors, and the splits and class names that `load`
    reads given the processors."""
    from transformers import set_seed

    from aim_hf.data.checks import check_classes
    from aim_hf.pretrained import find_pretrained, load_encoder, load_processor
    from aim_hf.processing import MultimodalProcessor

    # Where the Hub is out of reach, an encoder in the cache loads from there without asking the Hub.
    cache_only = {m: find_pretrained(f"the {m!r} encoder", name) for m, name in model_args.encoders.items()}
    processor = MultimodalProcessor(
        {m: load_processor(name, m, cache_only[m]) for m, name in model_args.encoders.items()}
    )
    with training_args.main_process_first(desc="loading the dataset"):  # one process fills the datasets cache
        data, names = load(processor)
    check_classes(data, names, data_args.label_column)
    for split in ("validation", "test"):
        if split in data:
            data[split] = _subset(data[split], data_args.max_eval_samples)
    set_seed(training_args.seed)  # the heads are initialised with the encoders
    encoders = {m: load_encoder(name, processor.kinds[m], cache_only[m]) for m, name in model_args.encoders.items()}
    return encoders, processor, data, names


def _load_own_data(
    processor: MultimodalProcessor, data_args: OwnDataArguments, check: bool = False
) -> tuple[DatasetDict, list[str]]:
    """The splits of `--dataset_name` and its class names (`aim_hf.data.loading.load_own_data`),
    audio files read at the rate each feature extractor expects; with `check`, every row read first
    (`aim_hf.data.checks`)."""
    from aim_hf.data.loading import load_own_data

    columns = _columns(processor, data_args)
    audio = [m for m, kind in processor.kinds.items() if kind == "audio"]
    return load_own_data(
        data_args.dataset_name,
        columns,
        label_column=data_args.label_column,
        config_name=data_args.dataset_config_name,
        data_files=data_args.data_files,
        validation_split_percentage=data_args.validation_split_percentage,
        seed=data_args.dataset_seed,
        audio_rates={columns[m]: getattr(processor[m], "sampling_rate", None) for m in audio},
        check_kinds=processor.kinds if check else None,
    )


def _columns(processor: MultimodalProcessor, data_args: OwnDataArguments) -> dict[str, str]:
    """Modality -> its column: as --modality_columns maps it, else the modality's own name."""
    return {m: data_args.modality_columns.get(m, m) for m in processor.modalities}


def build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: AIMConfig,
    callbacks: list[Any] | None = None,
) -> tuple[AIMTrainer, Dataset, Dataset | None]:
    """The model, data and [`AIMTrainer`] that `aim-hf train` uses, on the embedded AV-digits data
    or on `--dataset_name`: returns the trainer and the validation and test sets (test None where
    the dataset has none). `callbacks` (Trainer callbacks) are added to the trainer, e.g. to
    measure the run (`benchmarks/av_digits.py`)."""
    from aim_hf.collator import MultimodalCollator
    from aim_hf.modeling import MultimodalModel
    from aim_hf.trainer import AIMTrainer

    if data_args.dataset_name:
        parts = _own_data_parts
    else:
        parts = _setting_parts if data_args.setting in PRETRAINED_SETTINGS else _embedded_parts
    encoders, processor, data, names = parts(model_args, data_args, training_args)
    freeze = {"vision": model_args.freeze_vision, "audio": model_args.freeze_audio, "text": model_args.freeze_text}
    model = MultimodalModel.from_encoders(
        encoders,
        fusion=model_args.fusion,
        freeze={m: n for m, n in freeze.items() if m in encoders},
        num_depth_groups=model_args.num_depth_groups,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    apply_batch_norm(model.encoders, model_args.batch_norm)
    collator = MultimodalCollator(
        processor,
        columns=_columns(processor, data_args),
        label_column=data_args.label_column,
        max_text_length=data_args.max_text_length,
    )
    if data_args.only_modality is not None:
        collator = BlankModalities(collator, keep=data_args.only_modality)
    trainer = AIMTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=_subset(data["train"], data_args.max_train_samples),
        eval_dataset=data["validation"],
        processing_class=processor,
        callbacks=callbacks,
    )
    return trainer, data["validation"], data.get("test")


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: AIMConfig,
    callbacks: list[Any] | None = None,
) -> dict[str, float]:
    """Train (on AV-digits or `--dataset_name`), evaluate on validation and test, save the model and processors to
    `training_args.output_dir`; returns the `eval_*` and `test_*` metrics. `callbacks` as in
    [`build_trainer`]."""
    return run(*build_trainer(model_args, data_args, training_args, callbacks))


def run(trainer: AIMTrainer, validation: Dataset, test: Dataset | None) -> dict[str, float]:
    """Train a built trainer (resuming from `args.resume_from_checkpoint`, as [`prepare_output_dir`]
    settled it), evaluate it on `validation` and `test` (if any), save it; returns the metrics. The
    console shows one compact line per log (`aim_hf.console`); the integrations get every key."""
    from aim_hf.console import use_compact_logs

    use_compact_logs(trainer)
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    metrics = trainer.evaluate(validation, metric_key_prefix="eval")
    if test is not None:
        metrics.update(trainer.evaluate(test, metric_key_prefix="test"))
    trainer.save_model()  # weights, config, processors and the model card
    trainer.save_metrics("all", metrics)  # all_results.json, on the main process
    return metrics


def format_results(metrics: dict[str, float], modalities: tuple[str, ...] = MODALITIES) -> str:
    """A small table: fused accuracy and each modality's probe accuracy, on validation and test (where evaluated)."""
    columns = ["fused"] + [f"{m} probe" for m in modalities]
    keys = ["accuracy"] + [f"{m}_probe_accuracy" for m in modalities]
    lines = [
        "| split | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if f"{prefix}_accuracy" not in metrics:
            continue
        cells = [f"{metrics[f'{prefix}_{key}']:.4f}" for key in keys]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _error(command: str, err: Exception, debug: bool) -> int:
    """Any error of a command (options, files, encoders, data, or one raised while training): one line
    naming it, not a traceback. The messages of the checks are ValueErrors; other errors are named by
    their type."""
    if debug:
        raise err
    message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
    message = " ".join(message.split())
    print(f"aim-hf {command}: error: {message}\n(--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
    return 2


def _resume_hint(output_dir: str) -> str:
    """How an interrupted run goes on: from the newest complete checkpoint in `output_dir`, if any."""
    from aim_hf.trainer import last_complete_checkpoint

    try:
        checkpoint = last_complete_checkpoint(output_dir)
    except ValueError:
        return "No checkpoint was saved yet (see --save_strategy)."
    return f"The same command with --resume_from_checkpoint true goes on from {checkpoint}."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, argv = argv[0], argv[1:]
    if command == "methods":
        return methods(argv)
    if command not in ("train", "evaluate", "compare"):
        print(f"aim-hf: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if command == "compare":
        from aim_hf.compare.command import compare, parse_compare_args

        try:
            parsed = parse_compare_args(argv)
        except (ValueError, OSError, ImportError) as err:
            return _error(command, err, debug)
        return compare(argv, *parsed)
    if command == "evaluate":
        try:
            parsed = parse_evaluate_args(argv)
            evaluate_report(*parsed, *prepare_evaluation(*parsed))
        except Exception as err:  # every error, one line (KeyboardInterrupt and --help's SystemExit pass)
            return _error(command, err, debug)
        return 0
    try:
        model_args, data_args, training_args = parse_train_args(argv)
    except Exception as err:  # every error, one line
        return _error(command, err, debug)
    try:
        built = build_trainer(model_args, data_args, training_args)
        metrics = run(*built)
    except KeyboardInterrupt:
        print(f"aim-hf train: interrupted. {_resume_hint(training_args.output_dir)}", file=sys.stderr)
        return 130
    except Exception as err:  # one line too, mid-training ones included (the collator's)
        return _error(command, err, debug)
    if training_args.process_index == 0:
        pretrained = data_args.setting in PRETRAINED_SETTINGS
        data = data_args.dataset_name or (f"setting {data_args.setting!r}" if pretrained else "AV-digits")
        print(f"\n{data}, modulation={training_args.modulation!r}; model saved to {training_args.output_dir}")
        print(format_results(metrics, tuple(built[0].processing_class.modalities)))
    from aim_hf.trainer import leave_process_group

    leave_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
