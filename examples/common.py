"""What the example scripts share: argument dataclasses, reading audio-visual clips (wav + frames),
building the model and processors from Hub encoders, and the train / evaluate / push run.

The scripts put this folder on `sys.path` and import it, so each stays a short, readable recipe.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import transformers
from PIL import Image
from torch.utils.data import Dataset
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedModel,
    set_seed,
)

from aim_hf import AIMConfig, AIMTrainer, MultimodalCollator, MultimodalModel, MultimodalProcessor
from aim_hf.trainer import leave_process_group

logger = logging.getLogger(__name__)

# Which Auto class loads the processor of an encoder, by modality.
PROCESSOR_LOADERS = {"vision": AutoImageProcessor, "audio": AutoFeatureExtractor, "text": AutoTokenizer}
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


# ------------------------------------------------------------------------------------ arguments
@dataclass
class ModelArguments:
    """How the encoders are fused and trained (the encoders themselves are named per script)."""

    fusion: str = field(default="concat", metadata={"help": "Fusion: 'concat', 'sum', 'gated' or 'film'."})
    num_depth_groups: int = field(
        default=4, metadata={"help": "Number of depth groups each encoder's layers are split into (AIM's depths)."}
    )
    freeze: str | None = field(
        default=None,
        metadata={
            "help": "Leading layers to freeze per modality with the embeddings, e.g. 'vision=6,audio=-1' "
            "(-1 freezes the whole encoder). Default: train everything."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})


@dataclass
class AudioVisualEncoders:
    """Pretrained encoders of the audio-visual examples: Hub ids or local folders."""

    vision_model: str = field(
        default="google/vit-base-patch16-224-in21k",
        metadata={"help": "Vision encoder (Hub id or local folder with its image processor)."},
    )
    audio_model: str = field(
        default="MIT/ast-finetuned-audioset-10-10-0.4593",
        metadata={"help": "Audio encoder (Hub id or local folder with its feature extractor)."},
    )


@dataclass
class AudioVisualDataArguments:
    """A local audio-visual dataset: one wav per clip, a folder of frames per clip, and clip lists.

    Relative paths are taken inside `data_dir`. A clip list is a CSV without header whose first
    column is the clip name (the wav is `<audio_dir>/<clip>.wav`, the frames are
    `<frames_dir>/<clip>/*.jpg`) and whose last column is the label: a class name or a class index.
    """

    data_dir: str = field(metadata={"help": "Root folder of the dataset."})
    audio_dir: str = field(default="audio", metadata={"help": "Folder of <clip>.wav files."})
    frames_dir: str = field(default="frames", metadata={"help": "Folder of per-clip frame folders."})
    train_file: str = field(default="train.csv", metadata={"help": "Training clip list (CSV: clip,...,label)."})
    eval_file: str = field(default="test.csv", metadata={"help": "Evaluation clip list (CSV: clip,...,label)."})
    classes_file: str | None = field(
        default=None,
        metadata={"help": "Text file with one class name per line, in class-index order (default: from the lists)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training clips."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation clips."})

    def path(self, name: str) -> str:
        return os.path.join(self.data_dir, name)


def make_parser(*dataclass_types: type) -> HfArgumentParser:
    """A parser of the given dataclasses followed by [`AIMConfig`] (every Trainer option)."""
    return HfArgumentParser((*dataclass_types, AIMConfig))


def parse_args(*dataclass_types: type) -> tuple[Any, ...]:
    """Parse the given dataclasses plus [`AIMConfig`] from the command line, or from one .json /
    .yaml file given as the only argument."""
    parser = make_parser(*dataclass_types)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(sys.argv[1]))
    if len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(sys.argv[1]))
    return parser.parse_args_into_dataclasses()


def setup_logging(training_args: AIMConfig) -> None:
    """Log to stdout, at INFO on the main process and WARNING on the others (as `--log_level` sets)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    transformers.utils.logging.set_verbosity(level)


def parse_freeze(spec: str | None) -> dict[str, int] | None:
    """'vision=6,audio=-1' -> {"vision": 6, "audio": -1}."""
    if not spec:
        return None
    freeze = {}
    for item in spec.split(","):
        modality, sep, count = item.partition("=")
        if not sep:
            raise ValueError(f"--freeze takes 'modality=layers' pairs separated by commas, got {spec!r}.")
        freeze[modality.strip()] = int(count)
    return freeze


