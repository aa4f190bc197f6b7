"""The `aim-hf` command on a tiny budget: options, config files, the saved model and the result table."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from launchers import LAUNCHERS
from tiny import IMAGE_SIZE, TINY_OPTIONS
from transformers import AutoModel, ViTImageProcessorPil

from aim_hf import MultimodalModel, MultimodalProcessor
from aim_hf.cli import main
from aim_hf.scripts.train import parse_train_args
from aim_hf.data import SpectrogramFeatureExtractor



def test_train_writes_the_model_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--output_dir", str(out), *TINY_OPTIONS]) == 0
    table = capsys.readouterr().out
    assert "modulation='aim'" in table
    assert re.search(r"\| split \| fused \| vision probe \| audio probe \|", table)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| validation") or line.startswith("| test")}
    metrics = json.loads((out / "all_results.json").read_text())
    for split, prefix in (("validation", "eval"), ("test", "test")):
        numbers = [float(x) for x in re.findall(r"\d\.\d{4}", rows[split])]
        assert numbers == pytest.approx(
            [metrics[f"{prefix}_accuracy"], metrics[f"{prefix}_vision_probe_accuracy"], metrics[f"{prefix}_audio_probe_accuracy"]],
            abs=1e-4,
        )
    assert {"config.json", "model.safetensors", "multimodal_processor.json"} <= set(os.listdir(out))
    model = MultimodalModel.from_pretrained(out)
    assert model.config.id2label[3] == "three" and model.config.modalities == ["vision", "audio"]
    processor = MultimodalProcessor.from_pretrained(out)
    assert isinstance(processor["audio"], SpectrogramFeatureExtractor)
    batch = processor["audio"]([torch.zeros(5, 32).numpy()], return_tensors="pt")
    assert batch["input_values"].shape == (1, model.config.encoder_configs["audio"].max_length, 32)


def test_config_files_set_options_and_the_command_line_overrides_them(tmp_path):
    (tmp_path / "run.yaml").write_text("modulation: ogm_ge\nfusion: sum\nimage_noise: 0.25\nlearning_rate: 0.01\n")
    model_args, data_args, args = parse_train_args([str(tmp_path / "run.yaml"), "--learning_rate", "0.002"])
    assert (args.modulation, model_args.fusion, data_args.image_noise, args.learning_rate) == ("ogm_ge", "sum", 0.25, 0.002)
    assert args.output_dir == "aim_hf_output" and args.eval_strategy == "epoch"

    (tmp_path / "run.json").write_text(json.dumps({"only_modality": "audio", "num_train_epochs": 2}))
    _, data_args, args = parse_train_args([str(tmp_path / "run.json")])
    assert data_args.only_modality == "audio" and args.num_train_epochs == 2 and args.modulation == "aim"

    (tmp_path / "bad.yaml").write_text("modulaton: aim\n")
    with pytest.raises(ValueError, match="modulaton"):
        parse_train_args([str(tmp_path / "bad.yaml")])
    with pytest.raises(ValueError, match="only_modality"):
        parse_train_args(["--only_modality", "text"])


def test_module_entry_point_help_and_usage():
    help_text = subprocess.run(
        [sys.executable, "-m", "aim_hf", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--modulation", "--modulation_kwargs", "--encoders", "--freeze", "--image_noise"):
        assert option in help_text
    assert main([]) == 2 and main(["fit"]) == 2


def test_pretrained_encoders_from_local_folders(encoder_paths, tmp_path):
    """`--encoders` on the embedded data loads those weights and the vision folder's image processor,
    and the spectrograms take the audio encoder's mel bins (16 here; the default encoder has 32)."""
    vision = tmp_path / "vision"
    shutil.copytree(encoder_paths["vision"], vision)
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(vision)
    out = tmp_path / "out"
    argv = ["train", "--encoders", json.dumps({"vision": str(vision), "audio": encoder_paths["audio"]})]
    # Learning rate 0: the saved encoders must be exactly the pretrained ones.
    assert main([*argv, "--output_dir", str(out), "--learning_rate", "0", *TINY_OPTIONS]) == 0
    model = MultimodalModel.from_pretrained(out)
    for modality, path in (("vision", vision), ("audio", encoder_paths["audio"])):
        saved, pretrained = model.encoders[modality].state_dict(), AutoModel.from_pretrained(path).state_dict()
        assert saved.keys() == pretrained.keys()
        assert all(torch.equal(saved[k], pretrained[k]) for k in saved), modality
    processor = MultimodalProcessor.from_pretrained(out)
    assert processor["vision"].size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert processor["audio"].num_mel_bins == model.config.encoder_configs["audio"].num_mel_bins == 16


