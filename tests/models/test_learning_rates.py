"""`learning_rate_mapping`: per-module learning rates in the optimizer's groups, the scheduler, the command line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny import TINY_OPTIONS
from transformers import TrainerCallback

from aim_hf import AIMTrainer
from aim_hf.cli import main
from aim_hf.scripts.train import build_parser, parse_train_args

MODALITIES = ("vision", "audio", "text")


def _trainer(build_model, build_processor, build_dataset, make_args, **args):
    return AIMTrainer(
        model=build_model(MODALITIES),
        args=make_args(modulation="none", **args),
        train_dataset=build_dataset(12, MODALITIES),
        processing_class=build_processor(MODALITIES),
    )


def test_groups_carry_each_parameters_rate_owner_and_decay(build_model, build_processor, build_dataset, make_args):
    # The layer key comes before "text": text layers 0-1 take 1e-5, the rest of the text encoder 1e-4.
    mapping = {r"encoders\.text\.encoder\.layer\.[01]\..*": 1e-5, "text": 1e-4, r"fusion\..*": 1e-2}
    trainer = _trainer(
        build_model, build_processor, build_dataset, make_args, learning_rate_mapping=mapping, weight_decay=0.1
    )
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay = set(trainer.get_decay_parameter_names(trainer.model))

    def expected_lr(name: str) -> float:
        if re.fullmatch(r"encoders\.text\.encoder\.layer\.[01]\..*", name):
            return 1e-5
        if name.startswith("encoders.text."):
            return 1e-4
        return 1e-2 if name.startswith("fusion.") else 1e-3

    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            assert group["lr"] == pytest.approx(expected_lr(name)), name
            owner = name.split(".")[1] if name.startswith("encoders.") else None
            assert group["modality"] == owner, name
            assert group["weight_decay"] == (0.1 if name in decay else 0.0), name
    assert seen == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the logged learning_rate is the default one
    assert {g["lr"] for g in optimizer.param_groups if g["modality"] == "text"} == {1e-5, 1e-4}


def test_zero_rate_leaves_that_encoder_unchanged(build_model, build_processor, build_dataset, make_args):
    trainer = _trainer(
        build_model, build_processor, build_dataset, make_args, learning_rate_mapping={"vision": 0.0}, max_steps=1
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    assert not any(n.startswith("encoders.vision.") for n in changed)
    for moved in ("encoders.audio.", "encoders.text.", "fusion."):
        assert any(n.startswith(moved) for n in changed), moved


class _RecordRates(TrainerCallback):
    """Each optimizer step's learning rate of every group, as the step uses it."""

    def __init__(self) -> None:
        self.rates: list[dict[float, float]] = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append({g["initial_lr"]: g["lr"] for g in optimizer.param_groups})


def test_scheduler_scales_each_group_from_its_own_rate(build_model, build_processor, build_dataset, make_args):
    trainer = _trainer(
        build_model,
        build_processor,
        build_dataset,
        make_args,
        learning_rate_mapping={"vision": 1e-2, "audio": 0.0},
        lr_scheduler_type="linear",
        warmup_steps=2,
        max_steps=4,
    )
    record = _RecordRates()
    trainer.add_callback(record)
    trainer.train()
    factors = [0.0, 0.5, 1.0, 0.5]  # linear warm-up over 2 steps, then linear decay to 0 at step 4
    assert [sorted(r) for r in record.rates] == [[0.0, 1e-3, 1e-2]] * 4
    for rates, factor in zip(record.rates, factors, strict=True):
        assert rates == pytest.approx({base: base * factor for base in rates})


def test_command_line_json_and_yaml(tmp_path):
    mapping = {"audio": 1e-4, r"fusion\..*": 0.01}
    *_, args = parse_train_args(["--learning_rate_mapping", json.dumps(mapping)])
    assert args.learning_rate_mapping == mapping
    (tmp_path / "run.yaml").write_text("learning_rate_mapping:\n  audio: 1.0e-4\n  'fusion\\..*': 0.01\n")
    *_, args = parse_train_args([str(tmp_path / "run.yaml")])
    assert args.learning_rate_mapping == mapping
    training = build_parser().format_help().split("\ntraining:")[1]
    assert "--learning_rate_mapping" in training


@pytest.mark.parametrize(
    "mapping, message",
    [
        ('{"audio": -1}', "learning_rate_mapping['audio'] must be a learning rate >= 0, got -1."),
        ('{"(": 1}', "learning_rate_mapping key '(' is not a regular expression"),
        ('[1e-3]', "learning_rate_mapping must be a JSON object / mapping, got [0.001]."),
        ('{"speech": 1e-3}', "learning_rate_mapping key 'speech' takes no trainable parameter"),
        ('{"audio": 1e-3, "encoders\\\\.audio\\\\..*": 1e-2}', "key 'encoders\\\\.audio\\\\..*' takes no trainable"),
    ],
)  # fmt: skip
def test_bad_mappings_are_one_line_errors(mapping, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    argv = ["train", "--output_dir", str(tmp_path), *TINY_OPTIONS, "--learning_rate_mapping", mapping]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aim-hf train: error: ") and message in err and len(err.splitlines()) == 2
