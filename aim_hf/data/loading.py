"""Your own dataset for `aim-hf train --dataset_name ...`: loaded as `datasets` loads it, its labels
turned into class ids, its train / validation / test splits.

`dataset_name` is read as transformers' example scripts read it:

- a folder written by `save_to_disk` (a `DatasetDict`, or a `Dataset`, which is then the train split);
- a csv / json / jsonl / parquet file (the train split);
- anything `datasets.load_dataset(dataset_name, dataset_config_name, data_files=data_files)` takes:
  a Hub id, a folder of data files (`imagefolder`, `audiofolder`, or csv / json / parquet files,
  the splits named by the files: `train.csv`, `validation.csv`, `test.csv`), or a builder name
  (`csv`, `json`, `parquet`, `imagefolder`, `audiofolder`) with `data_files`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import ClassLabel, DatasetDict, load_dataset, load_from_disk

from .audio_files import decode_audio_columns
from .checks import check_rows

SPLITS = ("train", "validation", "test")
_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def file_builder(name: str) -> str | None:
    """The `datasets` builder of the local data file `name` (`csv`, `json`, `parquet`), else None."""
    return _FILE_BUILDERS.get(Path(name).suffix.lower()) if os.path.isfile(name) else None


def load_raw(name: str, config_name: str | None = None, data_files: Any = None) -> DatasetDict:
    """The dataset `name` as a `DatasetDict` of its splits (see the module's docstring)."""
    if data_files is None and any((Path(name) / f).is_file() for f in ("dataset_dict.json", "state.json")):
        data = load_from_disk(name)
        return data if isinstance(data, DatasetDict) else DatasetDict({"train": data})
    if data_files is None and os.path.isfile(name):
        builder = file_builder(name)
        if builder is None:
            raise ValueError(f"--dataset_name {name!r}: a data file must be {', '.join(_FILE_BUILDERS)}.")
        return load_dataset(builder, data_files={"train": name})
    try:
        return load_dataset(name, config_name, data_files=data_files)
    except Exception as err:
        cause = err
        while cause is not None and not (isinstance(cause, ImportError) and "torchcodec" in str(cause)):
            cause = cause.__cause__
        if cause is None:
            raise
        # datasets (>= 4) encodes every Audio value with torchcodec, even a file path.
        raise ImportError(
            f"loading {name!r} needs torchcodec (`pip install torchcodec`), as datasets reads its audio with it; without "
            "it, list the audio files by path in a csv / json / parquet file, which aim_hf reads with soundfile."
        ) from err


def check_columns(data: DatasetDict, columns: Mapping[str, str], label_column: str) -> None:
    """Every split has the label column and each modality's column."""
    for split, dataset in data.items():
        found = dataset.column_names
        if label_column not in found:
            raise ValueError(f"--label_column {label_column!r} not found in the {split} split; its columns: {found}.")
        for modality, column in columns.items():
            if column not in found:
                raise ValueError(
                    f"column {column!r} (modality {modality!r}) not found in the {split} split; its columns: {found}. "
                    "Map each modality to its column with --modality_columns."
                )


def encode_labels(data: DatasetDict, column: str) -> tuple[DatasetDict, list[str]]:
    """The dataset with class ids in `column`, and the class names by id: a `ClassLabel`'s names;
    for strings, the sorted names over all splits; for integers, `"0"` ... up to the largest."""
    feature = data["train"].features[column]
    if isinstance(feature, ClassLabel):
        return data, list(feature.names)
    dtype = getattr(feature, "dtype", None)
    values = {value for dataset in data.values() for value in dataset.unique(column)}
    if dtype in ("string", "large_string"):
        names = sorted(values)
        return data.cast_column(column, ClassLabel(names=names)), names
    if dtype is not None and dtype.startswith(("int", "uint")) and min(values) >= 0:
        return data, [str(i) for i in range(max(values) + 1)]
    raise ValueError(
        f"--label_column {column!r} holds {feature}: give class names (strings), class ids (integers from 0) "
        "or a ClassLabel."
    )


def with_validation(data: DatasetDict, percentage: float, seed: int) -> DatasetDict:
    """The train, validation and (where present) test splits; without a validation split,
    `percentage` % of train, drawn with `seed`, is held out as one."""
    if "train" not in data:
        raise ValueError(f"the dataset has no 'train' split; its splits: {list(data)}.")
    splits = {split: data[split] for split in SPLITS if split in data}
    if "validation" not in splits:
        if not 0 < percentage < 100:
            raise ValueError(f"--validation_split_percentage must lie in (0, 100), got {percentage}.")
        held_out = data["train"].train_test_split(test_size=percentage / 100, seed=seed)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
    return DatasetDict(splits)


def load_own_data(
    name: str,
    columns: Mapping[str, str],
    label_column: str = "label",
    config_name: str | None = None,
    data_files: Any = None,
    validation_split_percentage: float = 10,
    seed: int = 0,
    audio_rates: Mapping[str, int | None] | None = None,
    check_kinds: Mapping[str, str] | None = None,
    check_num_proc: int | None = None,
) -> tuple[DatasetDict, list[str]]:
    """Load `name`, check its columns, encode its labels and make its splits (see [`load_raw`],
    [`encode_labels`], [`with_validation`]); returns the splits and the class names by id.

    Args:
        name, config_name, data_files: what to load, as `datasets.load_dataset` takes them.
        columns: modality -> the column holding its raw input.
        label_column: the column of labels.
        validation_split_percentage: the share of train held out where there is no validation split.
        seed: the seed of that split.
        audio_rates: audio column -> the sampling rate its feature extractor expects (None: the
            file's own); those columns, where they hold files, are read with soundfile on access.
        check_kinds: modality -> its processor's kind (`"image"`, `"audio"`, `"text"`): every row of
            every split is read first, in the files' order, and the first bad one raises a
            `ValueError` ([`aim_hf.data.checks.check_rows`]). None: no check.
        check_num_proc: the check's processes (default: one per core for large splits).
    """
    data = load_raw(name, config_name, data_files)
    check_columns(data, columns, label_column)
    # Only the columns used: an unused image or audio column would still be decoded on every access.
    data = data.select_columns([*dict.fromkeys([*columns.values(), label_column])])
    if check_kinds is not None:  # before any split or shuffle: rows keep their place in the files
        check_rows(data, columns, check_kinds, label_column, audio_rates, check_num_proc)
    data, names = encode_labels(data, label_column)
    data = with_validation(data, validation_split_percentage, seed)
    for split, dataset in data.items():
        dataset.info.dataset_name = name  # the model card names the data as given
        data[split] = decode_audio_columns(dataset, audio_rates or {})
    return data, names


__all__ = ["SPLITS", "check_columns", "encode_labels", "file_builder", "load_own_data", "load_raw", "with_validation"]
