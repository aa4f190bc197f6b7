"""The AV-digits benchmark harness (`benchmarks/av_digits.py`) at a tiny budget."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import threading
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


def test_rotation_runs_threads_strictly_in_turn_and_lets_them_leave():
    bench = _load_benchmark()
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
    bench = _load_benchmark()
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
    command = [sys.executable, str(SCRIPT), "--seeds", "0", "1", "--jobs", "2", "--methods", "none", "aim",
               "--output-dir", str(out), "--name", "tiny", "--", *tiny]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=600)

    report = (out / "tiny.md").read_text()
    assert "| `none` |" in report and "| `aim` |" in report
    assert "python benchmarks/av_digits.py --seeds 0 1 --jobs 2" in report and "transformers" in report
    assert "AIM time per step <= 1.5x none" in report
    for plot in ("tiny_accuracy.png", "tiny_aim_modulation.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "tiny_none_modulation.png").exists()  # `none` logs no modulation curve

    data = json.loads((out / "tiny.json").read_text())
    runs, summary, step_seconds = data["runs"], data["summary"], data["step_seconds"]
    for method in ("none", "aim"):
        assert [run["seed"] for run in runs[method]] == [0, 1]
        for run in runs[method]:
            assert run["memory"]["peak_bytes"] >= run["memory"]["baseline_bytes"] > 0
            assert any("eval_accuracy" in entry for entry in run["log_history"])
        # The timing run took all 4 steps; the table reports their median.
        assert len(step_seconds[method]) == 4 and all(s > 0 for s in step_seconds[method])
        assert summary[method]["step_seconds"] == statistics.median(step_seconds[method])
        assert summary[method]["test_fused"][0] == pytest.approx(
            statistics.fmean(run["metrics"]["test_accuracy"] for run in runs[method])
        )
    added = {m: statistics.fmean(r["memory"]["peak_bytes"] - r["memory"]["baseline_bytes"] for r in runs[m]) for m in runs}
    assert summary["aim"]["time_ratio"] == pytest.approx(
        statistics.median(step_seconds["aim"]) / statistics.median(step_seconds["none"])
    )
    assert summary["aim"]["memory_ratio"] == pytest.approx(added["aim"] / added["none"])
    assert summary["none"]["time_ratio"] == 1.0
    # AIM really modulated: its log has per-depth strengths.
    assert any("aim/lambda/vision/depth_0" in entry for entry in runs["aim"][0]["log_history"])
