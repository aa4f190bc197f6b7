"""`aim-hf compare`: the verdict's wording, one-line errors, and quick comparisons end to end (your
own csv data, and the embedded data), interrupted and resumed; tiny local encoders, offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path
import re

import pytest
from tiny import save_tiny_checkpoints, write_csv_of_paths

from aim_hf.cli import main
from aim_hf.compare.report import verdict


def _record(none: list[float], others: dict[str, tuple[list[float], list[float]]]) -> dict:
    """A record with `none`'s fused accuracies and, per other method, its (test, validation) ones."""
    def row(fused, val):
        return {"seeds": list(range(len(fused))), "fused": fused, "val_fused": val, "probe": {}, "fused_best_val": []}

    methods = {"none": row(none, none), **{m: row(*values) for m, values in others.items()}}
    return {"split": "test", "unimodal": {}, "methods": methods}


def test_verdict_decides_when_the_interval_excludes_zero_and_says_when_it_cannot():
    none = [0.70, 0.72, 0.71]
    record = _record(none, {
        "unimodal_losses": ([0.76, 0.77, 0.78], [0.9, 0.9, 0.9]),  # +6, +5, +7: above 0
        "aim": ([0.70, 0.73, 0.70], [0.8, 0.8, 0.8]),  # 0, +1, -1
        "mmpareto": ([0.71, 0.72, 0.71], [0.7, 0.7, 0.7]),
    })  # fmt: skip
    text = verdict(record)
    # +6.0 points, std 1.0 over 3 pairs: half width 4.302653 * 1 / sqrt(3) = 2.48
    assert text.startswith("On this data (test fused accuracy, points, paired 95% t-interval over 3 seeds): ")
    assert "`unimodal_losses` beats `none` by +6.0 [+3.5, +8.5]" in text
    assert "`aim` and `none` cannot be told apart (+0.0 [-2.5, +2.5])" in text
    # Chosen on validation (unimodal_losses), against the next best on validation (aim), on test:
    # differences +6, +4, +8, std 2.0, half width 4.302653 * 2 / sqrt(3) = 4.97.
    assert "the best on validation, `unimodal_losses` beats `aim` by +6.0 [+1.0, +11.0]." in text
    worse = verdict(_record(none, {"ogm_ge": ([0.60, 0.61, 0.62], none)}))
    assert "`ogm_ge` loses to `none` by -10.0 [-12.5, -7.5]" in worse and "best on validation" not in worse


def test_verdict_says_the_seeds_are_too_few_with_one_seed():
    text = verdict(_record([0.70], {"aim": ([0.75], [0.8]), "ogm_ge": ([0.69], [0.7])}))
    assert text.startswith("With 1 seed there is no interval: the seeds are too few to decide")
    assert "`aim` − `none` +5.0, `ogm_ge` − `none` -1.0" in text and "beats" not in text


