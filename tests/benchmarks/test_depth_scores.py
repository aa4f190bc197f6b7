"""The depth-score check (`benchmarks/depth_scores.py`) at its `--quick` budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import load_benchmark


def test_quick_run_scores_every_depth_against_a_probe(tmp_path: Path):
    output = tmp_path / "scores.json"
    assert load_benchmark("depth_scores").main(["--quick", "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    values = record["values"]
    assert {(v["modality"], v["depth"]) for v in values} == {(m, d) for m in ("vision", "audio") for d in (0, 1)}
    for v in values:
        assert 0 <= v["probe"] <= 1 and 0 < v["raw"] < 1 and 0 < v["centered"] < 1 and -1 <= v["cosine"] <= 1
    # A randomly initialised ViT's pooled outputs share one direction: its raw score sits at chance.
    vision = [v for v in values if v["modality"] == "vision"]
    assert all(v["cosine"] > 0.9 and v["raw"] == pytest.approx(record["chance"], abs=0.02) for v in vision)
    assert set(record["agrees_with_probes"]) == {"raw", "centered"}
