"""The benchmark on the settings for pretrained encoders (`benchmarks/av_digits.py --settings emoji spoken`):
its plans, and a quick run of both settings end to end on tiny stand-ins for the offline encoders.

The quick run reads Debian's unicode-data, fonts-noto-color-emoji, espeak-ng and dataset-fashion-mnist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from scripts import BENCHMARKS, load_benchmark

from aim_hf.data.emoji import EMOJI_FONT, EMOJI_TEST
from aim_hf.data.spoken import FASHION_MNIST

SCRIPT = BENCHMARKS / "av_digits.py"
# The keys of a method's entry in the benchmark's JSON (aim_hf.compare.record).
METHOD_KEYS = {"seeds", "fused", "probe", "fused_best_val", "val_fused", "val_probe"}




def test_pretrained_plans_name_the_encoders_policy_methods_and_seeds(tmp_path):
    bench = load_benchmark("av_digits")
    with pytest.raises(ValueError, match="give --enc-root, the folder holding mobilenet_v2, whisper_tiny_en"):
        bench.plan_options("spoken", "adamw", quick=False)
    (tmp_path / "mobilenet_v2").mkdir()
    (tmp_path / "mobilenet_v2" / "config.json").write_text("{}")
    missing = f"No encoder in {tmp_path / 'whisper_tiny_en'} .spoken's audio.; convert it with `python -m aim_hf.offline whisper_tiny_en"
    with pytest.raises(ValueError, match=missing):
        bench.plan_options("spoken", "adamw", quick=False, enc_root=tmp_path)
    (tmp_path / "whisper_tiny_en").mkdir()
    (tmp_path / "whisper_tiny_en" / "config.json").write_text("{}")
    options = bench.plan_options("spoken", "adamw", quick=False, enc_root=tmp_path)
    assert options[:2] == ["--setting", "spoken"]
    assert json.loads(options[options.index("--encoders") + 1]) == {
        "vision": str(tmp_path / "mobilenet_v2"), "audio": str(tmp_path / "whisper_tiny_en"),
    }  # fmt: skip
    assert options[-len(bench.PLANS["spoken", "adamw"]["options"]) :] == bench.PLANS["spoken", "adamw"]["options"]
    assert "--freeze" in options and "--max_steps" not in options
    # --quick keeps the policy and adds the tiny budget and data after it (the last of an option wins).
    quick = bench.plan_options("spoken", "adamw", quick=True, enc_root=tmp_path)
    assert quick[: len(options)] == options and quick[-2:] == bench.QUICK_DATA["spoken"]
    assert {o for s, o in bench.PLANS if s in ("emoji", "spoken")} == {"adamw"}
    assert bench.PLANS["emoji", "adamw"]["seeds"] == bench.PLANS["spoken", "adamw"]["seeds"] == 5

    from aim_hf.modulation import MODULATIONS

    methods = bench.default_methods("emoji")
    assert methods[:3] == ["vision", "text", "none"] and set(methods[3:]) == {*MODULATIONS, *bench.COMPOSITIONS} - {"none"}
    assert {"aim+unimodal_losses", "ogm_ge+unimodal_losses"} <= set(methods)
    # A modality only another setting has is left out; methods and this setting's modalities stay.
    specs = ["vision", "audio", "text", "none", "aim"]
    assert bench.methods_of(specs, "adamw", ("vision", "text")) == ["vision", "text", "none", "aim"]
    assert bench.methods_of(specs, "adamw") == ["vision", "audio", "none", "aim"]
    # The data seed follows the seed on the pretrained settings only.
    assert bench.seed_options("spoken", 3) == ["--dataset_seed", "3"] and bench.seed_options("strong", 3) == []
    # Timing: a pretrained setting on its encoders; the AV-digits encoders at each width.
    assert bench.timing_configurations("emoji", options, None) == [("emoji", [], True)]
    assert bench.timing_configurations("strong", ["--hidden_size", "16"], None) == [
        ("16", ["--hidden_size", "16"], True), ("128", ["--hidden_size", "128"], False),
    ]  # fmt: skip
    args, _ = bench.parse_args(["--settings", "strong", "emoji"])
    with pytest.raises(ValueError, match="Run the AV-digits settings and the pretrained settings"):
        bench.groups_of(args)


def test_pretrained_settings_have_no_av_digits_checks():
    bench = load_benchmark("av_digits")
    none = {"seeds": [0, 1], "fused": [0.9, 0.9], "probe": {"vision": [0.5, 0.5], "audio": [0.2, 0.2]}}
    record = {"setting": "spoken", "unimodal": {"vision": [0.6, 0.6], "audio": [0.5, 0.5]}, "methods": {"none": none}}
    assert bench.setting_checks(record) == []  # built without a target gap: the gaps are reported as found
    assert bench.setting_checks({**record, "setting": "strong"})  # the same numbers on an AV-digits setting


@pytest.mark.skipif(
    not (EMOJI_TEST.is_file() and EMOJI_FONT.is_file() and FASHION_MNIST.is_dir() and shutil.which("espeak-ng")),
    reason="needs the optional Debian data: apt-get install unicode-data fonts-noto-color-emoji espeak-ng dataset-fashion-mnist",
)
def test_quick_pretrained_benchmark_writes_each_setting_in_the_schema(tmp_path):
    from tiny import save_tiny_setting_encoders

    save_tiny_setting_encoders(tmp_path / "enc")
    out = tmp_path / "results"
    # `text` is a modality of emoji only, `audio` of spoken only: each setting trains its own alone.
    command = [sys.executable, str(SCRIPT), "--quick", "--settings", "emoji", "spoken", "--enc-root", str(tmp_path / "enc"),
               "--seeds", "0", "--methods", "text", "audio", "none", "--jobs", "2", "--timing-steps", "0",
               "--output-dir", str(out), "--work-dir", str(tmp_path / "work")]  # fmt: skip
    env = {**os.environ, "AIM_HF_CACHE": str(tmp_path / "cache")}  # the speech bank
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for setting, modalities, alone in (("emoji", {"vision", "text"}, "text"), ("spoken", {"vision", "audio"}, "audio")):
        data = json.loads((out / f"{setting}_adamw.json").read_text())
        assert data["setting"] == setting and data["optimizer"] == "adamw" and data["split"] == "test"
        assert list(data["unimodal"]) == list(data["unimodal_val"]) == [alone] and len(data["unimodal"][alone]) == 1
        assert list(data["methods"]) == ["none"]
        row = data["methods"]["none"]
        assert METHOD_KEYS <= set(row) and row["seeds"] == [0]
        assert set(row["probe"]) == set(row["val_probe"]) == modalities
        assert all(len(v) == 1 and 0 <= v[0] <= 1 for v in (row["fused"], row["fused_best_val"], *row["probe"].values()))
        run = data["runs"]["none"][0]
        assert run["metrics"]["test_accuracy"] == row["fused"][0]
        argv = run["argv"]  # the setting's encoders and policy, and the data seed = the seed
        assert json.loads(argv[argv.index("--encoders") + 1])["vision"] == str(tmp_path / "enc" / "mobilenet_v2")
        assert "--learning_rate_mapping" in argv and argv[argv.index("--dataset_seed") + 1] == "0"
        report = (out / f"{setting}_adamw.md").read_text()
        assert "Suppression gap" in report and "`--dataset_seed` (the same)" in report
    summary = (out / "pretrained.md").read_text()
    assert "## `emoji` with adamw" in summary and "## `spoken` with adamw" in summary
    assert not (out / "benchmark.md").exists()  # the AV-digits summary is left alone
