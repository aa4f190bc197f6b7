"""The AV-digits benchmark harness (`benchmarks/av_digits.py`) at a tiny budget."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "av_digits.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("av_digits_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_method_options():
    bench = _load_benchmark()
    assert bench.method_options("audio") == ["--modulation", "none", "--only_modality", "audio"]
    assert bench.method_options("aim:aim_r_max=0.25,aim_alpha=2") == [
        "--modulation", "aim", "--aim_r_max", "0.25", "--aim_alpha", "2",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="option=value"):
        bench.method_options("aim:aim_r_max")


def _row(fused, vision, audio, seconds=0.1, memory=1.0):
    return {
        "test_fused": fused, "eval_fused": fused, "test_vision": vision, "eval_vision": vision,
        "test_audio": audio, "eval_audio": audio, "time_ratio": seconds / 0.1, "memory_ratio": memory,
    }  # fmt: skip


def test_check_targets_uses_weak_modality_alone_and_seed_spread():
    bench = _load_benchmark()
    summary = {
        "vision": {"eval_fused": (0.95, 0.0)},
        "audio": {"eval_fused": (0.80, 0.0)},
        "none": _row((0.90, 0.01), (0.90, 0.02), (0.50, 0.01)),
        "ogm_ge": _row((0.91, 0.01), (0.85, 0.01), (0.60, 0.01), seconds=0.12),
        "aim": _row((0.92, 0.01), (0.89, 0.01), (0.70, 0.01), seconds=0.14, memory=1.6),
    }
    checks = {target: met for target, met, _ in bench.check_targets(summary, ("vision", "audio"))}
    assert checks["AIM fused test accuracy > none"] and checks["AIM fused test accuracy > ogm_ge"]
    assert checks["weak modality (audio) probe under AIM > none"]
    # 0.89 is below none's 0.90 by less than none's spread of 0.02.
    assert checks["dominant modality (vision) probe under AIM >= none - one seed-spread"]
    assert checks["AIM time per step <= 1.5x none"]
    assert not checks["AIM peak memory <= 1.5x none"]
    assert not checks["OGM-GE time per step <= 1.1x none"]


def test_tiny_benchmark_writes_table_plots_and_measured_ratios(tmp_path):
    out = tmp_path / "results"
    tiny = ["--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "4",
            "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
            "--logging_steps", "2", "--hidden_size", "16", "--num_hidden_layers", "2"]  # fmt: skip
    command = [sys.executable, str(SCRIPT), "--seeds", "0", "--methods", "none", "aim",
               "--output-dir", str(out), "--name", "tiny", "--", *tiny]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=600)

    report = (out / "tiny.md").read_text()
    assert "| `none` |" in report and "| `aim` |" in report
    assert "python benchmarks/av_digits.py --seeds 0" in report and "transformers" in report
    assert "AIM time per step <= 1.5x none" in report
    for plot in ("tiny_accuracy.png", "tiny_aim_modulation.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "tiny_none_modulation.png").exists()  # `none` logs no modulation curve

    data = json.loads((out / "tiny.json").read_text())
    runs, summary = data["runs"], data["summary"]
    for method in ("none", "aim"):
        (run,) = runs[method]
        assert len(run["step_seconds"]) == 4 and all(s > 0 for s in run["step_seconds"])
        assert run["memory"]["peak_bytes"] >= run["memory"]["baseline_bytes"] > 0
        assert summary[method]["step_seconds"] == statistics.median(run["step_seconds"])
        assert any("eval_accuracy" in entry for entry in run["log_history"])
    measured = {m: runs[m][0] for m in ("none", "aim")}
    added = {m: r["memory"]["peak_bytes"] - r["memory"]["baseline_bytes"] for m, r in measured.items()}
    assert summary["aim"]["time_ratio"] == pytest.approx(
        statistics.median(measured["aim"]["step_seconds"]) / statistics.median(measured["none"]["step_seconds"])
    )
    assert summary["aim"]["memory_ratio"] == pytest.approx(added["aim"] / added["none"])
    assert summary["none"]["time_ratio"] == 1.0
    # AIM really modulated: its log has per-depth strengths.
    assert any("aim/lambda/vision/depth_0" in entry for entry in measured["aim"]["log_history"])
