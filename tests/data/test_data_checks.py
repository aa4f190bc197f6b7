"""Bad data found before the first step (`aim_hf.data.checks`): every row of every split read as
training reads it, the error naming the split, the row in the user's file, the column and the file,
in the CLI's one-line format; the class checks; the flag that skips the pass."""

from __future__ import annotations

import importlib
import json
import logging

import datasets
import numpy as np
import pytest
import soundfile as sf
from datasets import Dataset, DatasetDict
from tiny import SAMPLING_RATE, save_tiny_checkpoints, write_csv_of_paths

from aim_hf.cli import main
from aim_hf.scripts.train import build_trainer, parse_train_args
from aim_hf.data.checks import check_classes, check_rows

FAST = [
    "--max_steps", "1", "--per_device_train_batch_size", "4", "--num_depth_groups", "2", "--eval_strategy", "no",
    "--use_cpu", "true", "--disable_tqdm", "true",
]  # fmt: skip
COLUMNS = {"vision": "image", "audio": "sound", "text": "caption"}
KINDS = {"vision": "image", "audio": "audio", "text": "text"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def _train_argv(checkpoints, tmp_path, *options: str) -> list[str]:
    encoders = json.dumps({m: checkpoints[m] for m in COLUMNS})
    return [
        "--dataset_name", "train.csv", "--modality_columns", json.dumps(COLUMNS), "--encoders", encoders,
        "--output_dir", str(tmp_path / "out"), *FAST, *options,
    ]  # fmt: skip


def _replace_cell(csv_path, row: int, column: str, value: str) -> None:
    """Set data row `row` (0-based, the header not counted) of `column` to `value`."""
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1 + row].split(",")
    cells[header.index(column)] = value
    lines[1 + row] = ",".join(cells)
    csv_path.write_text("\n".join(lines) + "\n")


def _corrupt_image(root):
    (root / "images" / "5.png").write_bytes(b"\x89PNG not really")


def _nan_audio(root):
    sf.write(root / "sounds" / "5.wav", np.full(4000, np.nan, dtype=np.float32), SAMPLING_RATE, subtype="FLOAT")


def _empty_audio(root):
    sf.write(root / "sounds" / "5.wav", np.zeros(0, dtype=np.float32), SAMPLING_RATE, subtype="FLOAT")


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_corrupt_image, "the train split, row 5, column 'image' (vision): cannot read the image file 'images/5.png' "
                         "(cannot identify image file"),
        (lambda root: (root / "images" / "5.png").unlink(),
         "the train split, row 5, column 'image' (vision): cannot read the image file 'images/5.png' (no such file; "
         "relative paths resolve against the working directory"),
        (lambda root: (root / "sounds" / "5.wav").unlink(),
         "the train split, row 5, column 'sound' (audio): cannot read the audio file 'sounds/5.wav' (no such file; "
         "relative paths resolve against the working directory"),
        (_nan_audio, "the train split, row 5, column 'sound' (audio): the audio is empty or holds NaN/inf values."),
        (_empty_audio, "the train split, row 5, column 'sound' (audio): the audio is empty or holds NaN/inf values."),
        (lambda root: _replace_cell(root / "train.csv", 5, "caption", ""),
         "the train split, row 5, column 'caption' (text): the value is missing (None: an empty cell of a csv reads "
         "as None)."),
        (lambda root: _replace_cell(root / "train.csv", 5, "label", ""),
         "the train split, row 5, column 'label' (the label): the value is missing"),
    ],
)  # fmt: skip
def test_a_bad_row_is_named_before_training(spoil, message, checkpoints, tmp_path, monkeypatch, capsys):
    """The sixth data row of train.csv is spoiled: the error names it as row 5 of the file, although
    the train split is shuffled (a validation split is held out of it), and nothing trains."""
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    write_csv_of_paths(tmp_path)
    spoil(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", *_train_argv(checkpoints, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aim-hf train: error: {message}"), err
    assert "Traceback" not in err and len(err.splitlines()) == 2  # the message and the hint about --debug
    assert not (tmp_path / "out").exists()  # found before the first step


