"""The example recipes (`aim-hf train examples/<name>/recipe.yaml`), run as users run them on tiny
datasets in each example's own layout, with tiny local encoders whose processors are saved next to
them; and the script that prepares audio-visual clips for them. Offline."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from hub_server import HubServer
from tiny import SAMPLING_RATE, make_rows, save_tiny_checkpoints

from aim_hf import MultimodalModel, MultimodalProcessor
from aim_hf.cli import main
from aim_hf.scripts.train import parse_train_args

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RECIPES = {name: str(EXAMPLES / name / "recipe.yaml") for name in ("cremad", "kinetics_sounds", "image_text")}
sys.path.insert(0, str(EXAMPLES))

import av_clips  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("example_encoders"))


def write_av_dataset(
    root: Path, audio_dir: str, frames_dir: str, splits: dict[str, list[str]], labels: list[str], rate: int
) -> None:
    """An audio-visual dataset in the OGM-GE layout: `<audio_dir>/<clip>.wav`,
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


def run_command(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command the way a user does; offline unless `env` says otherwise."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning", "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def tiny_options(output_dir: Path, encoders: dict[str, str], **overrides: str) -> list[str]:
    """What a test changes in a recipe: tiny encoders, a few steps on the CPU."""
    options = {
        "encoders": json.dumps(encoders),
        "output_dir": str(output_dir),
        "max_steps": "2",
        "per_device_train_batch_size": "4",
        "per_device_eval_batch_size": "4",
        "learning_rate": "1e-3",
        "logging_steps": "1",
        "eval_strategy": "no",
        "save_strategy": "no",
        "num_depth_groups": "2",
        "use_cpu": "true",
        "disable_tqdm": "true",
        **overrides,
    }
    return [arg for key, value in options.items() for arg in (f"--{key}", value)]


def check_saved_run(output_dir: Path, class_names: list[str], modalities: tuple[str, ...]) -> dict:
    """The run saved a loadable model with these classes, its processors, and its metrics."""
    results = json.loads((output_dir / "all_results.json").read_text())
    for prefix in ("eval", "test"):
        assert 0.0 <= results[f"{prefix}_accuracy"] <= 1.0
        for modality in modalities:
            assert 0.0 <= results[f"{prefix}_{modality}_probe_accuracy"] <= 1.0
    model = MultimodalModel.from_pretrained(output_dir)
    assert model.modalities == list(modalities)
    assert [model.config.id2label[i] for i in range(len(class_names))] == class_names
    assert MultimodalProcessor.from_pretrained(output_dir).modalities == list(modalities)
    return results


def test_cremad_recipe_prepares_trains_and_pushes(checkpoints, tmp_path):
    root = tmp_path / "CREMA-D"
    splits = {"train": [f"10{i:02d}_DFA_XX" for i in range(10)], "test": [f"10{i:02d}_IEO_LO" for i in range(4)]}
    write_av_dataset(root, "AudioWAV", "Image-01-FPS", splits, ["NEU", "HAP", "SAD"], SAMPLING_RATE)
    with open(root / "train.csv", "a") as f:
        f.write("1099_DFA_ANG_XX,ANG\n")  # listed, with no files: skipped
    prepared = run_command([sys.executable, "examples/cremad/prepare.py", str(root)])
    assert "skipped 1 clips" in prepared.stderr
    with open(root / "aim_hf" / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and rows[0]["label"] == "neutral"
    assert rows[0]["image"] == str(root / "Image-01-FPS" / "1000_DFA_XX" / "00001.jpg")  # the middle frame

    output_dir = tmp_path / "out"
    encoders = {"vision": checkpoints["vision"], "audio": checkpoints["audio"]}
    with HubServer() as hub:
        run_command(
            [sys.executable, "-m", "aim_hf", "train", RECIPES["cremad"], "--dataset_name", str(root / "aim_hf")]
            + ["--push_to_hub", "true", "--hub_model_id", f"{hub.user}/cremad-tiny"]
            + tiny_options(output_dir, encoders),  # the recipe's modulation: AIM
            env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token},
        )
        pushed = hub.repos[f"{hub.user}/cremad-tiny"].files
    check_saved_run(output_dir, ["happy", "neutral", "sad"], ("vision", "audio"))
    assert (output_dir / "modulation.png").is_file()  # AIM logged its modulation, plotted for the card
    assert str(root / "aim_hf") in (output_dir / "README.md").read_text()  # the model card names the dataset
    # The Hub repo holds the final model, its processors and its card, as saved locally.
    for name in ("config.json", "model.safetensors", "README.md", "vision/preprocessor_config.json"):
        assert pushed[name] == (output_dir / name).read_bytes(), name
    assert "audio/preprocessor_config.json" in pushed


def test_kinetics_sounds_recipe_two_processes(checkpoints, tmp_path):
    names = ["playing drums", "playing piano", "singing"]
    splits = {"train": [f"yt{i:03d}_{i}" for i in range(18)], "test": [f"yt{i:03d}_{i}" for i in range(18, 24)]}
    # OGM-GE's lists: class indices, named by classes.txt; 8 kHz wavs, read at the extractor's 16 kHz.
    write_av_dataset(tmp_path / "ks", "audio", "frames", splits, ["0", "1", "2"], rate=8000)
    (tmp_path / "ks" / "classes.txt").write_text("\n".join(names) + "\n")
    av_clips.main([str(tmp_path / "ks"), "--classes_file", "classes.txt"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", port]
    output_dir = tmp_path / "out"
    encoders = {"vision": checkpoints["vision"], "audio": checkpoints["audio"]}
    done = run_command(
        launcher + ["-m", "aim_hf", "train", RECIPES["kinetics_sounds"]]
        + ["--dataset_name", str(tmp_path / "ks" / "aim_hf")]
        + tiny_options(output_dir, encoders, modulation="none")
    )
    assert done.stdout.count("| split | fused | vision probe | audio probe |") == 1  # the main process prints
    results = check_saved_run(output_dir, names, ("vision", "audio"))
    # 16 training clips (18 less the 10% held out) in batches of 4 per process: 2 steps an epoch.
    assert results["epoch"] == pytest.approx(1.0)


def test_image_text_recipe_on_a_local_dataset(checkpoints, tmp_path):
    from datasets import Dataset, DatasetDict, Features, Image, Value

    names = ["bird", "cat", "dog"]
    features = Features({"picture": Image(), "caption": Value("string"), "category": Value("string")})

    def split(n: int, seed: int) -> Dataset:
        rows = make_rows(n, ("vision", "text"), seed=seed)
        columns = {"picture": [r["vision"] for r in rows], "caption": [r["text"] for r in rows]}
        return Dataset.from_dict({**columns, "category": [names[r["label"]] for r in rows]}, features)

    DatasetDict({"train": split(12, 0), "test": split(6, 1)}).save_to_disk(tmp_path / "data")
    output_dir = tmp_path / "out"
    argv = ["train", RECIPES["image_text"], "--dataset_name", str(tmp_path / "data"), "--label_column", "category"]
    argv += ["--modality_columns", json.dumps({"vision": "picture", "text": "caption"}), "--max_text_length", "16"]
    encoders = {"vision": checkpoints["vision"], "text": checkpoints["text"]}
    assert main(argv + tiny_options(output_dir, encoders, modulation="ogm_ge", fusion="gated")) == 0
    check_saved_run(output_dir, names, ("vision", "text"))
    config = MultimodalModel.from_pretrained(output_dir).config
    assert config.fusion == "gated"


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_name_hub_encoders_for_each_modality(name, tmp_path):
    import yaml

    recipe = yaml.safe_load(Path(RECIPES[name]).read_text())
    assert recipe["dataset_name"].endswith({"image_text": "Hatefulmemes_train"}.get(name, "/aim_hf"))
    # The local data is not here: point the recipe at a folder that is.
    model_args, data_args, args = parse_train_args([RECIPES[name], "--dataset_name", str(tmp_path)])
    assert set(data_args.modality_columns) == set(model_args.encoders)
    assert all("/" in encoder and not os.path.exists(encoder) for encoder in model_args.encoders.values())
    assert args.modulation == "aim" and args.output_dir != "aim_hf_output"


def test_clip_lists_and_class_names(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("clip,duration,label\n-3Mwkq-7TV4_2,10,2\nabc_1,10,0\n")
    assert av_clips.read_clip_list(str(path)) == [("-3Mwkq-7TV4_2", "2"), ("abc_1", "0")]
    assert av_clips.class_name("2", ["a", "b", "c"]) == "c" and av_clips.class_name("2") == "2"
    assert av_clips.class_name("HAP", names={"NEU": "neutral", "HAP": "happy"}) == "happy"
    with pytest.raises(ValueError, match="not one of"):
        av_clips.class_name("XYZ", names={"NEU": "neutral"})


@pytest.mark.parametrize(
    "name, distributed, precision",
    [("single_gpu", "NO", "no"), ("multi_gpu", "MULTI_GPU", "no"), ("bf16", "NO", "bf16")],
)
def test_accelerate_configs_load(name, distributed, precision):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / "accelerate_configs" / f"{name}.yaml"))
    assert config.distributed_type.value == distributed and config.mixed_precision == precision
    assert config.use_cpu is False and config.num_machines == 1


def test_csv_compare_data_is_balanced_loadable_and_deterministic(tmp_path):
    from datasets import load_dataset
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer

    sys.path.insert(0, str(EXAMPLES / "csv_compare"))
    import make_data

    options = ["--train_rows", "20", "--eval_rows", "10", "--caption_accuracy", "0"]
    run_command([sys.executable, "examples/csv_compare/make_data.py", "--out", str(tmp_path / "a")] + options)
    make_data.main(["--out", str(tmp_path / "b")] + options)
    root = tmp_path / "a"
    files = {split: str(root / f"{split}.csv") for split in ("train", "validation", "test")}
    data = load_dataset("csv", data_files=files)
    for split, size in {"train": 20, "validation": 10, "test": 10}.items():
        rows = data[split]
        assert rows.column_names == ["image", "caption", "label"] and len(rows) == size
        assert sorted(rows["label"]) == sorted(make_data.LABEL_NAMES * (size // 10))  # balanced
        assert not any(c.endswith(" " + label) for c, label in zip(rows["caption"], rows["label"]))  # all wrong
        for path in rows["image"]:
            assert Image.open(root / path).size == (28, 28)
            assert (root / path).read_bytes() == (tmp_path / "b" / path).read_bytes()  # same seed, same data
        assert Path(files[split]).read_text() == (tmp_path / "b" / f"{split}.csv").read_text()
    # The saved processors load, and the tokenizer knows every caption word.
    tokenizer = AutoTokenizer.from_pretrained(root / "encoders" / "text")
    assert not any(tokenizer.unk_token_id in ids for ids in tokenizer(list(data["train"]["caption"]))["input_ids"])
    assert AutoImageProcessor.from_pretrained(root / "encoders" / "vision").size == {"height": 28, "width": 28}
    with pytest.raises(ValueError, match="multiple of 10"):
        make_data.parse_args(["--out", str(tmp_path), "--train_rows", "15"])