def test_runs_unchanged_under_accelerate_launch(tmp_path):
    """`accelerate launch -m aim_hf train` on two processes: one table, one saved model."""
    out = tmp_path / "out"
    options = [*TINY_OPTIONS, "--max_train_samples", "64", "--max_steps", "4", "--output_dir", str(out)]
    command = [sys.executable, *LAUNCHERS["accelerate"](), "-m", "aim_hf", "train", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stdout.count("| split | fused | vision probe | audio probe |") == 1
    # 4 steps of 2 x 16 rows over 64 training rows: 2 epochs (one process would have done 1).
    assert json.loads((out / "all_results.json").read_text())["epoch"] == 2.0
    assert MultimodalModel.from_pretrained(out).config.modalities == ["vision", "audio"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--learning_rat", "0.001"], "unknown options ['--learning_rat', '0.001'] (options are not abbreviated)"),
        (["--no_such_option", "1"], "unknown options ['--no_such_option', '1']"),
        (["--encoders", '{"vision": "/no/such/encoder"}'], "the 'vision' encoder '/no/such/encoder' not found: no such folder and not a Hub id."),
        (["--encoders", '{"audio": "../missing"}'], "the 'audio' encoder '../missing' not found: no such folder and not a Hub id."),
        (["--encoders", '{"text": "a"}'], "--encoders names 'text'; the embedded data has the modalities ['vision', 'audio']."),
        (["--freeze", '{"text": 1}'], "--freeze names 'text'; the model's modalities are ['vision', 'audio']."),
        (["--freeze", '{"vision": "all"}'], "--freeze 'vision': a number of layers (-1: the whole encoder), got 'all'."),
    ],
)  # fmt: skip
def test_command_line_errors_are_one_message(options, message, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    assert main(["train", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aim-hf train: error: {message}") and "Traceback" not in err
    assert len(err.splitlines()) == 2  # the message and the hint about --debug


def test_debug_keeps_the_traceback(monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    with pytest.raises(ValueError, match="learning_rat"):
        main(["train", "--learning_rat", "0.001", "--debug"])
    monkeypatch.setenv("AIM_HF_DEBUG", "1")
    with pytest.raises(ValueError, match="not found: no such folder"):
        main(["train", "--encoders", '{"vision": "/no/such/encoder"}'])


def test_help_lists_commands_and_groups_the_options(capsys):
    assert main(["--help"]) == 0
    assert re.search(r"^commands:\n  train ", capsys.readouterr().out, re.M)
    from aim_hf.scripts.train import build_parser

    help_text = build_parser().format_help()
    headings = [line for line in help_text.splitlines() if re.fullmatch(r"[a-z]+:", line)]
    assert headings == ["options:", "model:", "data:", "modulation:", "training:"]
    sections = dict(zip(headings, re.split(r"^[a-z]+:$", help_text, flags=re.M)[1:]))
    assert "--encoders" in sections["model:"] and "--freeze " in sections["model:"] and "--image_noise" in sections["data:"]
    assert "--aim_alpha" in sections["modulation:"] and "--modulation_kwargs" in sections["modulation:"]
    assert "--modulation " in sections["modulation:"] and "--learning_rate" not in sections["modulation:"]
    assert "--learning_rate" in sections["training:"] and "--aim_alpha" not in sections["training:"]
    # Every option is shown once (a bool's --no_x beside it).
    assert help_text.count("--aim_alpha ") == 1 and "--no_log_on_each_node" in sections["training:"]


def test_deprecated_per_modality_options_move_into_the_mappings(encoder_paths):
    """`--freeze_<m>` and `--<m>_encoder` still work for one release, warned of, as `--freeze` and
    `--encoders` entries; giving a modality both ways is refused."""
    with pytest.warns(FutureWarning) as caught:
        model_args, _, _ = parse_train_args(["--freeze_vision", "2", "--audio_encoder", encoder_paths["audio"]])
    assert model_args.freeze == {"vision": 2} and model_args.encoders == {"audio": encoder_paths["audio"]}
    assert sorted(str(w.message).split(" is deprecated")[0] for w in caught) == ["--audio_encoder", "--freeze_vision"]
    assert "use --freeze '{\"vision\": 2}'" in str(next(w.message for w in caught if "freeze" in str(w.message)))
    with pytest.raises(ValueError, match=r"--freeze_audio and --freeze both give 'audio': keep --freeze"):
        parse_train_args(["--freeze_audio", "1", "--freeze", '{"audio": 2}'])
