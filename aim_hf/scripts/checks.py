"""The checks of an `aim-hf train` job before anything is loaded or trained: the encoders, columns,
frozen layers and `--only_modality` each data source takes, and `--push_to_hub`'s token and Hub. Each
failure is a one-line ValueError."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from aim_hf.data.av_digits import MODALITIES
from aim_hf.data.settings import pretrained_setting
from aim_hf.pretrained import check_name_or_path
from aim_hf.scripts.arguments import DataArguments, ModelArguments
from aim_hf.scripts.sources import setting_options, source_of
from aim_hf.training_args import AIMConfig

# A --dataset_name ending so names a data file.
DATA_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".arrow", ".txt")


def check_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """The model and data options of a run, for the data source they name."""
    {"embedded": _check_embedded_job, "setting": _check_setting_job, "own": _check_own_data_job}[
        source_of(data_args)
    ](model_args, data_args)


def check_push(args: AIMConfig) -> None:
    """`--push_to_hub` needs a token and a Hub that answers: checked with one request before anything
    is loaded or trained (Trainer would otherwise fail on creating the repo, or after training)."""
    if not args.push_to_hub:
        return
    from huggingface_hub import constants, get_token, whoami
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise ValueError("--push_to_hub: cannot reach the Hub, HF_HUB_OFFLINE is set (offline).")
    token = args.hub_token or get_token()
    if not token:
        raise ValueError(
            "--push_to_hub needs a Hub token with write access: none is set (HF_TOKEN, `hf auth login`, or "
            "--hub_token)."
        )
    try:
        whoami(token=token)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        raise ValueError(f"--push_to_hub: the Hub at {constants.ENDPOINT} refuses the token (HTTP {status}).") from err
    except Exception as err:  # connection refused, DNS, timeout, proxy
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        raise ValueError(f"--push_to_hub: cannot reach the Hub at {constants.ENDPOINT} (offline?): {cause}.") from err


def _check_modalities(model_args: ModelArguments, data_args: DataArguments, modalities: Sequence[str]) -> None:
    """Each of `--encoders` a local folder or a Hub id; `--freeze` and `--only_modality` name
    modalities of the model (`modalities`)."""
    for modality in model_args.freeze:
        if modality not in modalities:
            raise ValueError(f"--freeze names {modality!r}; the model's modalities are {list(modalities)}.")
    only = data_args.only_modality
    if only is not None and only not in modalities:
        raise ValueError(f"only_modality must be one of {tuple(modalities)}, got {only!r}.")
    for modality, name in model_args.encoders.items():
        check_name_or_path(f"the {modality!r} encoder", name)


def _check_embedded_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """A run on the embedded data: encoders for its modalities only (the others built from config)."""
    for option in ("modality_columns", "setting_kwargs"):
        if getattr(data_args, option):
            raise ValueError(f"--{option} needs --dataset_name or --setting emoji/spoken, not the embedded data.")
    for modality in model_args.encoders:
        if modality not in MODALITIES:
            raise ValueError(f"--encoders names {modality!r}; the embedded data has the modalities {list(MODALITIES)}.")
    _check_modalities(model_args, data_args, MODALITIES)


def _check_setting_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """A run on a setting for pretrained encoders (`emoji`, `spoken`): an encoder for each of its modalities."""
    setting = pretrained_setting(data_args.setting, **setting_options(data_args))
    if data_args.modality_columns:
        raise ValueError(f"--setting {setting.name!r} has its own columns: no --modality_columns.")
    if sorted(model_args.encoders) != sorted(setting.modalities):
        example = json.dumps({m: f"path/to/{m}_encoder" for m in setting.modalities})
        raise ValueError(f"--setting {setting.name!r} needs --encoders for {list(setting.modalities)}, e.g. '{example}'.")
    _check_modalities(model_args, data_args, setting.modalities)


def _check_own_data_job(model_args: ModelArguments, data_args: DataArguments) -> None:
    """A run on your own data: the file or dataset exists, an encoder for each modality of the columns."""
    name = data_args.dataset_name
    if Path(name).suffix.lower() in DATA_FILE_SUFFIXES and not os.path.exists(name):
        raise ValueError(f"--dataset_name {name!r}: no such file.")  # a data file's name, never a Hub id
    check_name_or_path("--dataset_name", name, local="file or folder")
    encoders = model_args.encoders
    if not encoders:
        raise ValueError(
            "--dataset_name needs --encoders, one per modality, e.g. "
            '\'{"vision": "google/vit-base-patch16-224-in21k", "text": "google-bert/bert-base-uncased"}\'.'
        )
    for modality in data_args.modality_columns:
        if modality not in encoders:
            raise ValueError(
                f"modality {modality!r} of --modality_columns has no encoder in --encoders {list(encoders)}."
            )
    _check_modalities(model_args, data_args, list(encoders))
