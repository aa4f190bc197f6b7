"""The data sources of a run, each giving the same parts: the encoders (one per modality, as
`--encoders` names them), their processors, the splits and the class names.

- the embedded AV-digits data and its constructions (`--setting av_digits|strong|hopeless`): a
  modality not in `--encoders` gets a small encoder built from its config;
- a setting for pretrained encoders (`--setting emoji|spoken`, `aim_hf.data.settings`);
- your own data (`--dataset_name`, `aim_hf.data.loading`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from aim_hf.data.av_digits import LABEL_NAMES, av_digits_encoders, av_digits_processor
from aim_hf.data.settings import PRETRAINED_SETTINGS, load_setting
from aim_hf.scripts.arguments import DataArguments, DatasetArguments, ModelArguments, OwnDataArguments
from aim_hf.training_args import AIMConfig, json_mapping

if TYPE_CHECKING:
    from datasets import DatasetDict
    from transformers import PreTrainedModel

    from aim_hf.processing import MultimodalProcessor

Parts = tuple[dict[str, "PreTrainedModel"], "MultimodalProcessor", "DatasetDict", list[str]]


def source_of(data_args: DatasetArguments | OwnDataArguments) -> Literal["embedded", "setting", "own"]:
    """Which source `data_args` reads: your own data (`--dataset_name`), a setting for pretrained
    encoders, or the embedded data."""
    if getattr(data_args, "dataset_name", None):
        return "own"
    return "setting" if data_args.setting in PRETRAINED_SETTINGS else "embedded"


def load_parts(model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig) -> Parts:
    """The encoders, processors, splits and class names of the run `model_args` and `data_args` give,
    the validation and test splits cut to `--max_eval_samples`."""
    return {"embedded": embedded_parts, "setting": setting_parts, "own": own_data_parts}[source_of(data_args)](
        model_args, data_args, training_args
    )


def subset(dataset: Any, limit: int | None) -> Any:
    """The first `limit` examples of `dataset` (all of them for None)."""
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def setting_options(data_args: DatasetArguments) -> dict[str, Any]:
    """The knobs of a pretrained setting's construction: --setting_kwargs and --image_noise."""
    options = json_mapping("setting_kwargs", data_args.setting_kwargs)
    if "image_noise" in options:
        raise ValueError("give the image noise as --image_noise, not in --setting_kwargs.")
    return {**options, "image_noise": data_args.image_noise}


def load_embedded(data_args: DatasetArguments, num_mel_bins: int) -> DatasetDict:
    """The AV-digits splits of `data_args` (spectrograms of `num_mel_bins` bins), the validation and
    test splits cut to `max_eval_samples`."""
    data = load_setting(
        data_args.setting, seed=data_args.dataset_seed, num_mel_bins=num_mel_bins, image_noise=data_args.image_noise
    )
    for split in ("validation", "test"):
        data[split] = subset(data[split], data_args.max_eval_samples)
    return data


def embedded_parts(model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig) -> Parts:
    """The parts of a run on the embedded AV-digits data."""
    from aim_hf.pretrained import find_pretrained

    for modality, name in model_args.encoders.items():
        find_pretrained(f"the {modality!r} encoder", name)
    vision = model_args.encoders.get("vision")
    encoders = av_digits_encoders(
        vision=vision,
        audio=model_args.encoders.get("audio"),
        seed=training_args.seed,
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
    )
    data = load_embedded(data_args, encoders["audio"].config.num_mel_bins)
    processor = av_digits_processor(encoders, data["train"], vision=vision)
    return encoders, processor, data, LABEL_NAMES


def own_data_parts(model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig) -> Parts:
    """The parts of a run on `--dataset_name`, every row read first unless `--skip_data_check`."""
    return pretrained_parts(
        model_args, data_args, training_args,
        lambda processor: load_own_splits(processor, data_args, check=not data_args.skip_data_check),
    )  # fmt: skip


def setting_parts(model_args: ModelArguments, data_args: DataArguments, training_args: AIMConfig) -> Parts:
    """The parts of a run on `--setting emoji/spoken`."""

    def load(processor: MultimodalProcessor) -> tuple[DatasetDict, list[str]]:
        data = load_setting(data_args.setting, seed=data_args.dataset_seed, **setting_options(data_args))
        return data, data["train"].features["label"].names

    return pretrained_parts(model_args, data_args, training_args, load)


def pretrained_parts(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: AIMConfig,
    load: Callable[[MultimodalProcessor], tuple[DatasetDict, list[str]]],
) -> Parts:
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
            data[split] = subset(data[split], data_args.max_eval_samples)
    set_seed(training_args.seed)  # the heads are initialised with the encoders
    encoders = {m: load_encoder(name, processor.kinds[m], cache_only[m]) for m, name in model_args.encoders.items()}
    return encoders, processor, data, names


def load_own_splits(
    processor: MultimodalProcessor, data_args: OwnDataArguments, check: bool = False
) -> tuple[DatasetDict, list[str]]:
    """The splits of `--dataset_name` and its class names (`aim_hf.data.loading.load_own_data`),
    audio files read at the rate each feature extractor expects; with `check`, every row read first
    (`aim_hf.data.checks`)."""
    from aim_hf.data.loading import load_own_data

    columns = modality_columns(processor, data_args)
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


def modality_columns(processor: MultimodalProcessor, data_args: OwnDataArguments) -> dict[str, str]:
    """Modality -> its column: as --modality_columns maps it, else the modality's own name."""
    return {m: data_args.modality_columns.get(m, m) for m in processor.modalities}