# ------------------------------------------------------------------------------- audio-visual data
def load_wav(path: str, sampling_rate: int) -> np.ndarray:
    """Read a wav (or any file soundfile reads) as mono float32 at `sampling_rate`.

    Other rates are resampled by linear interpolation: simple and dependency-free, but with no
    anti-aliasing filter, so downsampling folds frequencies above the new Nyquist rate back in. For
    the best quality convert the files once beforehand (`ffmpeg -i in.wav -ac 1 -ar 16000 out.wav`).
    """
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate == sampling_rate:
        return audio
    length = max(1, round(len(audio) * sampling_rate / rate))
    positions = np.arange(length, dtype=np.float64) * (rate / sampling_rate)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def list_frames(folder: str) -> list[str]:
    """The frame images of one clip, in name order."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(FRAME_SUFFIXES))


def read_clip_list(path: str) -> list[tuple[str, str]]:
    """(clip, label) pairs from a CSV list: first column the clip, last column the label. A first
    row whose last column is `label` is taken as a header."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [row for row in csv.reader(f) if row and row[0].strip()]
    if rows and rows[0][-1].strip().lower() == "label":
        rows = rows[1:]
    return [(row[0].strip(), row[-1].strip()) for row in rows]


def label_space(labels: Sequence[str], classes: Sequence[str] | None = None) -> list[str]:
    """Class names in index order: `classes` if given; else `0..max` when every label is an index,
    else the sorted label names."""
    if classes is not None:
        return list(classes)
    if all(label.isdigit() for label in labels):
        return [str(i) for i in range(max(int(label) for label in labels) + 1)]
    return sorted(set(labels))


def label_index(label: str, classes: Sequence[str]) -> int:
    if label in classes:
        return classes.index(label)
    if label.isdigit() and int(label) < len(classes):
        return int(label)
    raise ValueError(f"Label {label!r} is not one of the {len(classes)} classes {list(classes)[:10]}...")


