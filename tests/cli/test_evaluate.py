"""`aim-hf evaluate`: a model trained by `aim-hf train`, its accuracies and each modality's contribution."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from tiny import TINY_OPTIONS

from aim_hf import MultimodalCollator, MultimodalModel, MultimodalProcessor
from aim_hf.cli import main
from aim_hf.data.settings import load_setting
from aim_hf.evaluation import modality_contributions

EVAL_SAMPLES = "48"
REPORT_KEYS = {
    "model", "split", "setting", "dataset_seed", "image_noise", "setting_kwargs", "max_eval_samples", "num_examples", "modalities",
    "blanking", "fused_accuracy", "probe_accuracy", "alone_accuracy", "shapley", "empty_accuracy", "empty_set",
    "chance", "subsets",
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained and saved by `aim-hf train`, its metrics, and `aim-hf evaluate`'s JSON and stdout."""
    root = tmp_path_factory.mktemp("evaluate")
    out, report = root / "model", root / "report.json"
    options = [*TINY_OPTIONS, "--max_steps", "6", "--max_eval_samples", EVAL_SAMPLES]
    assert main(["train", "--output_dir", str(out), *options]) == 0
    metrics = json.loads((out / "all_results.json").read_text())
    stdout = io.StringIO()  # evaluate's stdout alone (a module fixture cannot take capsys)
    with contextlib.redirect_stdout(stdout):
        code = main(["evaluate", str(out), "--max_eval_samples", EVAL_SAMPLES, "--output_json", str(report)])
    assert code == 0
    return out, metrics, json.loads(report.read_text()), stdout.getvalue()


def test_fused_and_probe_accuracy_are_the_train_commands_test_accuracy(trained):
    _, metrics, report, _ = trained
    assert set(report) == REPORT_KEYS and report["split"] == "test" and report["num_examples"] == int(EVAL_SAMPLES)
    assert report["fused_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    for m in ("vision", "audio"):
        assert report["probe_accuracy"][m] == pytest.approx(metrics[f"test_{m}_probe_accuracy"], abs=1e-9)


def test_blanked_accuracies_match_an_independent_forward_with_feature_keep(trained):
    out, _, report, _ = trained
    model = MultimodalModel.from_pretrained(out).eval()
    processor = MultimodalProcessor.from_pretrained(out)
    test = load_setting("av_digits", seed=0, num_mel_bins=model.config.encoder_configs["audio"].num_mel_bins)["test"]
    batch = MultimodalCollator(processor)([test[i] for i in range(int(EVAL_SAMPLES))])
    labels = batch.pop("labels")
    subsets = {tuple(s["modalities"]): s["accuracy"] for s in report["subsets"]}
    assert set(subsets) == {(), ("vision",), ("audio",), ("vision", "audio")}
    zeros = torch.zeros(len(labels))
    with torch.no_grad():
        for kept, keep in (((), {"vision": zeros, "audio": zeros}), (("vision",), {"audio": zeros})):
            predictions = model(**batch, feature_keep=keep).logits.argmax(-1)
            assert subsets[kept] == pytest.approx((predictions == labels).double().mean().item(), abs=1e-9), kept
    assert report["alone_accuracy"] == {"vision": subsets[("vision",)], "audio": subsets[("audio",)]}
    assert report["empty_accuracy"] == subsets[()]
    # With two modalities the Shapley value is the mean of the two marginal gains.
    vision, audio, both, none = subsets[("vision",)], subsets[("audio",)], subsets[("vision", "audio")], subsets[()]
    assert report["shapley"]["vision"] == pytest.approx((vision - none + both - audio) / 2)
    assert report["shapley"]["audio"] == pytest.approx((audio - none + both - vision) / 2)


def test_the_table_shows_the_reports_numbers(trained):
    _, _, report, stdout = trained
    assert f"fused accuracy {report['fused_accuracy']:.4f} on {EVAL_SAMPLES} examples" in stdout
    assert "| modality | probe | alone (others blanked) | Shapley |" in stdout
    for m in ("vision", "audio"):
        numbers = (report["probe_accuracy"][m], report["alone_accuracy"][m], report["shapley"][m])
        assert "| {} | {:.4f} | {:.4f} | {:+.4f} |".format(m, *numbers) in stdout


def test_function_keeps_predictions_per_subset(build_model, build_processor, build_dataset):
    modalities = ("vision", "audio", "text")
    result = modality_contributions(
        build_model(modalities), build_processor(modalities), build_dataset(10, modalities), batch_size=4
    )
    assert len(result.predictions) == 8 and result.labels.tolist() == [i % 3 for i in range(10)]
    text_alone = result.predictions[("text",)]
    assert result.alone_accuracy()["text"] == pytest.approx(float(np.mean(text_alone == result.labels)))
    assert sum(result.shapley().values()) == pytest.approx(result.fused_accuracy - result.empty_accuracy)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give the model folder first: aim-hf evaluate MODEL_DIR"),
        (["/no/such/model"], "MODEL_DIR '/no/such/model' is not a saved model (no config.json there)."),
    ],
)
def test_command_line_errors(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aim-hf evaluate: error: {message}") and len(err.splitlines()) == 2


def test_bad_split_and_help(trained, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    assert main(["evaluate", str(trained[0]), "--split", "train"]) == 2
    assert "--split must be 'validation' or 'test', got 'train'." in capsys.readouterr().err
    assert main(["--help"]) == 0 and "\n  evaluate  " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(option in help_text for option in ("--split", "--output_json", "--setting", "--dataset_seed"))


def test_without_split_takes_the_split_that_exists(cli_data, tmp_path, capsys):
    """A dataset without a test split (train and validation): `aim-hf evaluate` without --split takes
    validation, and says so; with test and validation it takes test (the `trained` fixture's report)."""
    out = tmp_path / "model"
    options = ["--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "true"]
    assert main(["train", *cli_data, "--output_dir", str(out), *options, "--disable_tqdm", "true"]) == 0
    capsys.readouterr()
    report = tmp_path / "report.json"
    assert main(["evaluate", str(out), *cli_data[:2], "--output_json", str(report)]) == 0
    stdout = capsys.readouterr().out
    assert "No --split given: evaluating on the 'validation' split (its splits: ['train', 'validation'])." in stdout
    evaluated = json.loads(report.read_text())
    assert evaluated["split"] == "validation" and evaluated["num_examples"] == 8
