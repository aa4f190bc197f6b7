"""AGM: for every fusion, the Shapley responses against the fusion's decomposition (the Shapley
values themselves: test_shapley.py); ratio, running target and coefficient against the formula over
two steps; gradient and update modes; the window."""

from __future__ import annotations

import math

import pytest
import torch
from hooks import forward_end, gradients_ready

from aim_hf import AIMTrainer
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation
from aim_hf.shapley import coalitions, shapley_values

MODALITIES = ("vision", "audio", "text")


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_responses_decompose_every_fusion(build_model, fusion):
    model = build_model(MODALITIES, fusion=fusion)
    torch.manual_seed(0)
    features = {m: torch.randn(5, 32) for m in MODALITIES}
    with torch.no_grad():
        logits = {c: model.fusion.logits_with(features, c) for c in coalitions(MODALITIES)}
        responses = shapley_values(logits, MODALITIES)
        full, shares = model.fusion(features)
        empty, _ = model.fusion({m: torch.zeros_like(f) for m, f in features.items()})
    # Efficiency: the responses add up to the fused logits less those of all-zero features.
    torch.testing.assert_close(sum(responses.values()), full - empty, atol=1e-5, rtol=1e-5)
    if fusion in ("concat", "sum"):  # additive fusions: the response is the share without its bias
        for m in MODALITIES:
            bias = model.fusion.fc.bias / 3 if fusion == "concat" else model.fusion.fc[m].bias
            torch.testing.assert_close(responses[m], shares[m] - bias, atol=1e-5, rtol=1e-5)


def _outputs(vision: torch.Tensor, audio: torch.Tensor) -> MultimodalOutput:
    return MultimodalOutput(depth_features={"vision": (vision,), "audio": (audio,)})


def _diagonal_head(model) -> None:
    """A concat head on which logit k of each modality is 2 * its feature's unit k (the bias drops out)."""
    with torch.no_grad():
        model.fusion.fc.weight.zero_()
        model.fusion.fc.bias.fill_(0.7)
        for k in range(3):
            model.fusion.fc.weight[k, k] = model.fusion.fc.weight[k, 32 + k] = 2.0


def _vision_right() -> torch.Tensor:
    """Vision features for labels [0, 1]: unit 0 = 1 for row 0, unit 1 = 0.5 for row 1."""
    vision = torch.zeros(2, 32)
    vision[0, 0], vision[1, 1] = 1.0, 0.5
    return vision


def test_coefficients_match_formula_over_two_steps(build_model, make_args):
    model = build_model(("vision", "audio"))
    _diagonal_head(model)
    args = make_args(modulation="agm", modulation_kwargs={"alpha": 0.5, "mode": "gradient"})
    agm = build_modulation("agm", model, args)
    labels = torch.tensor([0, 1])
    vision, audio = _vision_right(), torch.zeros(2, 32)  # vision right, audio uniform
    for rows in (slice(0, 1), slice(1, 2)):  # two micro-batches
        forward_end(agm, _outputs(vision[rows], audio[rows]), labels[rows])
    s_v = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(math.exp(1) / (math.exp(1) + 2))) / 2
    s_a = math.log(3)
    r_v, r_a = math.exp(s_a - s_v), math.exp(s_v - s_a)
    k_v, k_a = math.exp(0.5 * (1 - r_v)), math.exp(0.5 * (1 - r_a))  # first step: target ratio 1
    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    metrics = gradients_ready(agm, step=0, max_steps=10).metrics
    assert metrics["agm/score/vision"] == pytest.approx(s_v, rel=1e-5)
    assert metrics["agm/ratio/vision"] == pytest.approx(r_v, rel=1e-5)
    assert metrics["agm/coeff/vision"] == pytest.approx(k_v, rel=1e-5) and k_v < 1
    assert metrics["agm/coeff/audio"] == pytest.approx(k_a, rel=1e-5) and k_a > 1
    for m, k in (("vision", k_v), ("audio", k_a)):
        assert all(torch.allclose(p.grad, torch.full_like(p, k)) for p in model.encoders[m].parameters())

    # Second step, audio now as good as vision: the target is the first step's ratio.
    forward_end(agm, _outputs(vision, vision), labels)
    metrics = gradients_ready(agm, step=1, max_steps=10).metrics
    assert metrics["agm/ratio/vision"] == pytest.approx(1.0)
    assert metrics["agm/target_ratio/vision"] == pytest.approx(r_v, rel=1e-5)
    assert metrics["agm/coeff/vision"] == pytest.approx(math.exp(0.5 * (r_v - 1)), rel=1e-5)
    assert agm.state_dict()["score_steps"] == 2


def test_update_mode_scales_the_learning_rate_not_the_gradient(build_model, make_args):
    model = build_model(("vision", "audio"))
    _diagonal_head(model)
    trainer = AIMTrainer(model, args=make_args(modulation="agm", modulation_kwargs={"alpha": 1.0}))
    trainer.create_optimizer()  # AdamW: auto picks update mode
    agm = trainer.modulation
    assert agm.mode == "update"
    labels = torch.tensor([0, 1])
    forward_end(agm, _outputs(_vision_right(), torch.zeros(2, 32)), labels)
    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    ctx = gradients_ready(agm, step=0, max_steps=10)
    assert ctx.lr_scales == pytest.approx({m: ctx.metrics[f"agm/coeff/{m}"] for m in ("vision", "audio")})
    assert ctx.lr_scales["audio"] > 1 > ctx.lr_scales["vision"]
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders.parameters())
    sgd = AIMTrainer(build_model(("vision", "audio")), args=make_args(modulation="agm", optim="sgd"))
    sgd.create_optimizer()
    assert sgd.modulation.mode == "gradient"


def test_inactive_outside_window_still_tracks_the_scores(build_model, make_args):
    model = build_model(("vision", "audio"))
    agm = build_modulation("agm", model, make_args(modulation="agm", modulation_start=5))
    forward_end(agm, _outputs(torch.randn(2, 32) * 5, torch.zeros(2, 32)), torch.tensor([0, 1]))
    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    ctx = gradients_ready(agm, step=4, max_steps=10)
    metrics = ctx.metrics
    assert metrics["agm/active"] == 0.0 and metrics["agm/coeff/vision"] == 1.0 and ctx.lr_scales == {}
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders.parameters())
    assert agm.state_dict()["score_steps"] == 1
