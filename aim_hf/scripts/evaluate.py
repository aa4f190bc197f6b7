"""`aim-hf evaluate MODEL_DIR [--option value ...]`: load a saved model and its processors and report,
on a split of the embedded data or of your own, fused and probe accuracy and what each modality
contributes (accuracy alone, Shapley value; `aim_hf.evaluation`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import HfArgumentParser

from aim_hf.cli.main import DEBUG_ENV
from aim_hf.data.av_digits import MODALITIES
from aim_hf.data.settings import PRETRAINED_SETTINGS
from aim_hf.scripts.arguments import DatasetArguments, EvaluationDataArguments, OwnDataArguments
from aim_hf.scripts.sources import load_embedded, load_own_splits, modality_columns, subset

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from aim_hf.modeling import MultimodalModel
    from aim_hf.processing import MultimodalProcessor

USAGE = "aim-hf evaluate MODEL_DIR [--split test|validation] [--output_json PATH] [--option value ...] [--debug]"


def _check_setting(data_args: DatasetArguments) -> None:
    """A one-line error, before anything loads, for a setting `aim-hf evaluate` does not load."""
    if data_args.setting in PRETRAINED_SETTINGS:
        raise ValueError(
            f"aim-hf evaluate does not load --setting {data_args.setting!r} yet; load its data with "
            f"aim_hf.data.settings.load_setting({data_args.setting!r})."
        )


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
        usage=USAGE,
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
        raise ValueError(f"give the model folder first: {USAGE}")
    model_dir, argv = argv[0], argv[1:]
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"MODEL_DIR {model_dir!r} is not a saved model (no config.json there).")
    eval_args, data_args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise ValueError(f"unknown options {unknown} (options are not abbreviated); see `aim-hf evaluate --help`.")
    if eval_args.split not in (None, "validation", "test"):
        raise ValueError(f"--split must be 'validation' or 'test', got {eval_args.split!r}.")
    if not data_args.dataset_name:
        _check_setting(data_args)
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
    data = load_embedded(data_args, model.config.encoder_configs["audio"].num_mel_bins)
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
    data, names = load_own_splits(processor, data_args)
    split = _choose_split(eval_args, data)
    if split not in data:
        raise ValueError(f"{data_args.dataset_name!r} has no {split!r} split; its splits: {list(data)}.")
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != model_names:
        raise ValueError(
            f"--label_column {data_args.label_column!r} gives the classes {names}, the model was trained on "
            f"{model_names}: evaluate on data with the training data's classes."
        )
    return subset(data[split], data_args.max_eval_samples)


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
    from aim_hf.collator import MultimodalCollator
    from aim_hf.evaluation import modality_contributions

    collator = MultimodalCollator(
        processor,
        columns=modality_columns(processor, data_args) if data_args.dataset_name else None,
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


def main(argv: list[str]) -> int:
    """`aim-hf evaluate ARGV`: errors are raised for the dispatcher (`aim_hf.cli.main`) to show in one line."""
    parsed = parse_evaluate_args(argv)
    evaluate_report(*parsed, *prepare_evaluation(*parsed))
    return 0
