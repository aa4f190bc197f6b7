"""`modulation_kwargs`: a method's own options, checked against its `Config`, from Python, the
command line (JSON) and a YAML/JSON config file."""

from __future__ import annotations

import json

import pytest

from aim_hf import MODULATIONS
from aim_hf.scripts.train import parse_train_args
from aim_hf.modulation import build_modulation


def test_command_line_json_reaches_the_methods_config():
    _, _, args = parse_train_args(["--modulation", "ogm_ge", "--modulation_kwargs", '{"alpha": 0.3, "noise": false}'])
    assert args.modulation_kwargs == {"alpha": 0.3, "noise": False}
    config = MODULATIONS["ogm_ge"].make_config(args.modulation_kwargs)
    assert (config.alpha, config.noise, config.mode) == (0.3, False, "auto")  # the rest keeps its default


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_mapping_and_command_line_override(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    values = {"modulation": "unimodal_losses", "modulation_kwargs": {"weight": 0.25}}
    yaml_text = "modulation: unimodal_losses\nmodulation_kwargs: {weight: 0.25}\n"
    path.write_text(yaml_text if suffix == ".yaml" else json.dumps(values))
    _, _, args = parse_train_args([str(path)])
    assert args.modulation == "unimodal_losses" and args.modulation_kwargs == {"weight": 0.25}
    _, _, args = parse_train_args([str(path), "--modulation_kwargs", '{"weight": 2}'])
    assert MODULATIONS["unimodal_losses"].make_config(args.modulation_kwargs).weight == 2.0


def test_unknown_key_lists_the_methods_options():
    listed = r"\['alpah'\] are not options of 'ogm_ge'; its options: alpha \(float\), noise \(bool\)"
    with pytest.raises(ValueError, match=listed):
        parse_train_args(["--modulation", "ogm_ge", "--modulation_kwargs", '{"alpah": 0.3}'])
    with pytest.raises(ValueError, match="not options of 'none'; it takes no options\\.$"):
        parse_train_args(["--modulation", "none", "--modulation_kwargs", '{"alpha": 0.3}'])


@pytest.mark.parametrize(
    "kwargs, message",
    [('{"alpha": "high"}', "'alpha' of 'ogm_ge' must be float, got 'high'"),
     ('{"noise": 1}', "'noise' of 'ogm_ge' must be bool, got 1"),
     ('{"mode": "grad"}', "'mode' of 'ogm_ge' must be Literal\\['auto', 'gradient', 'update'\\]"),
     ('{"noise_scale": -1}', "noise_scale must be >= 0"),
     ('{"alpha": 0.3', "modulation_kwargs is not a JSON object"),
     ('[1, 2]', "must be a JSON object / mapping")],
)  # fmt: skip
def test_wrong_values_fail_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_train_args(["--modulation", "ogm_ge", "--modulation_kwargs", kwargs])
    assert "\n" not in str(info.value)


def test_the_method_reads_its_config(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    args = make_args(modulation="ogm_ge", modulation_kwargs={"alpha": 1, "mode": "update"})
    method = build_modulation("ogm_ge", model, args)
    assert method.config.alpha == 1.0 and isinstance(method.config.alpha, float) and method.mode == "update"
    # An int is a valid float; every method's defaults are a valid Config.
    for cls in MODULATIONS.values():
        cls.make_config({})
