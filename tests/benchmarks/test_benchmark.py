"""The AV-digits benchmark harness (`benchmarks/av_digits.py`) at a tiny budget."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import threading

import pytest
from scripts import BENCHMARKS, load_benchmark

from aim_hf.compare.record import comparisons, suppression

SCRIPT = BENCHMARKS / "av_digits.py"




def test_method_options():
    bench = load_benchmark("av_digits")
    assert bench.method_options("audio") == ["--modulation", "none", "--only_modality", "audio"]
    assert bench.method_options("aim:r_max=0.25,alpha=2") == [
        "--modulation", "aim", "--modulation_kwargs", '{"r_max": 0.25, "alpha": 2}',
    ]  # fmt: skip
    # A method's own options travel in --modulation_kwargs, typed as JSON where they parse.
    options = bench.method_options("ogm_ge:alpha=0.3,mode=gradient,noise=false,learning_rate=1e-3")
    assert options[:2] == ["--modulation", "ogm_ge"] and options[2:4] == ["--learning_rate", "1e-3"]
    assert json.loads(options[options.index("--modulation_kwargs") + 1]) == {"alpha": 0.3, "mode": "gradient", "noise": False}
    with pytest.raises(ValueError, match="key=value"):
        bench.method_options("aim:r_max")
    # `@optimizer` keeps a method to the groups of its paper's optimizer.
    specs = ["none", "opm@sgd", "aim:pam=dominant", "ogm_ge:alpha=0.3@sgd"]
    assert bench.methods_of(specs, "adamw") == ["none", "aim:pam=dominant"]
    assert bench.methods_of(specs, "sgd") == ["none", "opm", "aim:pam=dominant", "ogm_ge:alpha=0.3"]
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        bench.methods_of(["opm@adam"], "sgd")


def test_rotation_runs_threads_strictly_in_turn_and_lets_them_leave():
    bench = load_benchmark("av_digits")
    rotation, order = bench.Rotation(3), []
    turns = {0: 4, 1: 2, 2: 3}  # thread 1 leaves first, then 2: the others go on in turn

    def work(i: int) -> None:
        for _ in range(turns[i]):
            rotation.wait_turn(i)
            order.append(i)
        rotation.leave(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in (2, 0, 1)]  # start order does not matter
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert order == [0, 1, 2, 0, 1, 2, 0, 2, 0]


def test_rotation_failure_stops_the_waiting_threads():
    bench = load_benchmark("av_digits")
    rotation, errors = bench.Rotation(2), []

    def waiter() -> None:
        try:
            rotation.wait_turn(1)
            rotation.wait_turn(1)  # thread 0 fails in its turn instead of passing it on
        except RuntimeError as err:
            errors.append(err)

    thread = threading.Thread(target=waiter)
    thread.start()
    rotation.wait_turn(0)
    rotation.wait_turn(0)
    rotation.leave(0, failed=True)
    thread.join(timeout=30)
    assert not thread.is_alive() and "failed" in str(errors[0])


def _method(fused, vision, audio, val=None):
    return {"seeds": [0, 1, 2], "fused": fused, "probe": {"vision": vision, "audio": audio}, "val_fused": val or fused}


def test_setting_checks_and_comparisons_read_the_per_seed_values():
    bench = load_benchmark("av_digits")
    record = {
        "setting": "strong",
        "unimodal": {"vision": [0.70, 0.71, 0.72], "audio": [0.60, 0.62, 0.61]},
        "methods": {
            "none": _method([0.75, 0.76, 0.77], [0.69, 0.70, 0.70], [0.40, 0.45, 0.43]),
            "ogm_ge": _method([0.77, 0.785, 0.79], [0.68, 0.70, 0.69], [0.50, 0.52, 0.50], val=[0.9, 0.9, 0.9]),
            "aim": _method([0.74, 0.75, 0.79], [0.69, 0.70, 0.71], [0.55, 0.50, 0.52], val=[0.1, 0.1, 0.1]),
        },
    }
    gaps = suppression(record)
    assert gaps["audio"]["gap"][0] == pytest.approx(-(0.20 + 0.17 + 0.18) / 3)
    checks = {target: met for target, met, _ in bench.setting_checks(record)}
    assert checks["weak modality (audio) probe under none >= 15 points below it alone"]
    assert checks["dominant modality (vision) probe under none within 3 points of it alone"]
    assert checks["fused accuracy under none above vision alone"]
    hopeless = {**record, "setting": "hopeless", "unimodal": {"vision": [0.7] * 3, "audio": [0.12, 0.14, 0.13]}}
    assert bench.setting_checks(hopeless) == [("weak modality (audio) alone within 5 points of chance (0.10)", True, "0.1300")]
    compared = comparisons(record)
    assert compared["ogm_ge"]["fused_vs_none"][0] == pytest.approx((0.02 + 0.025 + 0.02) / 3)
    assert compared["ogm_ge"]["fused_vs_none"][1] > 0  # the interval lies above 0: it beats none
    # The best other method is chosen on validation (ogm_ge), not on test.
    assert compared["aim"]["best_other"] == "ogm_ge" and compared["ogm_ge"]["best_other"] == "aim"
    assert "fused_vs_none" not in compared["none"]


def test_validation_view_and_aim_modulation_summary():
    bench = load_benchmark("av_digits")
    none = {**_method([0.75, 0.76, 0.77], [0.6] * 3, [0.4] * 3), "val_probe": {"vision": [0.5] * 3, "audio": [0.3] * 3}}
    log = [{"aim/active": 0.0, "aim/lambda/vision/depth_0": 0.9, "aim/masked_fraction/vision": 0.9},
           {"aim/active": 1.0, "aim/lambda/vision/depth_0": 0.2, "aim/masked_fraction/vision": 0.1},
           {"aim/active": 1.0, "aim/lambda/vision/depth_0": 0.4, "aim/masked_fraction/vision": 0.3}]  # fmt: skip
    record = {
        "setting": "strong", "optimizer": "adamw", "train_options": [],
        "unimodal": {"vision": [0.7] * 3}, "unimodal_val": {"vision": [0.65] * 3},
        "methods": {"none": {**none, "val_fused": [0.8, 0.81, 0.82]}},
        "runs": {"none": [{"log_history": []}], "aim:pam=dominant": [{"log_history": log}, {"log_history": log[:2]}]},
    }  # fmt: skip
    view = bench.validation_view(record)
    assert view["methods"]["none"]["fused"] == [0.8, 0.81, 0.82] and view["methods"]["none"]["probe"]["audio"] == [0.3] * 3
    assert view["unimodal"] == {"vision": [0.65] * 3} and record["methods"]["none"]["fused"] == [0.75, 0.76, 0.77]
    # The inactive warm-up entry is left out; seed means (0.3, 0.2) then their mean.
    summary = bench.aim_modulation(record)
    assert list(summary) == ["aim:pam=dominant"]
    assert summary["aim:pam=dominant"]["lambda/vision/depth_0"] == pytest.approx(0.25)
    assert summary["aim:pam=dominant"]["masked_fraction/vision"] == pytest.approx(0.15)
    section = "\n".join(bench.setting_section(view, []))
    assert "Validation accuracy of the last checkpoint" in section and "| `aim:pam=dominant` | 0.250 |" in section
    assert "| vision | 0.6500 ± 0.0000 |" in section and "| check |" not in section  # one modality: nothing to check


def test_plans_name_their_settings_and_optimizers():
    bench = load_benchmark("av_digits")
    options = bench.plan_options("strong", "sgd", quick=False)
    assert options[:2] == ["--setting", "strong"] and "sgd" in options and "momentum=0.9" in options
    assert {o for s, o in bench.PLANS if s == "strong"} == {"adamw", "sgd"}
    assert sum(1 for s, _ in bench.PLANS if s == "strong") == 2 and bench.PLANS["strong", "adamw"]["seeds"] >= 8
    with pytest.raises(ValueError, match="No plan for setting 'hopeless' with optimizer 'sgd'"):
        bench.plan_options("hopeless", "sgd", quick=False)


def test_quick_benchmark_writes_per_seed_json_tables_plots_and_measured_ratios(tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, str(SCRIPT), "--quick", "--settings", "strong", "--optimizers", "adamw", "sgd",
               "--methods", "audio", "none", "aim", "--jobs", "2", "--timing-steps", "4", "--output-dir", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=900)

    for optimizer in ("adamw", "sgd"):
        data = json.loads((out / f"strong_{optimizer}.json").read_text())
        assert data["setting"] == "strong" and data["optimizer"] == optimizer
        assert len(data["unimodal"]["audio"]) == 2
        for method in ("none", "aim"):
            row = data["methods"][method]
            assert row["seeds"] == [0, 1] and len(row["fused"]) == 2
            assert len(row["fused_best_val"]) == 2 and all(0 <= x <= 1 for x in row["fused_best_val"])
            assert set(row["probe"]) == {"vision", "audio"} and all(len(v) == 2 for v in row["probe"].values())
            runs = data["runs"][method]
            assert [run["metrics"]["test_accuracy"] for run in runs] == row["fused"]
            # Every evaluation also scored the test split, so the best-on-validation value is read from the log.
            assert any("test_curve_accuracy" in entry for entry in runs[0]["log_history"])
        sgd_run = data["runs"]["none"][0]["argv"]
        assert ("sgd" in sgd_run) == (optimizer == "sgd")
        report = (out / f"strong_{optimizer}.md").read_text()
        assert "| `aim` |" in report and "Suppression gap" in report and "Δ fused vs `none`" in report
        assert (out / f"strong_{optimizer}_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = (out / "benchmark.md").read_text()
    assert "python benchmarks/av_digits.py --quick" in summary and "transformers" in summary
    timing = json.loads((out / "timing.json").read_text())
    # The accuracy runs' width (--quick: 16) and the wider 128, each with its own timing run.
    assert set(timing["rows"]) == {"16", "128"}
    for size, rows in timing["rows"].items():
        step_times = timing["timings"][size]
        assert set(rows) == {"none", "aim"}  # the unimodal runs are not timed
        for method in rows:
            seconds = step_times[method]["step_seconds"]
            assert len(seconds) == 4 and all(s > 0 for s in seconds)
            assert rows[method]["step_seconds"] == statistics.median(seconds)
            assert rows[method]["mean_step_seconds"] == pytest.approx(statistics.fmean(seconds))
        assert rows["aim"]["time_ratio"] == pytest.approx(rows["aim"]["step_seconds"] / rows["none"]["step_seconds"])
        # Step 0 refreshes AIM's learned prototypes; `none` has none to refresh.
        assert 0 < rows["aim"]["refresh_share"] < 1 and rows["none"]["refresh_share"] == 0
    adamw = json.loads((out / "strong_adamw.json").read_text())["runs"]
    rows = timing["rows"]["16"]
    added = {m: statistics.fmean(r["memory"]["peak_bytes"] - r["memory"]["baseline_bytes"] for r in adamw[m]) for m in rows}
    assert rows["aim"]["memory_ratio"] == pytest.approx(added["aim"] / added["none"])
    assert math.isnan(timing["rows"]["128"]["aim"]["memory_bytes"])  # no accuracy run at that width
    assert "| 128 | `aim` |" in summary and "refresh share" in summary
    # AIM really modulated: its log has per-depth strengths.
    assert any("aim/lambda/vision/depth_0" in entry for entry in adamw["aim"][0]["log_history"])
