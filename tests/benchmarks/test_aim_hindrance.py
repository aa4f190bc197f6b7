"""The AIM hindrance measurement (`benchmarks/aim_hindrance.py`) at its `--quick` budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import BENCHMARKS, load_benchmark

SCRIPT = BENCHMARKS / "aim_hindrance.py"




def test_quick_run_records_the_gradients_without_changing_training(tmp_path: Path):
    report = load_benchmark("aim_hindrance").main(["--quick", "--every", "1", "--check-identical", "--output-dir", str(tmp_path)])
    assert json.loads((tmp_path / "hindrance.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    assert (tmp_path / "gradients.png").stat().st_size > 0 and (tmp_path / "modulation.png").stat().st_size > 0
    runs = report["runs"]
    for method in ("none", "aim"):
        run = runs[method][0]
        # The measurement leaves the update alone: the final weights equal an uninstrumented run's.
        assert run["identical_to_uninstrumented"] is True
        assert [r["step"] for r in run["records"]] == list(range(12))
        for record in run["records"]:
            for m in ("vision", "audio"):
                assert {f"{k}/{m}" for k in ("fused", "extra", "total", "grad", "update", "weight")} <= record.keys()
    # Under `none` nothing is added to the model's loss.
    for record in runs["none"][0]["records"]:
        assert record["extra/vision"] == record["extra/audio"] == 0.0
        assert record["total/vision"] == record["fused/vision"]
    # AIM's auxiliary loss reaches the encoder it trains once its masks exist (the weak one here).
    aim = runs["aim"][0]["records"]
    assert any(r["extra/audio"] > 0 for r in aim) and all(r["extra/vision"] == 0.0 for r in aim)
    # The optimizer's gradient is the measured total, scaled by the same clipping factor (<= 1) in every encoder.
    for record in [*runs["none"][0]["records"], *aim]:
        clip = record["grad/vision"] / record["total/vision"]
        assert clip <= 1 + 1e-5 and record["grad/audio"] / record["total/audio"] == pytest.approx(clip, rel=1e-4)
    assert any(k.startswith("aim/masked_fraction/") for e in runs["aim"][0]["log_history"] for k in e)
    diffs = report["summary"]["differences"]["aim"]
    assert set(diffs) == {"vision probe", "audio probe", "fused"} and report["summary"]["dominant"] in (
        "vision",
        "audio",
    )


def test_methods_must_start_with_the_reference():
    with pytest.raises(ValueError, match="start with the reference `none`"):
        load_benchmark("aim_hindrance").main(["--quick", "--methods", "aim"])


def test_logged_metrics_of_a_committed_benchmark(tmp_path: Path):
    source = SCRIPT.parent / "results" / "strong_adamw.json"
    out = load_benchmark("aim_hindrance").main(["--logs", str(source), "--output-dir", str(tmp_path)])
    assert out["dominant"] == "vision" and out["seeds"]["aim"] == out["seeds"]["none"]
    assert (tmp_path / "logged_strong_adamw.png").stat().st_size > 0
    phases = out["logged"]["aim"][0]
    assert list(phases) == ["first third", "second third", "last third"]
    assert {"grad_norm", "loss/fused", "aim/masked_fraction/vision", "aim/lambda/vision/depth_0"} <= phases[
        "last third"
    ].keys()
    assert "aim/lambda/vision/depth_0" not in out["logged"]["none"][0]["last third"]
    # One gap per evaluation: every 96 of the 960 steps.
    assert [s for s, _ in out["validation_probe_gap"]["vision"]] == list(range(96, 961, 96))
