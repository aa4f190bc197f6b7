"""InfoReg: the Fisher-information measure, the acquisition rate and the regulation coefficients
against hand computations; the decoupled pull toward the anchor; end to end, after one step the
dominant encoder is the multitask step pulled back by `lr * beta`, the others untouched."""

from __future__ import annotations

import math

import pytest
from tiny import TEXT_NO_DROPOUT
import torch
from torch import nn

from aim_hf import AIMTrainer
from aim_hf.modulation.inforeg import acquisition_rates, fisher_trace, regulation_coefficients
from aim_hf.modulation.mechanics import EncoderAnchors

MODALITIES = ("vision", "audio", "text")
LR = 0.3  # large, so that lr * beta (about 0.5) is far from 0 and the pull far from rounding


def test_fisher_trace_is_the_sum_of_each_weights_mean_squared_gradient():
    grads = [torch.tensor([[1.0, -2.0], [0.0, 3.0]]), torch.tensor([2.0, 2.0, -2.0])]
    # (1 + 4 + 0 + 9) / 4 + (4 + 4 + 4) / 3 = 3.5 + 4
    assert fisher_trace(grads).item() == pytest.approx(7.5)


def test_acquisition_rate_compares_the_last_window_with_the_one_before():
    window = 2
    # Only the leading zeros: the window is open (rate 1), as at the reference's first epoch.
    assert acquisition_rates(torch.zeros(2, 2, dtype=torch.float64), window).tolist() == [1.0, 1.0]
    history = torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 4.0], [4.0, 4.0], [6.0, 0.0]], dtype=torch.float64)
    # Modality 0: recent mean (4 + 6) / 2 = 5, before (2 + 4) / 2 = 3: (5 - 3) / 5. Modality 1: recent
    # (4 + 0) / 2 = 2, before 4: (2 - 4) / 2 = -1 (acquiring less and less).
    assert acquisition_rates(history, window).tolist() == pytest.approx([0.4, -1.0])
    stalled = torch.zeros(4, 1, dtype=torch.float64)
    assert acquisition_rates(stalled, window).tolist() == [0.0]


def test_regulation_coefficients_slow_the_stronger_modalities_inside_their_window():
    scores = torch.tensor([3.0, 2.0, 1.5, 2.5])
    rates = torch.tensor([0.5, 0.5, 0.5, 0.01])
    gaps, coeffs = regulation_coefficients(scores, rates, mu=0.95, threshold=0.05)
    # Each modality's mean lead over the weaker ones: 3 over (2, 1.5, 2.5); 2 over 1.5; none; 2.5 over (2, 1.5).
    assert gaps.tolist() == pytest.approx([(1.0 + 1.5 + 0.5) / 3, 0.5, 0.0, (0.5 + 1.0) / 2])
    expected = [0.95 * math.exp(math.tanh(1.0)), 0.95 * math.exp(math.tanh(0.5)), 0.0, 0.0]  # 4th: window closed
    assert coeffs.tolist() == pytest.approx(expected)
    # Two modalities: the stronger alone, with the paper's gap s_a - s_v.
    gaps, coeffs = regulation_coefficients(torch.tensor([1.0, 1.75]), torch.ones(2), mu=0.5, threshold=0.05)
    assert gaps.tolist() == [0.0, 0.75] and coeffs.tolist() == pytest.approx([0.0, 0.5 * math.exp(math.tanh(0.75))])


class TwoEncoders(nn.Module):
    """Stands in for a MultimodalModel: what EncoderAnchors reads is `encoders`."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({"a": nn.Linear(2, 1, bias=False), "b": nn.Linear(2, 1, bias=False)})


@pytest.mark.parametrize("orthogonal", [False, True])
def test_pull_toward_the_anchor_by_hand(orthogonal):
    model = TwoEncoders()
    with torch.no_grad():
        model.encoders["a"].weight.copy_(torch.tensor([[1.0, 2.0]]))
    anchors = EncoderAnchors(model, ["a", "b"])
    assert anchors.refresh_due(0, period=3) and not anchors.refresh_due(2, period=3)
    optimizer = torch.optim.SGD([{"params": model.encoders["a"].parameters(), "lr": 0.1},
                                 {"params": model.encoders["b"].parameters(), "lr": 0.2}])  # fmt: skip
    with torch.no_grad():
        model.encoders["a"].weight.copy_(torch.tensor([[3.0, 2.0]]))  # d = theta - anchor = (2, 0)
    model.encoders["a"].weight.grad = torch.tensor([[1.0, 1.0]])
    before_b = model.encoders["b"].weight.detach().clone()
    anchors.pull(optimizer, {"a": 2.0}, orthogonal=orthogonal)
    # Orthogonal: d - (d . g / |g|^2) g = (2, 0) - (2 / 2) (1, 1) = (1, -1). theta - 0.1 * 2 * d.
    d = torch.tensor([[1.0, -1.0]]) if orthogonal else torch.tensor([[2.0, 0.0]])
    torch.testing.assert_close(model.encoders["a"].weight.detach(), torch.tensor([[3.0, 2.0]]) - 0.2 * d)
    assert torch.equal(model.encoders["b"].weight.detach(), before_b)
    assert anchors.refresh_due(3, period=3)  # a new period: the anchors are the current parameters
    torch.testing.assert_close(anchors.values["a"]["weight"], model.encoders["a"].weight.detach())


def one_step(build_model, build_processor, build_dataset, make_args, method, fusion, tmp_path):
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    trainer = AIMTrainer(
        model=model,
        args=make_args(modulation=method, modulation_start=0, max_steps=1, per_device_train_batch_size=6,
                       output_dir=tmp_path / method, optim="sgd", learning_rate=LR, logging_steps=1),
        train_dataset=build_dataset(12, MODALITIES, informative=("vision",)),
        processing_class=build_processor(MODALITIES),
    )  # fmt: skip
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    return initial, final, trainer.state.log_history[0]


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_one_step_pulls_each_regulated_encoder_back_by_lr_beta(
    build_model, build_processor, build_dataset, make_args, fusion, tmp_path
):
    """At the first step the anchor is the initial model: a regulated encoder ends at
    `theta_0 + (1 - lr * beta) * (theta_multitask - theta_0)`; every other parameter as under the
    same multitask loss without regulation (`unimodal_losses`)."""
    fixtures = (build_model, build_processor, build_dataset, make_args)
    initial, plain, _ = one_step(*fixtures, "unimodal_losses", fusion, tmp_path)
    same, final, log = one_step(*fixtures, "inforeg", fusion, tmp_path)
    assert all(torch.equal(same[n], initial[n]) for n in initial)
    coeffs = {m: log[f"inforeg/coeff/{m}"] for m in MODALITIES}
    assert sum(c > 0 for c in coeffs.values()) == 2  # three modalities: all but the weakest
    assert log["inforeg/rate/vision"] == 1.0  # the window is open from the start
    for name in initial:
        owner = next((m for m in MODALITIES if name.startswith(f"encoders.{m}.")), None)
        keep = 1 - LR * coeffs[owner] if owner else 1.0
        # Compare the updates (not the parameters, whose size would hide an error in the pull).
        update, expected = (final[name] - initial[name]).double(), keep * (plain[name] - initial[name]).double()
        torch.testing.assert_close(update, expected, rtol=1e-3, atol=2e-7, msg=lambda s: f"{name}: {s}")
