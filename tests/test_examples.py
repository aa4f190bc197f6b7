"""The example scripts, run as users run them (a subprocess, offline) on tiny datasets in each
example's own layout, with tiny local encoders whose processors are saved next to them."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aim_hf import MultimodalModel, MultimodalProcessor
from hub_server import HubServer
from tiny import SAMPLING_RATE, make_processors, make_rows, save_tiny_encoders

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))

import common  # noqa: E402


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, str]:
    """Tiny encoders, each folder holding its processor too (as a Hub checkpoint does)."""
    paths = save_tiny_encoders(tmp_path_factory.mktemp("example_encoders"))
    processors = make_processors(paths)
    for modality in ("vision", "audio", "text"):
        processors[modality].save_pretrained(paths[modality])
    return paths


def write_av_dataset(
    root: Path, audio_dir: str, frames_dir: str, splits: dict[str, list[str]], labels: list[str], rate: int
) -> None:
    """An audio-visual dataset in the examples' layout: `<audio_dir>/<clip>.wav`,
    `<frames_dir>/<clip>/*.jpg` (3 frames) and one "<clip>,<label>" CSV per split. Clip i of a
    split shows and sounds like tiny.make_rows' class i % 3 and is labelled `labels[i % 3]`."""
    (root / audio_dir).mkdir(parents=True)
    for seed, (split, names) in enumerate(splits.items()):
        rows = make_rows(len(names), ("vision", "audio"), seed=seed)
        with open(root / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows((name, labels[row["label"]]) for name, row in zip(names, rows))
        for name, row in zip(names, rows):
            sf.write(root / audio_dir / f"{name}.wav", row["audio"]["array"], rate)
            (root / frames_dir / name).mkdir(parents=True)
            for k in range(3):
                row["vision"].rotate(k).save(root / frames_dir / name / f"{k:05d}.jpg")


def run_example(
    args: list[str], launcher: list[str] | None = None, env: dict[str, str] | None = None, timeout: int = 240
) -> None:
    """Run an example script the way a user does; offline unless `env` says otherwise."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "warning",
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    command = (launcher or [sys.executable]) + args
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def common_options(output_dir: Path, **overrides: str) -> list[str]:
    options = {
        "output_dir": str(output_dir),
        "max_steps": "2",
        "per_device_train_batch_size": "4",
        "per_device_eval_batch_size": "4",
        "learning_rate": "1e-3",
        "logging_steps": "1",
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": "0",
        "num_depth_groups": "2",
        **overrides,
    }
    return ["--do_train", "--do_eval", "--use_cpu", "--disable_tqdm", "true"] + [
        arg for key, value in options.items() for arg in (f"--{key}", value)
    ]


def check_saved_run(output_dir: Path, class_names: list[str], modalities: tuple[str, ...]) -> dict:
    """The run saved a loadable model with these classes, its processors, and train + eval metrics."""
    results = json.loads((output_dir / "all_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and np.isfinite(results["train_loss"])
    for modality in modalities:
        assert 0.0 <= results[f"eval_{modality}_probe_accuracy"] <= 1.0
    model = MultimodalModel.from_pretrained(output_dir)
    assert model.modalities == list(modalities)
    assert [model.config.id2label[i] for i in range(len(class_names))] == class_names
    assert MultimodalProcessor.from_pretrained(output_dir).modalities == list(modalities)
    return results


def test_cremad_example_trains_and_pushes(encoders, tmp_path):
    splits = {"train": [f"10{i:02d}_DFA_XX" for i in range(8)], "test": [f"10{i:02d}_IEO_LO" for i in range(4)]}
    write_av_dataset(tmp_path / "CREMA-D", "AudioWAV", "Image-01-FPS", splits, ["NEU", "HAP", "SAD"], SAMPLING_RATE)
    # A listed clip with no files is skipped, as in the OGM-GE loader.
    with open(tmp_path / "CREMA-D" / "train.csv", "a") as f:
        f.write("1099_DFA_ANG_XX,ANG\n")
    output_dir = tmp_path / "out"
    with HubServer() as hub:
        run_example(
            ["examples/cremad/train.py", "--data_dir", str(tmp_path / "CREMA-D")]
            + ["--vision_model", encoders["vision"], "--audio_model", encoders["audio"]]
            + ["--push_to_hub", "--hub_model_id", f"{hub.user}/cremad-tiny"]
            + common_options(output_dir),  # the default modulation: AIM
            env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token},
        )
        pushed = hub.repos[f"{hub.user}/cremad-tiny"].files
    results = check_saved_run(
        output_dir, ["neutral", "happy", "sad", "fear", "disgust", "anger"], ("vision", "audio")
    )
    assert results["train_samples"] == 8 and results["eval_samples"] == 4
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert any(key.startswith("aim/") for log in state["log_history"] for key in log)
    assert "CREMA-D" in (output_dir / "README.md").read_text()  # the model card names the dataset
    # The Hub repo holds the final model, its processors and its card, as saved locally.
    for name in ("config.json", "model.safetensors", "README.md", "vision/preprocessor_config.json"):
        assert pushed[name] == (output_dir / name).read_bytes(), name
    assert "audio/preprocessor_config.json" in pushed


def test_kinetics_sounds_example_two_processes(encoders, tmp_path):
    names = ["playing drums", "playing piano", "singing"]  # sorted, so class i is names[i]
    splits = {"train": [f"yt{i:03d}_{i}" for i in range(16)], "test": [f"yt{i:03d}_{i}" for i in range(16, 22)]}
    # 8 kHz wavs: the script resamples them to the feature extractor's 16 kHz.
    write_av_dataset(tmp_path / "ks", "audio", "frames", splits, names, rate=8000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", port]
    output_dir = tmp_path / "out"
    run_example(
        ["examples/kinetics_sounds/train.py", "--data_dir", str(tmp_path / "ks")]
        + ["--vision_model", encoders["vision"], "--audio_model", encoders["audio"]]
        + common_options(output_dir, modulation="none"),
        launcher=launcher,
    )
    check_saved_run(output_dir, names, ("vision", "audio"))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    # 16 clips in batches of 4 per process: one epoch is 2 steps with 2 processes (4 with one).
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(1.0)


def test_image_text_example_local_dataset(encoders, tmp_path):
    from datasets import DatasetDict, Features, Image, Value

    names = ["bird", "cat", "dog"]
    features = Features({"picture": Image(), "caption": Value("string"), "category": Value("string")})

    def split(n: int, seed: int):
        rows = make_rows(n, ("vision", "text"), seed=seed)
        return {
            "picture": [r["vision"] for r in rows],
            "caption": [r["text"] for r in rows],
            "category": [names[r["label"]] for r in rows],
        }

    from datasets import Dataset

    DatasetDict(
        {"train": Dataset.from_dict(split(12, 0), features), "validation": Dataset.from_dict(split(6, 1), features)}
    ).save_to_disk(tmp_path / "data")
    output_dir = tmp_path / "out"
    run_example(
        ["examples/image_text/train.py", "--dataset_name", str(tmp_path / "data"), "--eval_split", "validation"]
        + ["--image_column", "picture", "--text_column", "caption", "--label_column", "category"]
        + ["--vision_model", encoders["vision"], "--text_model", encoders["text"], "--max_text_length", "16"]
        + common_options(output_dir, modulation="ogm_ge", fusion="gated")
    )
    results = check_saved_run(output_dir, names, ("vision", "text"))
    assert results["train_samples"] == 12 and results["eval_samples"] == 6
    assert MultimodalModel.from_pretrained(output_dir).config.fusion == "gated"


def test_load_wav_resamples_to_mono_at_the_target_rate(tmp_path):
    rate, seconds, tone = 8000, 0.5, 440.0
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * tone * t), 0.5 * np.sin(2 * np.pi * tone * t)], axis=1)
    sf.write(tmp_path / "a.wav", stereo.astype(np.float32), rate)
    audio = common.load_wav(str(tmp_path / "a.wav"), 16000)
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 16000)[spectrum.argmax()] == pytest.approx(tone, abs=2.0)
    assert np.abs(audio).max() == pytest.approx(0.75, abs=0.01)  # mean of the two channels
    same = common.load_wav(str(tmp_path / "a.wav"), rate)
    np.testing.assert_allclose(same, stereo.mean(axis=1), atol=1e-4)


def test_clip_lists_and_labels(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("clip,duration,label\n-3Mwkq-7TV4_2,10,2\nabc_1,10,0\n")
    clips = common.read_clip_list(str(path))
    assert clips == [("-3Mwkq-7TV4_2", "2"), ("abc_1", "0")]
    assert common.label_space([label for _, label in clips]) == ["0", "1", "2"]
    assert common.label_space(["singing", "drums", "singing"]) == ["drums", "singing"]
    assert common.label_index("HAP", ["NEU", "HAP"]) == 1
    with pytest.raises(ValueError, match="not one of"):
        common.label_index("XYZ", ["NEU", "HAP"])
    assert common.parse_freeze("vision=6, audio=-1") == {"vision": 6, "audio": -1}


def test_load_encoder_keeps_the_tower_of_a_dual_encoder(tmp_path):
    import torch
    from transformers import CLIPConfig, CLIPModel

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = CLIPConfig(
        text_config={**small, "vocab_size": 40},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(tmp_path)
    clip = CLIPModel.from_pretrained(tmp_path).eval()
    vision = common.load_encoder(str(tmp_path), "vision").eval()
    assert vision.config.model_type == "clip_vision_model"
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the pretrained tower's weights, not a fresh initialisation
        torch.testing.assert_close(
            vision(pixel_values=pixels).last_hidden_state, clip.vision_model(pixel_values=pixels).last_hidden_state
        )


@pytest.mark.parametrize("script", ["cremad", "kinetics_sounds", "image_text"])
def test_scripts_take_every_aim_and_trainer_option(script):
    import runpy

    module = runpy.run_path(str(EXAMPLES / script / "train.py"), run_name="example")
    if script == "image_text":
        types = (module["ImageTextDataArguments"], module["ImageTextEncoders"], common.ModelArguments)
    else:
        data = module.get("CremaDArguments", common.AudioVisualDataArguments)
        types = (data, common.AudioVisualEncoders, common.ModelArguments)
    text = common.make_parser(*types).format_help()  # fails on a help string argparse cannot format
    for option in ("--push_to_hub", "--hub_model_id", "--modulation", "--aim_alpha", "--modulation_kwargs", "--fusion"):
        assert option in text


@pytest.mark.parametrize(
    "name, distributed, precision",
    [("single_gpu", "NO", "no"), ("multi_gpu", "MULTI_GPU", "no"), ("bf16", "NO", "bf16")],
)
def test_accelerate_configs_load(name, distributed, precision):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / "accelerate_configs" / f"{name}.yaml"))
    assert config.distributed_type.value == distributed and config.mixed_precision == precision
    assert config.use_cpu is False and config.num_machines == 1
