"""`aim-hf train --dataset_name ...` on your own data: each layout datasets reads, the column and
label mapping, the splits, the errors; tiny local encoders, offline."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Image, Value
from tiny import SAMPLING_RATE, make_rows, save_tiny_checkpoints, write_csv_of_paths

from aim_hf import MultimodalCollator, MultimodalModel, MultimodalProcessor
from aim_hf.cli import main
from aim_hf.scripts.train import build_trainer, parse_train_args, run
from aim_hf.data.audio_files import read_audio
from aim_hf.data.loading import load_own_data, load_raw
from aim_hf.pretrained import load_encoder, load_processor

NAMES = ["bird", "cat", "dog"]
FAST = [
    "--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--learning_rate", "1e-3", "--num_depth_groups", "2", "--eval_strategy", "no", "--logging_steps", "1",
    "--use_cpu", "true", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def wav_bytes(array: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, array, rate, format="WAV")
    return buffer.getvalue()


def av_text_split(n: int, seed: int) -> Dataset:
    """Rows in a dataset's own column names: an Image, an Audio (8 kHz wav bytes, as a saved Hub
    dataset holds them), the informative caption, a distractor text and a class name."""
    rows = make_rows(n, ("vision", "audio", "text"), seed=seed)
    features = Features(
        {"picture": Image(), "sound": Audio(), "caption": Value("string"), "notes": Value("string"),
         "category": Value("string")}
    )  # fmt: skip
    table = Dataset.from_dict(
        {
            "picture": [r["vision"] for r in rows],
            # Built as {"bytes", "path"} structs and cast: datasets would need torchcodec to encode arrays.
            "sound": [{"bytes": wav_bytes(r["audio"]["array"][::2], 8000), "path": None} for r in rows],
            "caption": [r["text"] for r in rows],
            "notes": ["w3 w4" for _ in rows],
            "category": [NAMES[r["label"]] for r in rows],
        },
        features=Features({**features, "sound": Features({"bytes": Value("binary"), "path": Value("string")})}),
    )
    return table.cast(features)


def test_save_to_disk_with_three_modalities_trains_saves_and_loads_back(checkpoints, tmp_path, capsys):
    data = DatasetDict({"train": av_text_split(12, 0), "validation": av_text_split(6, 1), "test": av_text_split(6, 2)})
    data.save_to_disk(tmp_path / "data")
    columns = {"vision": "picture", "audio": "sound", "text": "caption"}
    encoders = {m: checkpoints[m] for m in columns}
    out = tmp_path / "out"
    argv = ["train", "--dataset_name", str(tmp_path / "data"), "--modality_columns", json.dumps(columns)]
    argv += ["--label_column", "category", "--encoders", json.dumps(encoders), "--output_dir", str(out)]
    assert main([*argv, "--max_text_length", "16", *FAST]) == 0

    printed = capsys.readouterr().out
    assert f"{tmp_path / 'data'}, modulation='aim'" in printed
    assert "| split | fused | vision probe | audio probe | text probe |" in printed
    metrics = json.loads((out / "all_results.json").read_text())
    test_row = next(line for line in printed.splitlines() if line.startswith("| test |"))
    assert float(re.findall(r"\d\.\d{4}", test_row)[0]) == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    card = (out / "README.md").read_text()
    assert str(tmp_path / "data") in card  # the card names the data
    # The card holds the test results too, in a table that names its split; the CLI's warm-up as a ratio.
    test_table = card[card.index("Test split, step 2:"):card.index("Training batches")]
    assert f"| fused | {metrics['test_accuracy']:.4f} | {metrics['test_f1']:.4f} |" in test_table
    assert "Validation split, step 2:" in card and "- lr_scheduler_warmup_ratio: 0.1 (1 of 2 steps)" in card

    # The saved folder loads back, string labels as sorted class names, and predicts a raw row.
    model = MultimodalModel.from_pretrained(out).eval()
    assert model.modalities == ["vision", "audio", "text"]
    assert [model.config.id2label[i] for i in range(3)] == NAMES
    processor = MultimodalProcessor.from_pretrained(out)
    assert processor.kinds == {"vision": "image", "audio": "audio", "text": "text"}
    row = make_rows(1, ("vision", "audio", "text"))[0]
    batch = MultimodalCollator(processor)([row])
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()

    # `aim-hf evaluate` on the same data: the fused and probe accuracies the training run reported.
    report = tmp_path / "report.json"
    data_options = [*argv[1:5], "--label_column", "category", "--max_text_length", "16"]
    assert main(["evaluate", str(out), *data_options, "--output_json", str(report)]) == 0
    assert f"{tmp_path / 'data'}, test split" in capsys.readouterr().out
    evaluated = json.loads(report.read_text())
    assert evaluated["fused_accuracy"] == pytest.approx(metrics["test_accuracy"])
    for m in columns:
        assert evaluated["probe_accuracy"][m] == pytest.approx(metrics[f"test_{m}_probe_accuracy"])
    # Classes the model was not trained on are refused in one line.
    other = DatasetDict({"train": av_text_split(6, 3), "test": av_text_split(6, 4).map(lambda r: {"category": "fox"})})
    other.save_to_disk(tmp_path / "other")
    options = ["--dataset_name", str(tmp_path / "other"), *data_options[2:]]
    assert main(["evaluate", str(out), *options]) == 2
    assert "gives the classes ['bird', 'cat', 'dog', 'fox'], the model was trained on" in capsys.readouterr().err


def test_card_snippet_runs_on_a_row_of_a_csv_of_paths(checkpoints, tmp_path, monkeypatch, capsys):
    """A csv of image and wav paths, as a user has it: the card's usage snippet, as written (only the
    repo id pointed at the folder), loads its first row with load_dataset("csv") and classifies it
    from the paths, as the model does on the decoded files."""
    write_csv_of_paths(tmp_path)
    monkeypatch.chdir(tmp_path)  # the csv's paths are relative to it
    columns = {"vision": "image", "audio": "sound", "text": "caption"}
    argv = ["train", "--dataset_name", "train.csv", "--modality_columns", json.dumps(columns)]
    argv += ["--encoders", json.dumps({m: checkpoints[m] for m in columns}), "--output_dir", "model"]
    assert main([*argv, *FAST]) == 0
    capsys.readouterr()
    text = (tmp_path / "model" / "README.md").read_text()
    code = re.search(r"## Usage\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert "example = load_dataset(\"csv\", data_files='train.csv', split=\"train\")[0]" in code
    namespace: dict = {}
    code = code.replace('repo_id = "model"', f"repo_id = {str(tmp_path / 'model')!r}")
    exec(compile(code, "model_card_usage", "exec"), namespace)
    assert namespace["example"]["image"] == "images/0.png"  # a path, as the csv holds it

    from PIL import Image as PILImage

    model = namespace["model"]
    array, rate = sf.read("sounds/0.wav", dtype="float32")
    decoded = {
        "vision": PILImage.open("images/0.png"),
        "audio": {"array": array, "sampling_rate": rate},
        "text": namespace["example"]["caption"],
    }
    with torch.no_grad():
        expected = model(**MultimodalCollator(MultimodalProcessor.from_pretrained(tmp_path / "model"))([decoded])).logits
    torch.testing.assert_close(namespace["logits"], expected)
    assert capsys.readouterr().out.strip() == model.config.id2label[expected.argmax(-1).item()]


def write_imagefolder(root, n: int = 12) -> None:
    """An imagefolder: train/<class>/<i>.png and a metadata.csv with a caption, a distractor and the
    label (with a metadata file, datasets takes no labels from the folder names)."""
    rows = make_rows(n, ("vision", "text"))
    lines = ["file_name,caption,notes,label"]
    for i, row in enumerate(rows):
        (root / "train" / NAMES[row["label"]]).mkdir(parents=True, exist_ok=True)
        row["vision"].save(root / "train" / NAMES[row["label"]] / f"{i}.png")
        lines.append(f"{NAMES[row['label']]}/{i}.png,{row['text']},w5 w6,{NAMES[row['label']]}")
    (root / "train" / "metadata.csv").write_text("\n".join(lines) + "\n")


def test_imagefolder_without_validation_holds_out_a_seeded_split(checkpoints, tmp_path):
    write_imagefolder(tmp_path / "images")
    columns = {"vision": "image", "text": "caption"}
    argv = ["--dataset_name", str(tmp_path / "images"), "--modality_columns", json.dumps(columns)]
    argv += ["--encoders", json.dumps({m: checkpoints[m] for m in columns}), "--output_dir", str(tmp_path / "out")]
    argv += ["--validation_split_percentage", "25", "--modulation", "ogm_ge"]
    trainer, validation, test = build_trainer(*parse_train_args([*argv, *FAST]))
    assert test is None and len(validation) == 3 and len(trainer.train_dataset) == 9
    assert validation.column_names == ["image", "caption", "label"]  # the distractor column is dropped
    # The collator reads the mapped caption column with the text encoder's tokenizer.
    batch = trainer.data_collator([validation[0]])
    expected = trainer.processing_class["text"]([validation[0]["caption"]], return_tensors="pt")
    assert torch.equal(batch["text"]["input_ids"], expected["input_ids"])
    assert batch["labels"].tolist() == [validation[0]["label"]]

    metrics = run(trainer, validation, test)
    assert "eval_accuracy" in metrics and not any(k.startswith("test_") for k in metrics)
    model = MultimodalModel.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "bird", 1: "cat", 2: "dog"}
    # The same seed draws the same validation rows; another seed other ones.
    again, _ = load_own_data(str(tmp_path / "images"), columns, validation_split_percentage=25)
    other, _ = load_own_data(str(tmp_path / "images"), columns, validation_split_percentage=25, seed=1)
    assert again["validation"]["caption"] == validation["caption"] != other["validation"]["caption"]


def test_csv_json_files_and_label_kinds(tmp_path):
    (tmp_path / "train.csv").write_text("image,text,label\na.png,w1 w2,dog\nb.png,w2,cat\nc.png,w3,dog\n")
    (tmp_path / "test.json").write_text('{"text": "w4", "label": "bird"}\n')
    data = load_raw(str(tmp_path / "train.csv"))  # a file: the train split
    assert list(data) == ["train"] and len(data["train"]) == 3
    data = load_raw("csv", data_files={"train": str(tmp_path / "train.csv")})
    assert data["train"]["label"] == ["dog", "cat", "dog"]
    # Class names of every split, sorted: a class only the test split has ("bird") gets an id too.
    (tmp_path / "train.json").write_text(
        "".join(json.dumps({"text": f"w{i}", "label": ["dog", "cat"][i % 2]}) + "\n" for i in range(10))
    )
    files = {"train": str(tmp_path / "train.json"), "test": str(tmp_path / "test.json")}
    data, names = load_own_data("json", {"text": "text"}, data_files=files)
    assert names == ["bird", "cat", "dog"] and set(data) == {"train", "validation", "test"}
    assert data["test"]["label"] == [0] and len(data["validation"]) == 1
    # Integer labels are class ids; a ClassLabel keeps its names; a saved Dataset is the train split.
    Dataset.from_dict({"text": ["w1"] * 4, "label": [0, 2, 1, 2]}).save_to_disk(tmp_path / "ints")
    data, names = load_own_data(str(tmp_path / "ints"), {"text": "text"})
    assert names == ["0", "1", "2"] and len(data["train"]) + len(data["validation"]) == 4
    features = Features({"text": Value("string"), "y": ClassLabel(names=["no", "yes"])})
    labelled = Dataset.from_dict({"text": ["w1", "w2"], "y": [1, 0]}, features)
    DatasetDict({"train": labelled, "validation": labelled}).save_to_disk(tmp_path / "named")
    assert load_own_data(str(tmp_path / "named"), {"text": "text"}, label_column="y")[1] == ["no", "yes"]


def test_a_hub_id_goes_to_load_dataset_with_its_configuration(monkeypatch):
    calls = []

    def fake_load_dataset(name, config_name=None, data_files=None):
        calls.append((name, config_name, data_files))
        return DatasetDict({"train": Dataset.from_dict({"text": ["w1", "w2"] * 5, "label": [0, 1] * 5})})

    monkeypatch.setattr("aim_hf.data.loading.load_dataset", fake_load_dataset)
    data, names = load_own_data("user/memes", {"text": "text"}, config_name="small")
    assert calls == [("user/memes", "small", None)] and names == ["0", "1"]
    assert data["train"].info.dataset_name == "user/memes"  # the model card links it


def test_audio_files_are_read_at_the_extractor_rate(tmp_path):
    rate, tone = 8000, 440.0
    t = np.arange(rate // 2) / rate
    stereo = np.stack([np.sin(2 * np.pi * tone * t), 0.5 * np.sin(2 * np.pi * tone * t)], axis=1)
    sf.write(tmp_path / "a.wav", stereo.astype(np.float32), rate)
    audio, at = read_audio(str(tmp_path / "a.wav"), 16000)
    assert at == 16000 and audio.dtype == np.float32 and audio.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 16000)[spectrum.argmax()] == pytest.approx(tone, abs=2.0)
    assert np.abs(audio).max() == pytest.approx(0.75, abs=0.01)  # mean of the two channels
    same, at = read_audio({"bytes": (tmp_path / "a.wav").read_bytes(), "path": None})
    assert at == rate
    np.testing.assert_allclose(same, stereo.mean(axis=1), atol=1e-4)
    # A csv of paths: the column reads as {"array", "sampling_rate"} at the rate asked for.
    (tmp_path / "clips.csv").write_text(f"audio,label\n{tmp_path / 'a.wav'},0\n{tmp_path / 'a.wav'},1\n" * 5)
    data, _ = load_own_data(str(tmp_path / "clips.csv"), {"audio": "audio"}, audio_rates={"audio": SAMPLING_RATE})
    value = data["train"][0]["audio"]
    assert value["sampling_rate"] == SAMPLING_RATE and value["array"].shape == (8000,)


def test_processors_and_towers_from_checkpoint_folders(checkpoints, tmp_path):
    kinds = {"vision": "ViTImageProcessorPil", "audio": "ASTFeatureExtractor", "speech": "Wav2Vec2FeatureExtractor"}
    for modality, name in kinds.items():
        assert type(load_processor(checkpoints[modality], modality)).__name__ == name
    # A tokenizer serves any modality name; "text" asks for the tokenizer alone.
    assert type(load_processor(checkpoints["text"], "caption")).__name__ == "BertTokenizer"
    with pytest.raises(ValueError, match="has no processor"):
        load_processor(checkpoints["vision"], "text")

    from transformers import CLIPConfig, CLIPModel

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = CLIPConfig(
        text_config={**small, "vocab_size": 40}, vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(tmp_path / "clip")
    clip = CLIPModel.from_pretrained(tmp_path / "clip").eval()
    vision = load_encoder(str(tmp_path / "clip"), "image").eval()
    assert vision.config.model_type == "clip_vision_model"
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the pretrained tower's weights, not a fresh initialisation
        torch.testing.assert_close(
            vision(pixel_values=pixels).last_hidden_state, clip.vision_model(pixel_values=pixels).last_hidden_state
        )


@pytest.mark.parametrize(
    "options, message",
    [
        (["--modality_columns", '{"vision": "photo"}'], "column 'photo' (modality 'vision') not found in the train split; its columns: ['image', 'caption', 'notes', 'label']"),
        (["--modality_columns", '{"audio": "sound"}'], "modality 'audio' of --modality_columns has no encoder in --encoders ['vision', 'text']"),
        (["--label_column", "class"], "--label_column 'class' not found in the train split"),
        (["--dataset_name", "/no/such/data"], "--dataset_name '/no/such/data' not found: no such file or folder and not a Hub id."),
        (["--encoders", '{"vision": "/no/such/vit", "text": "TEXT"}'], "the 'vision' encoder '/no/such/vit' not found: no such folder and not a Hub id."),
        (["--encoders", "{}"], "--dataset_name needs --encoders, one per modality"),
        (["--vision_encoder", "VISION"], "--vision_encoder and --encoders both give 'vision': keep --encoders"),
    ],
)  # fmt: skip
def test_errors_are_one_line(options, message, checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    write_imagefolder(tmp_path / "images", n=6)
    encoders = json.dumps({"vision": checkpoints["vision"], "text": checkpoints["text"]})
    base = {"--dataset_name": str(tmp_path / "images"), "--encoders": encoders}
    base["--modality_columns"] = '{"text": "caption"}'
    given = dict(zip(options[::2], options[1::2]))
    argv = [arg for key, value in {**base, **given}.items() for arg in (key, value)]
    argv = [a.replace("TEXT", checkpoints["text"]).replace("VISION", checkpoints["vision"]) for a in argv]
    assert main(["train", *argv, "--output_dir", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aim-hf train: error: {message}") and "Traceback" not in err
    assert len(err.splitlines()) == 2  # the message and the hint about --debug


def test_own_data_options_need_dataset_name():
    with pytest.raises(ValueError, match="--modality_columns needs --dataset_name or --setting emoji/spoken"):
        parse_train_args(["--modality_columns", '{"vision": "image"}'])
