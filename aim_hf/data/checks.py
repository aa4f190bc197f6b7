"""Bad data found before the first step: one pass over every row of every split, and the classes.

[`check_rows`] reads each row's value of each modality as training will read it (through
`aim_hf.raw_inputs`, which the collator and the processor use): images open, audio files exist and
decode to a finite, non-empty signal, texts are strings (the empty string included: a tokenizer
encodes it). A missing value (`None`, what `datasets` reads from an empty csv cell) is reported too,
for the label as well. The pass runs in `num_proc` processes with a progress bar (`datasets.map`), and
its error names the split, the row, the column and the file, on one line.

Rows are counted from 0 in the order the split's files hold them, as `dataset[i]` does: in a csv the
header is not a row, so row 5 is the sixth data row (line 7 of the file).

[`check_classes`] refuses a train split with fewer than two classes and warns of a class that
validation or test holds and train does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial

from datasets import Audio, Dataset, DatasetDict, Image
from transformers.utils import logging

from ..raw_inputs import as_audio, as_image, as_text

logger = logging.get_logger(__name__)

# Below this many rows a split is checked in this process: starting workers would cost more.
PARALLEL_FROM_ROWS = 1000
# Bad rows listed after the first one's message.
LISTED_ROWS = 10


def default_num_proc(rows: int) -> int | None:
    """Processes for checking `rows` rows: one per CPU core (at most 8) from [`PARALLEL_FROM_ROWS`]
    rows on, else None (this process)."""
    return min(os.cpu_count() or 1, 8) if rows >= PARALLEL_FROM_ROWS else None


def _undecoded(dataset: Dataset) -> Dataset:
    """`dataset` with its image and audio features left as `{"bytes", "path"}`: the check decodes them
    itself, as the collator does (and `datasets.Audio` would need torchcodec)."""
    for column, feature in dataset.features.items():
        if isinstance(feature, (Image, Audio)):
            dataset = dataset.cast_column(column, type(feature)(decode=False))
    return dataset


def _row_problems(
    batch: dict[str, list],
    indices: list[int],
    split: str,
    columns: Mapping[str, str],
    kinds: Mapping[str, str],
    audio_rates: Mapping[str, int | None],
    label_column: str,
) -> dict[str, list[str | None]]:
    """For each row of `batch`, the message of its first bad value, or None."""
    problems: list[str | None] = []
    for position, index in enumerate(indices):
        problem = None
        if batch[label_column][position] is None:
            problem = (
                f"the {split} split, row {index}, column {label_column!r} (the label): the value is missing "
                "(None: an empty cell of a csv reads as None). Fix or drop this row."
            )
        for modality, column in columns.items():
            if problem is not None:
                break
            value, where = batch[column][position], f"the {split} split, row {index}, column {column!r} ({modality})"
            try:
                if kinds[modality] == "image":
                    as_image(value, where)
                elif kinds[modality] == "audio":
                    as_audio(value, audio_rates.get(column), where)
                else:
                    as_text(value, where)
            except ValueError as err:
                problem = str(err)
        problems.append(problem)
    return {"problem": problems}


def check_rows(
    data: DatasetDict,
    columns: Mapping[str, str],
    kinds: Mapping[str, str],
    label_column: str,
    audio_rates: Mapping[str, int | None] | None = None,
    num_proc: int | None = None,
) -> None:
    """Read every row of every split of `data` as training will and raise one `ValueError` (one line)
    naming the first bad row, its split, column and file, and how many other rows are bad.

    Args:
        data: the splits, their rows in the order of the user's files (before any shuffle or split).
        columns: modality -> its column.
        kinds: modality -> `"image"`, `"audio"` or `"text"` (its processor's kind).
        label_column: the column of labels (a missing label is reported too).
        audio_rates: audio column -> the rate its feature extractor expects (None: the file's own).
        num_proc: processes per split (default: [`default_num_proc`]).
    """
    found: list[str] = []
    for split, dataset in data.items():
        dataset = _undecoded(dataset.select_columns([*dict.fromkeys([*columns.values(), label_column])]))
        checked = dataset.map(
            partial(
                _row_problems, split=split, columns=dict(columns), kinds=dict(kinds),
                audio_rates=dict(audio_rates or {}), label_column=label_column,
            ),
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            num_proc=num_proc if num_proc is not None else default_num_proc(len(dataset)),
            keep_in_memory=True,  # no cache: a file fixed since the last check is read again
            load_from_cache_file=False,
            desc=f"Checking the rows of the {split} split",
        )  # fmt: skip
        found += [problem for problem in checked["problem"] if problem is not None]
    if not found:
        return
    message = found[0]
    if len(found) > 1:
        others = "; ".join(problem.split(":")[0] for problem in found[1:LISTED_ROWS + 1])
        more = f" and {len(found) - 1 - LISTED_ROWS} more" if len(found) - 1 > LISTED_ROWS else ""
        message += f" Other bad rows: {others}{more}."
    raise ValueError(message)


def check_classes(data: DatasetDict, names: list[str], label_column: str) -> None:
    """Refuse a train split with fewer than two classes (nothing to tell apart: every accuracy would
    read 1.0); warn of each validation / test class that train never shows (the model cannot learn it)."""
    # Without the datasets' transforms (audio decoding) and other columns: only the labels are read.
    present = {
        split: set(dataset.with_format(None).select_columns([label_column]).unique(label_column))
        for split, dataset in data.items()
    }

    def named(ids: set[int]) -> list[str]:
        return [names[i] for i in sorted(ids)]

    if len(present["train"]) < 2:
        raise ValueError(
            f"the train split holds {len(present['train'])} class ({named(present['train'])} in column "
            f"{label_column!r}): a classifier needs at least 2. Check --label_column, or the data."
        )
    for split, ids in present.items():
        unseen = ids - present["train"]
        if split != "train" and unseen:
            logger.warning(
                f"the {split} split holds classes the train split never shows: {named(unseen)}. The model cannot "
                "learn them; its accuracy on them will be 0."
            )


__all__ = ["PARALLEL_FROM_ROWS", "check_classes", "check_rows", "default_num_proc"]
