"""`aim-hf train [config.yaml|config.json] [--option value ...]`: train a [`MultimodalModel`] with
balanced multimodal learning (AIM by default) on the embedded AV-digits data, a setting for
pretrained encoders (`--setting emoji|spoken`) or your own data (`--dataset_name`, with
`--modality_columns` and `--encoders`), evaluate it on the validation and test splits, save it with
its processors and print fused and per-modality probe accuracy.

Every option is a field of [`ModelArguments`], [`DataArguments`], [`AIMConfig`] or
[`OutputArguments`]; a YAML/JSON file gives them too, and command-line options override the file's.
The same command runs under `accelerate launch -m aim_hf train ...`. In Python, as the command does:

    model_args, data_args, training_args = parse_train_args(["--modulation", "ogm_ge"])
    trainer, validation, test = build_trainer(model_args, data_args, training_args)
    metrics = run(trainer, validation, test)
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from transformers import HfArgumentParser, TrainingArguments

from aim_hf.cli.main import DEBUG_ENV
from aim_hf.data.av_digits import MODALITIES
from aim_hf.data.settings import PRETRAINED_SETTINGS
from aim_hf.data.unimodal import BlankModalities, hold_blank_statistics
from aim_hf.batch_norm import apply_batch_norm
from aim_hf.scripts.arguments import TRAIN_DEFAULTS, DataArguments, ModelArguments, OutputArguments
from aim_hf.scripts.checks import check_job, check_push
from aim_hf.scripts.output_dir import prepare_output_dir, resume_hint
from aim_hf.scripts.sources import load_parts, modality_columns, subset
from aim_hf.training_args import AIMConfig

if TYPE_CHECKING:
    from datasets import Dataset

    from aim_hf.trainer import AIMTrainer

USAGE = "aim-hf train [CONFIG.yaml|CONFIG.json] [--option value ...] [--debug]"
# The titled groups of `--help`, in order, and their descriptions.
HELP_GROUPS = {
    "model": ModelArguments.__doc__,
    "data": DataArguments.__doc__,
    "modulation": "The balanced-learning method and its hyperparameters (AIMConfig).",
    "training": "transformers.TrainingArguments, learning_rate_mapping and overwrite_output_dir. Checkpoints: "
    "every epoch by default, the last 2 kept (--save_total_limit); --save_steps N alone saves every N steps "
    "instead; --resume_from_checkpoint true resumes from the newest one in --output_dir.",
}
# AIMConfig's fields shown among TrainingArguments': learning_rate_mapping beside learning_rate.
_TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)} | {"learning_rate_mapping"}


class TrainArgumentParser(HfArgumentParser):
    """`HfArgumentParser` that shows each option of `aim-hf train --help` in its titled group
    ([`HELP_GROUPS`]): a dataclass's `_argument_group_name`, and AIMConfig's fields split into the
    method's and TrainingArguments'."""

    def _add_dataclass_arguments(self, dtype: type) -> None:
        if not hasattr(self, "_help_groups"):  # created at the first dataclass, so that they show in order
            self._help_groups = {title: self.add_argument_group(title, text) for title, text in HELP_GROUPS.items()}
        hints = get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            if issubclass(dtype, TrainingArguments):
                title = "training" if f.name in _TRAINING_FIELDS else "modulation"
            else:
                title = getattr(dtype, "_argument_group_name", "training")
            f.type = hints[f.name]
            self._parse_dataclass_field(self._help_groups[title], f)


def build_parser() -> HfArgumentParser:
    """The `aim-hf train` parser: no abbreviated options, the command's defaults, and the help in titled groups."""
    parser = TrainArgumentParser(
        (ModelArguments, DataArguments, AIMConfig, OutputArguments),
        prog="aim-hf train",
        usage=USAGE,
        description="A YAML/JSON file gives options too; options on the command line override the file's. "
        f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error.",
        allow_abbrev=False,  # `--learning_rat` must not pass as `--learning_rate`
    )
    parser.set_defaults(**TRAIN_DEFAULTS)
    return parser


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
        known = {f.name for dc in parser.dataclass_types for f in dataclasses.fields(dc) if f.init}
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
    check_job(model_args, data_args)
    prepare_output_dir(training_args, output_args.overwrite_output_dir)
    check_push(training_args)
    return model_args, data_args, training_args


def build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: AIMConfig,
    callbacks: list[Any] | None = None,
) -> tuple[AIMTrainer, Dataset, Dataset | None]:
    """The model, data and [`AIMTrainer`] that `aim-hf train` uses, for the options [`parse_train_args`]
    returns: returns the trainer and the validation and test sets (test None where the data has
    none). `callbacks` (Trainer callbacks) are added to the trainer, e.g. to measure the run
    (`aim-hf compare`, `benchmarks/av_digits.py`)."""
    from aim_hf.collator import MultimodalCollator
    from aim_hf.modeling import MultimodalModel
    from aim_hf.trainer import AIMTrainer

    encoders, processor, data, names = load_parts(model_args, data_args, training_args)
    model = MultimodalModel.from_encoders(
        encoders,
        fusion=model_args.fusion,
        freeze={m: model_args.freeze.get(m, 0) for m in encoders},
        num_depth_groups=model_args.num_depth_groups,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    apply_batch_norm(model.encoders, model_args.batch_norm)
    collator = MultimodalCollator(
        processor,
        columns=modality_columns(processor, data_args),
        label_column=data_args.label_column,
        max_text_length=data_args.max_text_length,
    )
    if data_args.only_modality is not None:
        collator = BlankModalities(collator, keep=data_args.only_modality)
        hold_blank_statistics(model.encoders, keep=data_args.only_modality)
    trainer = AIMTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=subset(data["train"], data_args.max_train_samples),
        eval_dataset=data["validation"],
        processing_class=processor,
        callbacks=callbacks,
    )
    return trainer, data["validation"], data.get("test")


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


def main(argv: list[str]) -> int:
    """`aim-hf train ARGV`: exit status 0, or 130 when interrupted (with how to go on). Other errors
    are raised for the dispatcher (`aim_hf.cli.main`) to show in one line."""
    model_args, data_args, training_args = parse_train_args(argv)
    try:
        built = build_trainer(model_args, data_args, training_args)
        metrics = run(*built)
    except KeyboardInterrupt:
        print(f"aim-hf train: interrupted. {resume_hint(training_args.output_dir)}", file=sys.stderr)
        return 130
    if training_args.process_index == 0:
        pretrained = data_args.setting in PRETRAINED_SETTINGS
        data = data_args.dataset_name or (f"setting {data_args.setting!r}" if pretrained else "AV-digits")
        print(f"\n{data}, modulation={training_args.modulation!r}; model saved to {training_args.output_dir}")
        print(format_results(metrics, tuple(built[0].processing_class.modalities)))
    from aim_hf.trainer import leave_process_group

    leave_process_group()
    return 0
