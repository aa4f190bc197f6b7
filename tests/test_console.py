"""The console: one compact line per log (with and without tqdm), every key still in trainer_state.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset

from aim_hf import AIMTrainer
from aim_hf.console import CompactPrinterCallback, CompactProgressCallback, modulation_summary, use_compact_logs
from tiny import make_rows

MODALITIES = ("vision", "audio")


@pytest.mark.parametrize("disable_tqdm", [True, False])
def test_compact_lines_and_full_trainer_state(build_model, build_processor, make_args, capsys, disable_tqdm):
    args = make_args(
        modulation="aim", modulation_start=0, max_steps=4, logging_steps=2, save_strategy="steps", save_steps=4,
        eval_strategy="steps", eval_steps=4, disable_tqdm=disable_tqdm,
    )  # fmt: skip
    trainer = AIMTrainer(
        model=build_model(MODALITIES),
        args=args,
        train_dataset=Dataset.from_list(make_rows(24, MODALITIES)),
        eval_dataset=Dataset.from_list(make_rows(6, MODALITIES, seed=1)),
        processing_class=build_processor(MODALITIES),
    )
    use_compact_logs(trainer)
    compact = CompactPrinterCallback if disable_tqdm else CompactProgressCallback
    assert sum(isinstance(cb, compact) for cb in trainer.callback_handler.callbacks) == 1
    trainer.train()
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.replace("\r", "\n").splitlines() if line.strip().startswith("[step")]
    steps = [line for line in lines if "loss" in line and "train_runtime" not in line]
    assert [line.split("]")[0] for line in steps] == ["[step 2, epoch 0.50", "[step 4, epoch 1.00"]
    for line in steps:
        assert line.count("|") == 2 and "probe acc vision " in line and "audio " in line and "AIM λ " in line
    assert "{" not in out and "aim/lambda" not in out  # no dict of every key
    # The integrations' record is whole: every key of the interval, for every logging step.
    history = json.loads((Path(args.output_dir) / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    logged = [log for log in history if "loss" in log]
    assert len(logged) == 2
    depths = len(trainer.model.depth_groups("vision"))
    for log in logged:
        assert {f"aim/lambda/{m}/depth_{d}" for m in MODALITIES for d in range(depths)} <= set(log)
        assert {"loss/fused", "aim/active", "probe_accuracy/vision", "probe_accuracy/audio"} <= set(log)
        assert len(log) > 20
    # Every logged name is in the README's list of metric names.
    keys = {k for log in history for k in log} - {"step"}
    assert "eval_vision_probe_accuracy" in keys
    undocumented = sorted(k for k in keys if not any(p.fullmatch(k) for p in _readme_metric_patterns()))
    assert not undocumented, f"not listed in README.md's metric names: {undocumented}"


def _readme_metric_patterns() -> list[re.Pattern]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("### Metric names", 1)[1].split("\n#", 1)[0]
    names = re.findall(r"`([a-z0-9_<>/]+)`", section)
    return [re.compile(re.escape(n).replace("<m>", "[a-z]+").replace("<d>", r"\d+")) for n in names]


def test_modulation_summary():
    aim = {"aim/lambda/vision/depth_0": 0.2, "aim/lambda/vision/depth_1": 0.4, "aim/lambda/audio/depth_0": 0.0}
    assert modulation_summary(aim) == "AIM λ vision 0.300"
    assert modulation_summary({"ogm/coeff/vision": 0.62, "ogm/coeff/audio": 1.0, "ogm/ratio/vision": 3.0}) == (
        "OGM-GE k vision 0.620"
    )
    assert modulation_summary({"loss": 1.0, "loss/fused": 1.0, "probe_accuracy/vision": 0.5}) is None
