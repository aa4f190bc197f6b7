"""Tiny Hugging Face encoders saved locally, their processors, and synthetic raw examples.

Shared by the test modules (through the fixtures in conftest.py). Nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    AutoModel,
    BertConfig,
    BertTokenizer,
    ViTConfig,
    ViTImageProcessorPil,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
)

NUM_LABELS = 3
IMAGE_SIZE = 32
SAMPLING_RATE = 16000
AUDIO_SAMPLES = 4000
WORDS = [f"w{i}" for i in range(24)]

_SMALL = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
ENCODER_CONFIGS = {
    "vision": lambda: ViTConfig(**_SMALL, image_size=IMAGE_SIZE, patch_size=8),
    "audio": lambda: ASTConfig(
        **_SMALL, num_mel_bins=16, max_length=32, patch_size=8, frequency_stride=8, time_stride=8
    ),
    "text": lambda: BertConfig(**_SMALL, vocab_size=5 + len(WORDS), max_position_embeddings=64),
    "speech": lambda: Wav2Vec2Config(
        **_SMALL,
        conv_dim=(16, 16),
        conv_stride=(10, 8),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        layerdrop=0.0,
        vocab_size=8,
    ),
}


def save_tiny_encoders(root: str | os.PathLike) -> dict[str, str]:
    """Save one tiny randomly initialised encoder per kind under `root`; returns modality -> path."""
    root = Path(root)
    paths = {}
    for i, (name, make_config) in enumerate(ENCODER_CONFIGS.items()):
        import torch

        torch.manual_seed(i)
        AutoModel.from_config(make_config()).save_pretrained(root / name)
        paths[name] = str(root / name)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS))
    paths["vocab"] = str(vocab)
    return paths


def save_tiny_checkpoints(root: str | os.PathLike) -> dict[str, str]:
    """[`save_tiny_encoders`], each folder holding its processor too (as a Hub checkpoint does)."""
    paths = save_tiny_encoders(root)
    for modality, processor in make_processors(paths).items():
        processor.save_pretrained(paths[modality])
    return paths


def save_tiny_setting_encoders(root: str | os.PathLike) -> dict[str, str]:
    """Tiny randomly initialised stand-ins for the offline encoders of the `emoji` and `spoken`
    settings, each saved with its processor in the folder `python -m aim_hf.offline NAME ROOT/NAME`
    writes: `mobilenet_v2` (16x16 crops), `whisper_tiny_en` (1 s clips, 4 layers as in tiny.en) and
    `minilm` (a tiny BERT). Returns name -> path."""
    import torch
    from transformers import (
        BertModel,
        MobileNetV2Config,
        MobileNetV2ImageProcessorPil,
        MobileNetV2Model,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    root = Path(root)
    paths = {name: str(root / name) for name in ("mobilenet_v2", "whisper_tiny_en", "minilm")}
    torch.manual_seed(0)
    MobileNetV2Model(MobileNetV2Config(image_size=16, depth_multiplier=0.25)).save_pretrained(paths["mobilenet_v2"])
    MobileNetV2ImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(
        paths["mobilenet_v2"]
    )
    whisper = WhisperConfig(
        d_model=32, encoder_layers=4, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=50, max_target_positions=8,
        vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
    )  # fmt: skip  (1 s at 16 kHz: 100 mel frames, 50 positions)
    WhisperModel(whisper).save_pretrained(paths["whisper_tiny_en"])
    WhisperFeatureExtractor(feature_size=16, chunk_length=1).save_pretrained(paths["whisper_tiny_en"])
    BertModel(ENCODER_CONFIGS["text"]()).save_pretrained(paths["minilm"])
    tiny_tokenizer().save_pretrained(paths["minilm"])
    return paths


def tiny_tokenizer() -> BertTokenizer:
    """A BERT tokenizer over `WORDS` (transformers 5 ignores `vocab_file=` when building one: every word
    would be `[UNK]` and the text modality would carry nothing)."""
    return BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])})


def make_processors(paths: dict[str, str]) -> dict[str, object]:
    """A processor for each tiny encoder."""
    return {
        "vision": ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        "audio": ASTFeatureExtractor(num_mel_bins=16, max_length=32, sampling_rate=SAMPLING_RATE),
        "text": tiny_tokenizer(),
        "speech": Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE, return_attention_mask=True),
    }


def _raw_value(modality: str, label: int, informative: bool, rng: np.random.Generator):
    """A raw example of `modality`; when `informative` it encodes `label`, else it is noise."""
    cls = label if informative else int(rng.integers(NUM_LABELS))
    if modality == "vision":
        image = rng.integers(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        if informative:
            band = IMAGE_SIZE // NUM_LABELS
            image[cls * band : (cls + 1) * band] += 180
        return Image.fromarray(image)
    if modality in ("audio", "speech"):
        t = np.arange(AUDIO_SAMPLES) / SAMPLING_RATE
        noise = rng.standard_normal(AUDIO_SAMPLES).astype(np.float32) * 0.3
        if not informative:
            return {"array": noise, "sampling_rate": SAMPLING_RATE}
        tone = np.sin(2 * np.pi * (300 + 1500 * cls) * t).astype(np.float32)
        return {"array": tone + noise, "sampling_rate": SAMPLING_RATE}
    words = rng.choice(WORDS[NUM_LABELS:], size=5).tolist()
    if informative:
        words[int(rng.integers(5))] = WORDS[cls]
    return " ".join(words)


def make_rows(
    n: int,
    modalities: tuple[str, ...] = ("vision", "audio", "text"),
    informative: tuple[str, ...] | None = None,
    seed: int = 0,
) -> list[dict]:
    """`n` raw examples with a label in [0, NUM_LABELS); the modalities in `informative` (default:
    all) encode the label, the others are label-independent noise."""
    rng = np.random.default_rng(seed)
    informative = modalities if informative is None else informative
    rows = []
    for i in range(n):
        label = i % NUM_LABELS
        row = {m: _raw_value(m, label, m in informative, rng) for m in modalities}
        row["label"] = label
        rows.append(row)
    return rows


def write_csv_of_paths(root: str | os.PathLike, n: int = 12, seed: int = 0, labels=("bird", "cat", "dog")) -> Path:
    """`root/train.csv` as a user writes one: columns image, sound, caption, label, the image (PNG)
    and sound (16 kHz WAV) files under `root/images` and `root/sounds`, named in the csv by paths
    relative to `root`. Row i's files are `images/i.png` and `sounds/i.wav`; returns the csv's path."""
    import csv

    import soundfile as sf

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "sounds").mkdir(exist_ok=True)
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "sound", "caption", "label"])
        for i, row in enumerate(make_rows(n, ("vision", "audio", "text"), seed=seed)):
            row["vision"].save(root / "images" / f"{i}.png")
            sf.write(root / "sounds" / f"{i}.wav", row["audio"]["array"], SAMPLING_RATE, subtype="FLOAT")
            writer.writerow([f"images/{i}.png", f"sounds/{i}.wav", row["text"], labels[row["label"]]])
    return root / "train.csv"


def tiny_args(output_dir: str | os.PathLike, **overrides):
    """AIMConfig for the tests: CPU, deterministic, quiet, no reporting, no checkpoints; `overrides`
    are any AIMConfig fields."""
    from aim_hf import AIMConfig

    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=6,
        per_device_eval_batch_size=12,
        max_steps=4,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=2,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
    )
    defaults.update(overrides)
    return AIMConfig(**defaults)


# `aim-hf train` options of a run of seconds on the embedded data, with tiny from-config encoders.
TINY_OPTIONS = [
    "--hidden_size", "16", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "32",
    "--max_train_samples", "32", "--max_eval_samples", "16", "--per_device_train_batch_size", "16",
    "--max_steps", "3", "--use_cpu", "true", "--disable_tqdm", "true",
]  # fmt: skip

# `build_model(..., encoder_kwargs=TEXT_NO_DROPOUT)`: the tiny BERT without dropout, so that two forwards agree.
TEXT_NO_DROPOUT = {"text": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
