"""Shared fixtures: tiny encoders saved once per session, processors, datasets, models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Tiny models: one thread each is faster than contending threads, in this process and the
# subprocesses the tests launch (which inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from aim_hf import AIMConfig, MultimodalModel, MultimodalProcessor
sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # tiny, dist_train, ...: tests/helpers/

from tiny import NUM_LABELS, make_processors, make_rows, save_tiny_checkpoints, save_tiny_encoders, tiny_args

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def encoder_paths(tmp_path_factory) -> dict[str, str]:
    return save_tiny_encoders(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="session")
def processors(encoder_paths) -> dict[str, object]:
    return make_processors(encoder_paths)


@pytest.fixture
def build_model(encoder_paths):
    """build_model(modalities=("vision", "audio", "text"), fusion="concat", seed=0, **config)."""

    def build(modalities=("vision", "audio", "text"), fusion="concat", seed=0, **kwargs) -> MultimodalModel:
        torch.manual_seed(seed)
        return MultimodalModel.from_encoders(
            {m: encoder_paths[m] for m in modalities}, num_labels=NUM_LABELS, fusion=fusion, **kwargs
        )

    return build


@pytest.fixture
def build_processor(processors):
    def build(modalities=("vision", "audio", "text")) -> MultimodalProcessor:
        return MultimodalProcessor({m: processors[m] for m in modalities})

    return build


@pytest.fixture
def build_dataset():
    """build_dataset(n=24, modalities=..., informative=None, seed=0) -> datasets.Dataset."""

    def build(n=24, modalities=("vision", "audio", "text"), informative=None, seed=0) -> Dataset:
        return Dataset.from_list(make_rows(n, modalities, informative, seed))

    return build


@pytest.fixture
def make_args(tmp_path):
    """make_args(**overrides) -> AIMConfig on CPU, deterministic, quiet, no reporting."""

    def make(**overrides) -> AIMConfig:
        return tiny_args(overrides.pop("output_dir", tmp_path / "out"), **overrides)

    return make


@pytest.fixture(scope="session")
def cli_data(tmp_path_factory) -> list[str]:
    """`aim-hf train` options of a tiny image + text dataset saved to disk (24 train and 8 validation
    rows): `--dataset_name` and `--encoders`, tiny encoders saved with their processors."""
    root = tmp_path_factory.mktemp("cli_data")
    checkpoints = save_tiny_checkpoints(root / "encoders")
    modalities = ("vision", "text")
    splits = {"train": make_rows(24, modalities), "validation": make_rows(8, modalities, seed=1)}
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(root / "rows")
    encoders = {m: checkpoints[m] for m in modalities}
    return ["--dataset_name", str(root / "rows"), "--encoders", json.dumps(encoders)]