@pytest.mark.parametrize(
    "options, message",
    [
        (["--seed", "3"], "--seed is set per run by the comparison"),
        (["--methods", "none", "fancy"], "modulation"),
        (["--methods", "aim", "vision"], "method 'vision' names a modality"),
        (["--seeds", "0", "0"], "--seeds repeats a seed"),
        (["--learning_rat", "0.1"], "unknown options ['--learning_rat', '0.1']"),
    ],
)
def test_errors_are_one_line_before_anything_trains(options, message, tmp_path, capsys):
    assert main(["compare", "--output_dir", str(tmp_path / "out"), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aim-hf compare: error: ") and message in err.splitlines()[0]
    assert not (tmp_path / "out").exists()


def _runs_line(out: str) -> tuple[int, int]:
    """(runs reused, runs trained) from a comparison's progress lines."""
    notes = re.findall(r"  \(([^()]+ seed \d+): (reused|\d+ s|FAILED.*)\)$", out, re.M)
    return sum(n == "reused" for _, n in notes), sum(n.endswith(" s") for _, n in notes)


def test_compare_on_a_csv_of_paths_resumes_and_reruns_only_changed_runs(tmp_path, monkeypatch, capsys):
    """Your own data as a user has it (a csv of image paths and captions, a test csv beside it):
    interrupted after seed 1, the comparison is resumed with seeds 0 and 1 and reuses seed 1's runs; a
    run whose stored options differ from the command's is trained again."""
    checkpoints = save_tiny_checkpoints(tmp_path / "checkpoints")
    data = tmp_path / "data"
    write_csv_of_paths(data, n=30)
    rows = list(csv.reader(open(data / "train.csv")))
    for name, part in (("train.csv", rows[1:22]), ("test.csv", rows[22:])):
        with open(data / name, "w", newline="") as f:
            csv.writer(f).writerows([rows[0], *part])
    monkeypatch.chdir(data)  # the csv's paths are relative to it
    columns = {"vision": "image", "text": "caption"}
    command = [
        "compare", "--methods", "none", "unimodal_losses", "--jobs", "2", "--dataset_name", "csv",
        "--data_files", json.dumps({"train": "train.csv", "test": "test.csv"}), "--validation_split_percentage", "30",
        "--modality_columns", json.dumps(columns), "--encoders", json.dumps({m: checkpoints[m] for m in columns}),
        "--output_dir", str(tmp_path / "out"), "--max_steps", "3", "--per_device_train_batch_size", "8",
        "--learning_rate", "3e-3", "--eval_strategy", "steps", "--eval_steps", "1", "--logging_steps", "1",
        "--use_cpu", "true",
    ]  # fmt: skip
    assert main([*command, "--seeds", "1"]) == 0  # the comparison stopped after seed 1
    out = capsys.readouterr().out
    assert _runs_line(out) == (0, 4)  # none, unimodal_losses, vision alone, text alone
    assert "With 1 seed there is no interval: the seeds are too few to decide" in out

    assert main([*command, "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert _runs_line(out) == (4, 4) and "8/8 runs done, 0 left" in out
    # The progress line: the runs under way, done and left, and an estimate once a run has been timed.
    assert re.search(r"/8 runs done, \d left, about \d+ (s|min) left; running \w+ seed 0", out)
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    report = (tmp_path / "out" / "compare.md").read_text()
    assert record["split"] == "test" and record["setting"] == "csv"
    assert set(record["unimodal"]) == {"vision", "text"} and set(record["methods"]) == {"none", "unimodal_losses"}
    none, losses = record["methods"]["none"], record["methods"]["unimodal_losses"]
    assert none["seeds"] == losses["seeds"] == [0, 1] and set(none["probe"]) == {"vision", "text"}
    runs = record["runs"]
    assert [r["metrics"]["test_accuracy"] for r in runs["unimodal_losses"]] == losses["fused"]
    assert all(len(r["fused_best_val"]) == 2 for r in record["methods"].values())
    assert "--only_modality" in runs["text"][0]["argv"] and "--seed" in runs["none"][1]["argv"]
    # The report: the verdict over 2 seeds with the paired difference the record gives, the tables, the plot.
    diff = [(a - b) * 100 for a, b in zip(losses["fused"], none["fused"])]
    assert "over 2 seeds): `unimodal_losses`" in report and f"{sum(diff) / 2:+.1f} [" in report
    assert "| `text` alone |" in report and "| text |" in report and "| `unimodal_losses` |" in report
    assert (tmp_path / "out" / "compare_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert str(tmp_path / "out" / "compare.md") in out

    # A finished run is reused only with identical options: one run's stored options differ, it alone reruns.
    stored = tmp_path / "out" / "compare_runs" / "none" / "seed0" / "result.json"
    result = json.loads(stored.read_text())
    result["argv"][result["argv"].index("--learning_rate") + 1] = "1e-2"
    stored.write_text(json.dumps(result))
    assert main([*command, "--seeds", "0", "1"]) == 0
    assert _runs_line(capsys.readouterr().out) == (7, 1)
    assert json.loads(stored.read_text())["argv"] == runs["none"][0]["argv"]


def test_compare_on_an_embedded_setting(tmp_path, capsys):
    out = tmp_path / "out"
    command = [
        "compare", "--methods", "aim", "--seeds", "0", "--no_alone", "--setting", "strong", "--hidden_size", "8",
        "--num_hidden_layers", "1", "--max_train_samples", "64", "--max_eval_samples", "32", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "16", "--eval_strategy", "steps", "--eval_steps", "2", "--output_dir", str(out),
    ]  # fmt: skip
    assert main(command) == 0
    record = json.loads((out / "compare.json").read_text())
    assert record["setting"] == "AV-digits strong" and record["unimodal"] == {}
    assert set(record["methods"]) == {"none", "aim"}
    for name, row in record["methods"].items():
        run = record["runs"][name][0]
        assert row["fused"] == [run["metrics"]["test_accuracy"]] and set(row["probe"]) == {"vision", "audio"}
        assert ["--setting", "strong"] == run["argv"][run["argv"].index("--setting"):][:2]
        # Every evaluation scored the test split too: the best-on-validation value is read from the log.
        assert any("test_curve_accuracy" in entry for entry in run["log_history"]) and 0 <= row["fused_best_val"][0] <= 1
    assert "the seeds are too few to decide" in capsys.readouterr().out


def test_a_yaml_file_gives_the_training_options_and_stays_first_in_every_run(tmp_path):
    from aim_hf.scripts.train import parse_train_args
    from aim_hf.compare.command import parse_compare_args
    from aim_hf.compare.runs import plan_runs

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"setting: hopeless\nlearning_rate: 0.01\noutput_dir: {tmp_path / 'out'}\n")
    args, options, training_args = parse_compare_args([str(recipe), "--methods", "aim", "--seeds", "4", "--max_steps", "3"])
    assert args.methods == ["none", "aim"] and args.work_dir == tmp_path / "out" / "compare_runs"
    assert options == [str(recipe), "--max_steps", "3"] and args.data == "AV-digits hopeless"
    runs = plan_runs(args.methods, args.seeds, args.modalities, options, args.work_dir)
    assert [(r.method, r.seed) for r in runs] == [("none", 4), ("aim", 4)]
    _, data_args, run_args = parse_train_args(runs[1].argv)  # what the child parses
    assert runs[1].argv[0] == str(recipe) and data_args.setting == "hopeless" and run_args.learning_rate == 0.01
    assert (run_args.seed, run_args.modulation, run_args.max_steps) == (4, "aim", 3)
    assert run_args.output_dir == str(tmp_path / "out" / "compare_runs" / "aim" / "seed4" / "model")


def test_a_failed_run_is_named_with_its_log_and_the_others_go_on(tmp_path):
    from aim_hf.compare.runs import Progress, Run, RunFailed, run_all

    lines: list[str] = []
    broken = Run("aim", 0, ["--setting", "no_such_setting"], tmp_path / "aim" / "seed0")  # fails in the child
    done = Run("none", 0, ["--max_steps", "1"], tmp_path / "none" / "seed0")
    done.folder.mkdir(parents=True)
    done.result_path.write_text(json.dumps({"argv": done.argv, "metrics": {"test_accuracy": 0.5}}))
    results = run_all([broken, done], jobs=2, progress=Progress(2, 2, write=lines.append))
    failed = results["aim", 0]
    assert isinstance(failed, RunFailed) and failed.returncode != 0
    assert "no_such_setting" in broken.log_path.read_text()  # the log says why
    assert results["none", 0]["metrics"] == {"test_accuracy": 0.5}
    assert any(f"(aim seed 0: FAILED, see {broken.log_path})" in line for line in lines)
    assert "2/2 runs done, 0 left" in lines[-1]


def test_the_modalities_of_a_pretrained_setting_are_its_encoders(tmp_path):
    """`--setting emoji` (vision + text): each of its modalities is trained alone, not AV-digits'."""
    from aim_hf.compare.command import parse_compare_args

    encoders = {m: str(tmp_path / m) for m in ("vision", "text")}
    for folder in encoders.values():
        Path(folder).mkdir()
    args, _, _ = parse_compare_args(["--setting", "emoji", "--encoders", json.dumps(encoders), "--output_dir",
                                     str(tmp_path / "out"), "--methods", "aim", "--seeds", "0"])  # fmt: skip
    assert args.modalities == ["vision", "text"] and args.data == "setting emoji"
