"""OGM-GE: scores, ratio and coefficient against the formula; gradient modulation; window."""

from __future__ import annotations

import math

import pytest
import torch

from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation, ogm_ge
from aim_hf.modulation.ogm_ge import add_gradient_noise, ogm_coefficients


def test_coefficient_matches_formula_on_hand_computed_batch(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    args = make_args(modulation="ogm_ge", ogm_alpha=0.8, ogm_noise=False)
    ogm = build_modulation("ogm_ge", model, args)
    labels = torch.tensor([0, 1])
    # Vision is confident and right, audio uniform: softmax true-class probabilities by hand.
    vision = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    audio = torch.zeros(2, 3)
    outputs = MultimodalOutput(modality_logits={"vision": vision, "audio": audio})
    ogm.compute_loss(outputs, labels)
    s_v = math.exp(2) / (math.exp(2) + 2) + math.exp(1) / (math.exp(1) + 2)
    s_a = 2 / 3
    rho = s_v / s_a
    k = 1 - math.tanh(0.8 * rho)

    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    metrics = ogm.step(model, global_step=0, max_steps=10)
    assert math.isclose(metrics["ogm/ratio/vision"], rho, rel_tol=1e-5)
    assert math.isclose(metrics["ogm/coeff/vision"], k, rel_tol=1e-5)
    assert metrics["ogm/coeff/audio"] == 1.0
    assert all(torch.allclose(p.grad, torch.full_like(p, k)) for p in model.encoders["vision"].parameters())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders["audio"].parameters())


def test_scores_accumulate_over_micro_batches(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    ogm = build_modulation("ogm_ge", model, make_args(modulation="ogm_ge", ogm_noise=False))
    torch.manual_seed(0)
    logits = {m: torch.randn(8, 3) for m in ("vision", "audio")}
    labels = torch.randint(0, 3, (8,))
    for half in (slice(0, 4), slice(4, 8)):
        ogm.compute_loss(MultimodalOutput(modality_logits={m: v[half] for m, v in logits.items()}), labels[half])
    metrics = ogm.step(model, 0, 10)
    expected = {m: v.softmax(-1)[torch.arange(8), labels].mean().item() for m, v in logits.items()}
    for m in expected:
        assert math.isclose(metrics[f"ogm/score/{m}"], expected[m], rel_tol=1e-5)


def test_three_modalities_compare_with_mean_of_others():
    ratios, coeffs = ogm_coefficients(torch.tensor([0.9, 0.3, 0.3]), alpha=0.5)
    assert math.isclose(ratios[0].item(), 3.0, rel_tol=1e-6)
    assert math.isclose(coeffs[0].item(), 1 - math.tanh(1.5), rel_tol=1e-6)
    assert coeffs[1].item() == coeffs[2].item() == 1.0


def test_noise_is_seeded_by_step_and_conv_only_skips_transformers(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    outputs = MultimodalOutput(modality_logits={"vision": torch.randn(4, 3), "audio": torch.randn(4, 3)})
    labels = torch.tensor([0, 1, 2, 0])

    def run(**kw):
        ogm = build_modulation("ogm_ge", model, make_args(modulation="ogm_ge", **kw))
        for p in model.encoders.parameters():
            p.grad = torch.linspace(-1, 1, p.numel()).view_as(p).clone()
        ogm.compute_loss(outputs, labels)
        ogm.step(model, global_step=3, max_steps=10)
        return [p.grad.clone() for p in model.encoders.parameters()]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    base = [torch.linspace(-1, 1, p.numel()).view_as(p) for p in model.encoders.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(first, base))
    # The reference's conv-only option leaves a transformer's (non-4-D) gradients untouched.
    conv_only = run(ogm_conv_only=True)
    assert all(torch.equal(a, b) for a, b in zip(conv_only, base) if a.dim() != 4)


def test_inactive_outside_window(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    ogm = build_modulation("ogm_ge", model, make_args(modulation="ogm_ge", modulation_start=5, ogm_noise=False))
    ogm.compute_loss(
        MultimodalOutput(modality_logits={"vision": torch.tensor([[5.0, 0, 0]]), "audio": torch.zeros(1, 3)}),
        torch.tensor([0]),
    )
    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    metrics = ogm.step(model, global_step=4, max_steps=10)
    assert metrics["ogm/active"] == 0.0
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders.parameters())


@pytest.mark.parametrize("chunk", [1 << 18, 3000])
def test_gradient_noise_has_each_tensors_own_std(monkeypatch, chunk):
    """GE's noise, drawn for many tensors at once (or, past the chunk size, alone), has mean 0 and the
    std of each tensor's own gradient."""
    # 3000: the two 4000-element tensors are noised alone, the last two in one draw.
    monkeypatch.setattr(ogm_ge, "NOISE_CHUNK", chunk)
    torch.manual_seed(0)
    grads = [torch.randn(4000) * 1e-3, torch.randn(80, 50) * 10.0 + 3.0, torch.randn(3, 3), torch.randn(2000).bfloat16()]
    before = [g.clone() for g in grads]
    generator = torch.Generator().manual_seed(0)
    add_gradient_noise(grads, generator)
    for g, b in zip(grads, before):
        noise = (g - b).float()
        assert g.dtype == b.dtype and noise.abs().sum() > 0
        if noise.numel() >= 1000:
            assert noise.std().item() == pytest.approx(b.float().std().item(), rel=0.1)
            assert abs(noise.mean().item()) < 0.1 * b.float().std().item()
