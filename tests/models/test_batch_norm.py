"""`aim-hf train --batch_norm`: what each policy does to a pretrained encoder's BatchNorm layers."""

from __future__ import annotations

import pytest
import torch
from transformers import MobileNetV2Config, MobileNetV2Model

from aim_hf.batch_norm import apply_batch_norm, check_batch_norm


def _mobilenet() -> MobileNetV2Model:
    torch.manual_seed(0)
    return MobileNetV2Model(MobileNetV2Config(image_size=16, depth_multiplier=0.25))


def _stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]


def _train_step(model: torch.nn.Module) -> None:
    model.train()
    model(pixel_values=3 + 2 * torch.randn(4, 3, 16, 16)).last_hidden_state.sum().backward()


def test_eval_policy_keeps_the_statistics_and_normalises_with_them():
    model = _mobilenet()
    before = _stats(model)
    assert apply_batch_norm(model, "eval") > 0
    _train_step(model)
    assert all(torch.equal(a, b) for a, b in zip(before, _stats(model)))
    model.train()  # a train-mode forward gives what an eval-mode one does: the stored statistics
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        trained = model(pixel_values=x).last_hidden_state
        evaluated = model.eval()(pixel_values=x).last_hidden_state
    assert torch.allclose(trained, evaluated)
    assert model.conv_stem.first_conv.normalization.weight.grad is not None  # scale and shift still train


def test_momentum_policy_and_as_loaded():
    loaded = _mobilenet()
    assert {m.momentum for m in loaded.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.997}
    before = _stats(loaded)
    apply_batch_norm(loaded, "as_loaded")
    _train_step(loaded)
    first = loaded.conv_stem.first_conv.normalization
    # transformers' momentum 0.997: one batch replaces nearly all of the stored statistics
    assert not torch.allclose(first.running_mean, before[0], atol=0.1)
    averaged = _mobilenet()
    apply_batch_norm(averaged, "0.1")
    assert {m.momentum for m in averaged.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    _train_step(averaged)
    batch_mean = (first.running_mean - 0.003 * before[0]) / 0.997  # the batch's mean, from the first model
    expected = 0.9 * before[0] + 0.1 * batch_mean
    assert torch.allclose(averaged.conv_stem.first_conv.normalization.running_mean, expected, atol=1e-5)


def test_check_batch_norm():
    assert check_batch_norm("eval") == "eval" and check_batch_norm("0.1") == "0.1"
    for bad in ("train", "1.5", "-0.1"):
        with pytest.raises(ValueError, match="--batch_norm must be 'as_loaded', 'eval' or a momentum in"):
            check_batch_norm(bad)
