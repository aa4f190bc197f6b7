"""Train an image + text classifier on a `datasets` dataset with balanced multimodal learning (AIM).

    python examples/image_text/train.py --dataset_name <hub id or local folder> \
        --image_column image --text_column text --label_column label \
        --output_dir image-text-aim --do_train --do_eval
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/image_text/train.py ...

The dataset is a Hub id (anything `datasets.load_dataset` reads, with --dataset_config_name) or a
local folder: one written by `DatasetDict.save_to_disk`, or data files `load_dataset` reads
(parquet, csv / json with image paths, an imagefolder with metadata). It needs an image column,
a text column and a label column (a ClassLabel, integers, or class names).

Every AIMConfig / TrainingArguments option applies (`--modulation`, `--push_to_hub`, ...): see --help.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, Dataset, load_dataset, load_from_disk
from transformers import set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    ModelArguments,
    build_model,
    label_space,
    load_processor,
    logger,
    parse_args,
    run,
    setup_logging,
)

from aim_hf import MultimodalCollator  # noqa: E402


@dataclass
class ImageTextEncoders:
    """Pretrained encoders: Hub ids or local folders (CLIP / SigLIP checkpoints give their vision tower)."""

    vision_model: str = field(
        default="google/vit-base-patch16-224-in21k", metadata={"help": "Vision encoder: ViT, CLIP, SigLIP, ..."}
    )
    text_model: str = field(default="google-bert/bert-base-uncased", metadata={"help": "Text encoder (BERT family)."})


@dataclass
class ImageTextDataArguments:
    dataset_name: str = field(metadata={"help": "Hub dataset id, or a local folder (save_to_disk or data files)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    train_split: str = field(default="train", metadata={"help": "Split to train on (a slice such as 'train[:90%%]' works)."})
    eval_split: str = field(default="test", metadata={"help": "Split to evaluate on (e.g. 'validation', 'train[90%%:]')."})
    image_column: str = field(default="image", metadata={"help": "Column of images (images, paths or bytes)."})
    text_column: str = field(default="text", metadata={"help": "Column of texts."})
    label_column: str = field(default="label", metadata={"help": "Column of labels."})
    max_text_length: int = field(default=128, metadata={"help": "Texts are truncated to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})


def load_split(args: ImageTextDataArguments, split: str, cache_dir: str | None) -> Dataset:
    """One split of a folder written by `save_to_disk`, or of anything `load_dataset` reads (where
    slices such as "train[:90%]" work too)."""
    if os.path.isfile(os.path.join(args.dataset_name, "dataset_dict.json")):
        return load_from_disk(args.dataset_name)[split]
    return load_dataset(args.dataset_name, args.dataset_config_name, split=split, cache_dir=cache_dir)


def load_splits(args: ImageTextDataArguments, cache_dir: str | None) -> tuple[Dataset, Dataset, list[str]]:
    """The training and evaluation splits with integer labels, and the class names in index order."""
    train, evaluation = load_split(args, args.train_split, cache_dir), load_split(args, args.eval_split, cache_dir)
    feature = train.features[args.label_column]
    if isinstance(feature, ClassLabel):
        names = feature.names
    else:
        names = label_space([str(v) for v in set(train[args.label_column]) | set(evaluation[args.label_column])])
        if feature.dtype == "string":  # class names -> indices
            train = train.cast_column(args.label_column, ClassLabel(names=names))
            evaluation = evaluation.cast_column(args.label_column, ClassLabel(names=names))
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(args.max_eval_samples, len(evaluation))))
    return train, evaluation, names


def main() -> None:
    data_args, encoder_args, model_args, training_args = parse_args(
        ImageTextDataArguments, ImageTextEncoders, ModelArguments
    )
    setup_logging(training_args)
    set_seed(training_args.seed)  # before the heads are initialised
    train_dataset, eval_dataset, classes = load_splits(data_args, model_args.cache_dir)
    logger.info(f"{len(train_dataset)} training / {len(eval_dataset)} evaluation rows, {len(classes)} classes.")
    encoders = {"vision": encoder_args.vision_model, "text": encoder_args.text_model}
    processor = load_processor(encoders, model_args.cache_dir)
    collator = MultimodalCollator(
        processor,
        columns={"vision": data_args.image_column, "text": data_args.text_column},
        label_column=data_args.label_column,
        max_text_length=data_args.max_text_length,
    )
    model = build_model(encoders, model_args, classes)
    run(training_args, model, processor, collator, train_dataset, eval_dataset, data_args.dataset_name)


if __name__ == "__main__":
    main()
