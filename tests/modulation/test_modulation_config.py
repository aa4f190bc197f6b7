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


# ------------------------------------------------------------------------------------- AIM
def test_aim_options_reach_aim_alone_and_in_a_composition(build_model, make_args):
    _, _, args = parse_train_args(["--modulation", "aim", "--modulation_kwargs", '{"dam_cap": "none", "r_max": 1}'])
    aim = build_modulation("aim", build_model(modalities=("vision", "audio")), args)
    assert (aim.config.dam_cap, aim.config.r_max, aim.config.pam) == ("none", 1.0, "dominant")
    kwargs = {"aim": {"pam": "symmetric", "prototypes": "class_mean"}, "unimodal_losses": {"weight": 0.5}}
    args = make_args(modulation="aim+unimodal_losses", modulation_kwargs=kwargs)
    aim, unimodal = build_modulation(args.modulation, build_model(modalities=("vision", "audio")), args).members
    assert (aim.config.pam, aim.config.prototypes, aim.learned, unimodal.config.weight) == (
        "symmetric", "class_mean", False, 0.5,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, message",
    [({"r_max": 1.5}, "aim's r_max must lie in [0, 1], got 1.5"),
     ({"min_lambda": 1}, "aim's min_lambda must lie in [0, 1), got 1.0"),
     ({"momentum": -0.1}, "aim's momentum must lie in [0, 1), got -0.1"),
     ({"prototype_tokens": 0}, "aim's prototype_tokens must be >= 1, got 0"),
     ({"prototype_every": 0}, "aim's prototype_every must be >= 1, got 0"),
     ({"prototype_iters": -1}, "aim's prototype_iters must be >= 0, got -1"),
     ({"pam": "both"}, "'pam' of 'aim' must be Literal['dominant', 'symmetric'], got 'both'"),
     ({"dam_cap": "product"}, "'dam_cap' of 'aim' must be Literal['min', 'none'], got 'product'"),
     ({"prototype_every": 2.5}, "'prototype_every' of 'aim' must be int, got 2.5"),
     ({"aux_mode": "add"}, "['aux_mode'] are not options of 'aim'")],
)  # fmt: skip
def test_wrong_aim_options_fail_with_one_line_naming_the_option(kwargs, message):
    for modulation, given in (("aim", kwargs), ("aim+unimodal_losses", {"aim": kwargs})):
        with pytest.raises(ValueError) as info:
            parse_train_args(["--modulation", modulation, "--modulation_kwargs", json.dumps(given)])
        assert message in str(info.value) and "\n" not in str(info.value)


def test_deprecated_aim_parameters_warn_and_move_into_modulation_kwargs(tmp_path):
    """The former `aim_*` fields still work for one release, from the command line, a config file and
    Python: each warns with its new spelling and lands in `modulation_kwargs` (a composition's `aim`
    entry); the same option given both ways, or to a modulation without AIM, is refused."""
    with pytest.warns(FutureWarning, match=r'aim_dam_cap is deprecated .* use modulation_kwargs \{"dam_cap": "none"\}'):
        _, _, args = parse_train_args(["--aim_dam_cap", "none", "--aim_prototype_every", "5"])
    assert args.modulation_kwargs == {"dam_cap": "none", "prototype_every": 5} and args.aim_dam_cap is None
    (tmp_path / "old.yaml").write_text("modulation: aim+unimodal_losses\naim_alpha: 2.0\n")
    with pytest.warns(FutureWarning, match=r'use modulation_kwargs \{"aim": \{"alpha": 2.0\}\}'):
        _, _, args = parse_train_args([str(tmp_path / "old.yaml")])
    assert args.modulation_kwargs == {"aim": {"alpha": 2.0}}
    with pytest.warns(FutureWarning, match="AIM always uses mask_by='high'"):
        assert parse_train_args(["--aim_mask_by", "high"])[2].modulation_kwargs == {}
    refusals = [
        (["--aim_dam_cap", "none", "--modulation_kwargs", '{"dam_cap": "min"}'],
         "aim_dam_cap and modulation_kwargs both give 'dam_cap': keep modulation_kwargs {\"dam_cap\": \"none\"} only."),
        (["--modulation", "ogm_ge", "--aim_alpha", "2"], "aim_alpha is an option of AIM, which modulation 'ogm_ge'"),
        (["--aim_aux_mode", "replace"], "aim_aux_mode='replace' is no longer available"),
        (["--aim_r_max", "2"], "aim's r_max must lie in [0, 1], got 2.0"),
    ]  # fmt: skip
    for argv, message in refusals:
        with pytest.warns(FutureWarning), pytest.raises(ValueError) as info:
            parse_train_args(argv)
        assert message in str(info.value) and "\n" not in str(info.value)