class AudioVisualClips(Dataset):
    """Clips of a local audio-visual dataset as raw rows for [`MultimodalCollator`]:
    `{"audio": {"array", "sampling_rate"}, "vision": PIL image, "label": int}`.

    One frame per clip is used: a random one in training, the middle one otherwise (deterministic).
    Clips whose wav or frame folder is missing are skipped with a warning (as the OGM-GE loaders do).
    """

    def __init__(
        self,
        clips: Sequence[tuple[str, int]],
        audio_dir: str,
        frames_dir: str,
        sampling_rate: int,
        train: bool,
    ) -> None:
        self.sampling_rate = sampling_rate
        self.train = train
        self.items: list[tuple[str, list[str], int]] = []
        missing = []
        for clip, label in clips:
            wav, folder = os.path.join(audio_dir, f"{clip}.wav"), os.path.join(frames_dir, clip)
            frames = list_frames(folder) if os.path.isdir(folder) else []
            if os.path.isfile(wav) and frames:
                self.items.append((wav, frames, label))
            else:
                missing.append(clip)
        if missing:
            logger.warning(f"Skipped {len(missing)} clips with no wav or no frames (first: {missing[0]!r}).")
        if not self.items:
            raise ValueError(f"No clip has both {audio_dir}/<clip>.wav and frames in {frames_dir}/<clip>/.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        wav, frames, label = self.items[index]
        frame = random.choice(frames) if self.train else frames[len(frames) // 2]
        with Image.open(frame) as image:
            image = image.convert("RGB")
        audio = load_wav(wav, self.sampling_rate)
        return {"audio": {"array": audio, "sampling_rate": self.sampling_rate}, "vision": image, "label": label}


def audio_visual_datasets(
    data_args: AudioVisualDataArguments,
    sampling_rate: int,
    classes: Sequence[str] | None = None,
) -> tuple[AudioVisualClips, AudioVisualClips, list[str]]:
    """The training and evaluation clips of `data_args`, and the class names in index order."""
    train_list = read_clip_list(data_args.path(data_args.train_file))
    eval_list = read_clip_list(data_args.path(data_args.eval_file))
    if classes is None and data_args.classes_file:
        with open(data_args.path(data_args.classes_file)) as f:
            classes = [line.strip() for line in f if line.strip()]
    classes = label_space([label for _, label in train_list + eval_list], classes)
    train_list, eval_list = train_list[: data_args.max_train_samples], eval_list[: data_args.max_eval_samples]
    audio_dir, frames_dir = data_args.path(data_args.audio_dir), data_args.path(data_args.frames_dir)
    datasets = [
        AudioVisualClips(
            [(clip, label_index(label, classes)) for clip, label in clips], audio_dir, frames_dir, sampling_rate, train
        )
        for clips, train in ((train_list, True), (eval_list, False))
    ]
    return datasets[0], datasets[1], classes


# -------------------------------------------------------------------------------- model and run
def load_encoder(name: str, modality: str, cache_dir: str | None = None) -> PreTrainedModel:
    """An encoder from a Hub id or folder. Of a dual-encoder checkpoint (CLIP, SigLIP, ...) only the
    tower of `modality` is kept, e.g. `CLIPVisionModel` for "vision"."""
    config = AutoConfig.from_pretrained(name, cache_dir=cache_dir)
    tower = {"vision": "vision_config", "text": "text_config", "audio": "audio_config"}.get(modality)
    sub_config = getattr(config, tower, None) if tower else None
    if sub_config is not None:
        return AutoModel.from_pretrained(name, config=sub_config, cache_dir=cache_dir)
    model = AutoModel.from_pretrained(name, cache_dir=cache_dir)
    return model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model


def load_processor(encoders: Mapping[str, str], cache_dir: str | None = None) -> MultimodalProcessor:
    """Each encoder's own processor, loaded from the same Hub id or folder."""
    return MultimodalProcessor(
        {m: PROCESSOR_LOADERS[m].from_pretrained(name, cache_dir=cache_dir) for m, name in encoders.items()}
    )


def build_model(encoders: Mapping[str, str], model_args: ModelArguments, class_names: Sequence[str]) -> MultimodalModel:
    """A [`MultimodalModel`] over the named encoders with a head for `class_names`."""
    return MultimodalModel.from_encoders(
        {m: load_encoder(name, m, model_args.cache_dir) for m, name in encoders.items()},
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        fusion=model_args.fusion,
        num_depth_groups=model_args.num_depth_groups,
        freeze=parse_freeze(model_args.freeze),
    )


def run(
    training_args: AIMConfig,
    model: MultimodalModel,
    processor: MultimodalProcessor,
    collator: MultimodalCollator,
    train_dataset: Any,
    eval_dataset: Any,
    dataset_name: str,
) -> AIMTrainer:
    """Train (`--do_train`), evaluate (`--do_eval`), save metrics, and push (`--push_to_hub`)."""
    trainer = AIMTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=eval_dataset if training_args.do_eval else None,
        processing_class=processor,
    )
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        metrics = {**result.metrics, "train_samples": len(train_dataset)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    if training_args.do_eval:
        metrics = {**trainer.evaluate(), "eval_samples": len(eval_dataset)}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.do_train:
        trainer.create_model_card(dataset=dataset_name)  # again, now with the dataset and final metrics
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=dataset_name)
    leave_process_group()
    return trainer


def main_audio_visual(
    data_class: type[AudioVisualDataArguments], dataset_name: str, classes: Mapping[str, str] | None = None
) -> None:
    """The whole audio-visual recipe: parse the options, read the clips, build the model over the
    vision and audio encoders, train / evaluate / push.

    Args:
        data_class: the dataset's [`AudioVisualDataArguments`] (its defaults give the dataset's layout).
        dataset_name: the dataset's name, for the model card.
        classes: label as written in the clip lists -> readable class name, in class-index order
            (default: from `--classes_file` or the lists).
    """
    data_args, encoder_args, model_args, training_args = parse_args(data_class, AudioVisualEncoders, ModelArguments)
    setup_logging(training_args)
    set_seed(training_args.seed)  # before the heads are initialised
    encoders = {"vision": encoder_args.vision_model, "audio": encoder_args.audio_model}
    processor = load_processor(encoders, model_args.cache_dir)
    train_dataset, eval_dataset, labels = audio_visual_datasets(
        data_args, processor["audio"].sampling_rate, list(classes) if classes else None
    )
    logger.info(f"{len(train_dataset)} training / {len(eval_dataset)} evaluation clips, {len(labels)} classes.")
    model = build_model(encoders, model_args, [classes[c] for c in labels] if classes else labels)
    run(training_args, model, processor, MultimodalCollator(processor), train_dataset, eval_dataset, dataset_name)
