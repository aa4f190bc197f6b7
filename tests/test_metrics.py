"""The metrics: the `multimodal_classification` evaluate module shipped in the package, loaded offline,
and the trainer's `compute_metrics`, which reads the predictions by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction

from aim_hf.metrics import METRIC_PATH, MultimodalMetrics, multimodal_scores

REFERENCES = [0, 1, 2, 2]
FUSED = [0, 1, 1, 2]
PROBES = {"vision": [0, 0, 2, 2], "audio": [1, 1, 1, 1]}
# By hand (per-class F1 = 2TP / (2TP + FP + FN), averaged over the classes that occur):
HAND = {
    "accuracy": 3 / 4,
    "f1": (1 + 2 / 3 + 2 / 3) / 3,  # class 0: 1; class 1: tp1 fp1 -> 2/3; class 2: tp1 fn1 -> 2/3
    "vision_probe_accuracy": 3 / 4,
    "vision_probe_f1": (2 / 3 + 0 + 1) / 3,  # class 0: tp1 fp1; class 1: fn1; class 2: tp2
    "audio_probe_accuracy": 1 / 4,
    "audio_probe_f1": (0 + 2 / 5 + 0) / 3,  # class 1: tp1 fp3; classes 0 and 2: missed
}

# Run in a fresh process: the Hub offline, every socket refused, the Hugging Face cache in a new folder.
_LOAD = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("no network in this test")

socket.socket.connect = refuse
socket.create_connection = refuse

import evaluate

metric = evaluate.load(sys.argv[1], modalities=["vision", "audio"])
inputs = json.loads(sys.argv[2])
print(json.dumps({"name": metric.name, "citation": metric.citation, "features": list(metric.features),
                  "scores": metric.compute(**inputs, num_labels=3)}))
"""


def test_evaluate_load_of_the_shipped_module_offline_gives_the_hand_numbers(tmp_path):
    inputs = {"predictions": FUSED, "references": REFERENCES}
    inputs.update({f"{m}_probe_predictions": p for m, p in PROBES.items()})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, METRIC_PATH, json.dumps(inputs)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["name"] == "multimodal_classification" and "linear classifier probes" in loaded["citation"]
    assert loaded["features"] == ["predictions", "references", "vision_probe_predictions", "audio_probe_predictions"]
    assert loaded["scores"] == pytest.approx(HAND) and list(loaded["scores"]) == list(HAND)


def test_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    references, fused, probe = (rng.integers(0, 5, 200) for _ in range(3))
    probe[probe == 4] = 3  # a class the probe never predicts
    scores = multimodal_scores(fused, references, {"text": probe}, num_labels=5)
    for prefix, predicted in [("", fused), ("text_probe_", probe)]:
        assert scores[f"{prefix}accuracy"] == pytest.approx(accuracy_score(references, predicted))
        assert scores[f"{prefix}f1"] == pytest.approx(f1_score(references, predicted, average="macro"))


def _logits(classes: list[int], num_labels: int = 3) -> np.ndarray:
    return np.eye(num_labels, dtype=np.float32)[classes]


def test_compute_metrics_finds_the_probes_by_name():
    outputs = {
        # An output the metrics do not read, placed first: positions would shift, names do not.
        "depth_features": {"vision": (np.zeros((4, 2)),)},
        "probe_logits": {m: _logits(p) for m, p in PROBES.items()},
        "modality_logits": {m: _logits([2, 2, 2, 2]) for m in PROBES},
        "logits": _logits(FUSED),
    }
    metrics = MultimodalMetrics(num_labels=3)(EvalPrediction(predictions=outputs, label_ids=np.array(REFERENCES)))
    assert metrics == pytest.approx(HAND)


def test_compute_metrics_refuses_predictions_by_position():
    predictions = (_logits(FUSED), {}, {m: _logits(p) for m, p in PROBES.items()})
    with pytest.raises(ValueError, match="reads the predictions by name"):
        MultimodalMetrics(num_labels=3)(EvalPrediction(predictions=predictions, label_ids=np.array(REFERENCES)))