def test_every_bad_row_is_counted_and_the_flag_skips_the_pass(checkpoints, tmp_path, monkeypatch):
    write_csv_of_paths(tmp_path)
    for i in (2, 5, 9):
        (tmp_path / "sounds" / f"{i}.wav").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as raised:
        build_trainer(*parse_train_args(_train_argv(checkpoints, tmp_path)))
    message = str(raised.value)
    assert message.startswith("the train split, row 2, column 'sound' (audio): cannot read the audio file")
    assert message.endswith(
        "Other bad rows: the train split, row 5, column 'sound' (audio); "
        "the train split, row 9, column 'sound' (audio)."
    )
    # --skip_data_check: the trainer is built; the bad rows would only be met by the collator.
    trainer, validation, _ = build_trainer(*parse_train_args(_train_argv(checkpoints, tmp_path, "--skip_data_check")))
    assert len(trainer.train_dataset) + len(validation) == 12


def test_relative_paths_resolve_against_the_working_directory(checkpoints, tmp_path, monkeypatch):
    """As the README says: a csv's relative paths are read from where the command runs, not from the
    csv's folder."""
    write_csv_of_paths(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    argv = _train_argv(checkpoints, tmp_path)
    argv[1] = "data/train.csv"
    with pytest.raises(ValueError, match=f"'images/0.png' \\(no such file; relative paths resolve against the "
                                         f"working directory {str(tmp_path)!r}\\)"):  # fmt: skip
        build_trainer(*parse_train_args(argv))
    monkeypatch.chdir(tmp_path / "data")
    argv[1] = "train.csv"
    trainer, _, _ = build_trainer(*parse_train_args(argv))
    assert trainer.data_collator([trainer.train_dataset[0]])["vision"]["pixel_values"].shape[0] == 1


def _text_split(texts, labels=None) -> Dataset:
    return Dataset.from_dict({"caption": texts, "label": labels or [i % 2 for i in range(len(texts))]})


def test_empty_text_is_valid_and_none_is_missing():
    texts = ["w1 w2", "", "   ", "w3"]
    check_rows(DatasetDict({"train": _text_split(texts)}), {"text": "caption"}, {"text": "text"}, "label")
    data = DatasetDict({"train": _text_split(texts), "test": _text_split(["w1", "w2", None, "w3"])})
    with pytest.raises(ValueError, match=r"^the test split, row 2, column 'caption' \(text\): the value is missing"):
        check_rows(data, {"text": "caption"}, {"text": "text"}, "label")


def test_parallel_pass_names_the_row_of_the_file_and_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    """Two processes, each on its shard: the bad row's index is still its place in the split."""
    write_csv_of_paths(tmp_path, n=20)
    (tmp_path / "images" / "13.png").unlink()
    monkeypatch.chdir(tmp_path)
    data = datasets.load_dataset("csv", data_files={"train": "train.csv"})
    # conftest.py turns datasets' bars off through the environment, which enable_progress_bars() cannot override.
    monkeypatch.setattr(importlib.import_module("datasets.utils.tqdm"), "_hf_datasets_progress_bars_disabled", False)
    with pytest.raises(ValueError, match=r"^the train split, row 13, column 'image' \(vision\)"):
        check_rows(data, COLUMNS, KINDS, "label", {"sound": SAMPLING_RATE}, num_proc=2)
    assert "Checking the rows of the train split (num_proc=2)" in capsys.readouterr().err


def test_one_class_is_refused_in_one_line(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    write_csv_of_paths(tmp_path, labels=("cat", "cat", "cat"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", *_train_argv(checkpoints, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "aim-hf train: error: the train split holds 1 class (['cat'] in column 'label'): a classifier needs at least 2."
    )
    assert len(err.splitlines()) == 2 and not (tmp_path / "out").exists()


def test_a_class_unseen_in_train_is_warned_of(caplog):
    data = DatasetDict(
        {"train": _text_split(["w1"] * 4, [0, 1, 0, 1]), "validation": _text_split(["w1"] * 2, [1, 2]),
         "test": _text_split(["w1"] * 2, [0, 1])}
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="aim_hf.data.checks"):
        check_classes(data, ["bird", "cat", "dog"], "label")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert warned[0].startswith("the validation split holds classes the train split never shows: ['dog']")
