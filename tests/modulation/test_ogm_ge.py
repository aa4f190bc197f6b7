"""OGM-GE: scores, ratio and coefficient against the formula; gradient and update modulation under
SGD and AdamW; the mode `auto` picks and the warning for a cancelled modulation; GE's noise; window."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from hooks import forward_end, gradients_ready

from aim_hf import AIMTrainer
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation, ogm_ge
from aim_hf.modulation.ogm_ge import add_gradient_noise, ogm_coefficients

# Vision confident and right, audio uniform: vision dominates.
DOMINANT_VISION = MultimodalOutput(
    modality_logits={"vision": torch.tensor([[3.0, 0.0, 0.0]]), "audio": torch.zeros(1, 3)}
)


def test_coefficient_matches_formula_on_hand_computed_batch(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    args = make_args(modulation="ogm_ge", modulation_kwargs={"alpha": 0.8, "noise": False, "mode": "gradient"})
    ogm = build_modulation("ogm_ge", model, args)
    labels = torch.tensor([0, 1])
    # Vision is confident and right, audio uniform: softmax true-class probabilities by hand.
    vision = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    audio = torch.zeros(2, 3)
    outputs = MultimodalOutput(modality_logits={"vision": vision, "audio": audio})
    forward_end(ogm, outputs, labels)
    s_v = math.exp(2) / (math.exp(2) + 2) + math.exp(1) / (math.exp(1) + 2)
    s_a = 2 / 3
    rho = s_v / s_a
    k = 1 - math.tanh(0.8 * rho)

    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    metrics = gradients_ready(ogm, step=0, max_steps=10).metrics
    assert math.isclose(metrics["ogm/ratio/vision"], rho, rel_tol=1e-5)
    assert math.isclose(metrics["ogm/coeff/vision"], k, rel_tol=1e-5)
    assert metrics["ogm/coeff/audio"] == 1.0
    assert all(torch.allclose(p.grad, torch.full_like(p, k)) for p in model.encoders["vision"].parameters())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders["audio"].parameters())


def test_scores_accumulate_over_micro_batches(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    ogm = build_modulation("ogm_ge", model, make_args(modulation="ogm_ge", modulation_kwargs={"noise": False}))
    torch.manual_seed(0)
    logits = {m: torch.randn(8, 3) for m in ("vision", "audio")}
    labels = torch.randint(0, 3, (8,))
    for half in (slice(0, 4), slice(4, 8)):
        forward_end(ogm, MultimodalOutput(modality_logits={m: v[half] for m, v in logits.items()}), labels[half])
    metrics = gradients_ready(ogm, 0, 10).metrics
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
        ogm = build_modulation("ogm_ge", model, make_args(modulation="ogm_ge", modulation_kwargs=kw))
        for p in model.encoders.parameters():
            p.grad = torch.linspace(-1, 1, p.numel()).view_as(p).clone()
        forward_end(ogm, outputs, labels)
        gradients_ready(ogm, step=3, max_steps=10)
        return [p.grad.clone() for p in model.encoders.parameters()]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    base = [torch.linspace(-1, 1, p.numel()).view_as(p) for p in model.encoders.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(first, base))
    # The reference's conv-only option leaves a transformer's (non-4-D) gradients untouched.
    conv_only = run(conv_only=True)
    assert all(torch.equal(a, b) for a, b in zip(conv_only, base) if a.dim() != 4)


@pytest.mark.parametrize(
    "window, step, active",
    [
        ({"modulation_start": 5}, 4, False),
        # The default window is the reference's, epochs 0-50 of 100: the first half of the 10 steps.
        ({}, 0, True),
        ({}, 4, True),
        ({}, 5, False),
        ({}, 9, False),
        # The user's modulation_end replaces the method's.
        ({"modulation_end": 0.8}, 7, True),
        ({"modulation_end": 0.8}, 8, False),
        ({"modulation_end": 1e9}, 9, True),
    ],
)
def test_scales_gradients_only_inside_its_window(build_model, make_args, window, step, active):
    model = build_model(modalities=("vision", "audio"))
    args = make_args(modulation="ogm_ge", modulation_kwargs={"noise": False}, **window)
    ogm = build_modulation("ogm_ge", model, args)
    forward_end(
        ogm,
        MultimodalOutput(modality_logits={"vision": torch.tensor([[5.0, 0, 0]]), "audio": torch.zeros(1, 3)}),
        torch.tensor([0]),
    )
    for p in model.encoders.parameters():
        p.grad = torch.ones_like(p)
    metrics = gradients_ready(ogm, step=step, max_steps=10).metrics
    assert metrics["ogm/active"] == float(active)
    # Vision dominates, so inside the window its gradients shrink by k < 1; the weak audio's stay.
    vision = [torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders["vision"].parameters()]
    assert not any(vision) if active else all(vision)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders["audio"].parameters())


@pytest.mark.parametrize("noise_scale", [1.0, 0.1])
@pytest.mark.parametrize("chunk", [1 << 18, 3000])
def test_gradient_noise_has_each_tensors_own_std_before_scaling(monkeypatch, chunk, noise_scale):
    """GE's noise, drawn for many tensors at once (or, past the chunk size, alone), has mean 0 and
    `noise_scale` times the std of each tensor's own gradient taken before the gradient is scaled."""
    # 3000: the two 4000-element tensors are noised alone, the last two in one draw.
    monkeypatch.setattr(ogm_ge, "NOISE_CHUNK", chunk)
    torch.manual_seed(0)
    grads = [torch.randn(4000) * 1e-3, torch.randn(80, 50) * 10.0 + 3.0, torch.randn(3, 3), torch.randn(2000).bfloat16()]
    scales = [0.1, 1.0, 0.5, 0.25]
    before = [g.clone() for g in grads]
    generator = torch.Generator().manual_seed(0)
    add_gradient_noise(grads, generator, scales, noise_scale)
    for g, b, k in zip(grads, before, scales):
        noise = g.float() - k * b.float()
        assert g.dtype == b.dtype and noise.abs().sum() > 0
        if noise.numel() >= 1000:
            assert noise.std().item() == pytest.approx(noise_scale * b.float().std().item(), rel=0.1)
            assert abs(noise.mean().item()) < 0.1 * noise_scale * b.float().std().item()


@pytest.mark.parametrize("mode, noise_scale", [("gradient", 1.0), ("update", 0.1)])
def test_ge_noise_uses_the_gradient_before_scaling(build_model, make_args, mode, noise_scale):
    """In gradient mode the dominant encoder's gradient becomes `k * g + N(0, std(g))` (the reference),
    in update mode `g + N(0, (0.1 std(g))^2)` (k goes to the learning rate); the other modality's
    gradient gets its noise unscaled."""
    model = build_model(modalities=("vision", "audio"))
    ogm = build_modulation("ogm_ge", model, make_args(modulation="ogm_ge", modulation_kwargs={"mode": mode}))
    torch.manual_seed(0)
    for p in model.encoders.parameters():
        p.grad = torch.randn_like(p) * 3.0
    before = {n: p.grad.clone() for n, p in model.encoders.named_parameters()}
    forward_end(ogm, DOMINANT_VISION, torch.tensor([0]))
    ctx = gradients_ready(ogm, step=0, max_steps=10)
    metrics = ctx.metrics
    k = metrics["ogm/coeff/vision"]
    assert k < 0.5 and metrics["ogm/coeff/audio"] == 1.0
    scale = {"vision": k if mode == "gradient" else 1.0, "audio": 1.0}
    for name, p in model.encoders.named_parameters():
        if p.numel() >= 1000:
            g = before[name]
            noise = p.grad - scale[name.split(".")[0]] * g
            assert noise.std().item() == pytest.approx(noise_scale * g.std().item(), rel=0.1), name
    assert ctx.lr_scales == ({"vision": k} if mode == "update" else {})


def optimizer_step(build_model, make_args, modulated: bool, mode: str, **args):
    """One optimizer step of a fresh AIMTrainer's optimizer on fixed random gradients, through the
    trainer's hooks; with `modulated`, OGM's forward hook first sees vision dominate, then the
    trainer's end of step (`on_gradients_ready`) runs at step 0 of 10. Returns the parameter
    deltas, the gradients the optimizer saw, the trainer, OGM's metrics, and the groups' learning
    rates right after the optimizer's step and after the scheduler's."""
    model = build_model(modalities=("vision", "audio"))
    kwargs = {"noise": False, "mode": mode}
    trainer = AIMTrainer(model, args=make_args(modulation="ogm_ge", modulation_kwargs=kwargs, max_steps=10, **args))
    optimizer = trainer.create_optimizer()
    scheduler = trainer.create_scheduler(10, optimizer)
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    metrics = {}
    if modulated:
        forward_end(trainer.modulation, DOMINANT_VISION, torch.tensor([0]))
        trainer.state.max_steps = 10  # as train() sets it
        trainer._end_of_step()
        metrics = {key: values[-1] for key, values in trainer._metrics.items()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    handler = trainer.callback_handler
    handler.on_pre_optimizer_step(trainer.args, trainer.state, trainer.control)
    optimizer.step()
    handler.on_optimizer_step(trainer.args, trainer.state, trainer.control)
    lrs = [[group["lr"] for group in optimizer.param_groups]]
    scheduler.step()
    lrs.append([group["lr"] for group in optimizer.param_groups])
    deltas = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    return deltas, grads, trainer, metrics, lrs


@pytest.mark.parametrize(
    "optim, mode, resolved",
    [("adamw_torch", "update", "update"), ("adamw_torch", "auto", "update"),
     ("sgd", "gradient", "gradient"), ("sgd", "auto", "gradient")],
)  # fmt: skip
def test_dominant_encoder_update_is_k_times_the_plain_update(build_model, make_args, optim, mode, resolved):
    """Same state, same gradients: the dominant (vision) encoder's parameter update is k times the
    unmodulated one, under AdamW (update mode: Adam would cancel a gradient factor) and under SGD
    without momentum (gradient mode); the audio encoder and the heads move as without modulation.
    The learning rates are back to the scheduler's after the step. (SGD's weight decay is added to
    the gradient after OGM scales it, so the SGD runs have none.)"""
    args = dict(optim=optim, mode=mode, weight_decay=0.01 if optim.startswith("adamw") else 0.0)
    plain, plain_grads, _, _, plain_lrs = optimizer_step(build_model, make_args, False, **args)
    deltas, grads, trainer, metrics, lrs = optimizer_step(build_model, make_args, True, **args)
    assert trainer.modulation.mode == resolved
    k = metrics["ogm/coeff/vision"]
    assert k < 0.5 and metrics["ogm/coeff/audio"] == 1.0
    for name, delta in deltas.items():
        expected = k * plain[name] if name.startswith("encoders.vision.") else plain[name]
        # float32 parameters of size ~1 resolve deltas to about 1e-7.
        torch.testing.assert_close(delta, expected, rtol=1e-3, atol=1e-7, msg=lambda m: f"{name}: {m}")
        # Update mode leaves the gradients alone; gradient mode scaled the dominant encoder's.
        if resolved == "update" or not name.startswith("encoders.vision."):
            assert torch.equal(grads[name], plain_grads[name]), name
    assert any(d.abs().sum() > 0 for n, d in deltas.items() if n.startswith("encoders.vision."))
    assert lrs[0] == [trainer.args.learning_rate] * len(lrs[0])  # restored before the scheduler steps
    assert lrs == plain_lrs and lrs[1][0] < lrs[0][0]


def test_optimizer_groups_each_encoder_apart_and_keep_the_weight_decay_split(build_model, make_args):
    model = build_model(modalities=("vision", "audio", "text"))
    trainer = AIMTrainer(model, args=make_args(modulation="ogm_ge", weight_decay=0.1))
    groups = trainer.create_optimizer().param_groups
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    for m in model.modalities:
        mine = [g for g in groups if g["modality"] == m]
        assert [g["weight_decay"] for g in mine] == [0.1, 0.0]
        assert set().union(*(ids(g["params"]) for g in mine)) == ids(model.encoders[m].parameters())
    rest = [g for g in groups if g["modality"] is None]
    heads = list(model.fusion.parameters()) + list(model.probes.parameters())
    assert set().union(*(ids(g["params"]) for g in rest)) == ids(heads)
    decay = set(trainer.get_decay_parameter_names(model))
    by_id = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        assert all((by_id[id(p)] in decay) == (g["weight_decay"] > 0) for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_update_mode_needs_tagged_groups(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    trainer = AIMTrainer(
        model,
        args=make_args(modulation="ogm_ge", modulation_kwargs={"mode": "update"}),
        optimizers=(torch.optim.AdamW(model.parameters()), None),
    )
    with pytest.raises(ValueError, match=r"tagged 'modality' for \['vision', 'audio'\]"):
        trainer.create_optimizer()


@pytest.mark.parametrize(
    "optim, mode, warns",
    [("adamw_torch", "gradient", True), ("adamw_torch", "auto", False), ("adamw_torch", "update", False),
     ("sgd", "gradient", False), ("adafactor", "gradient", True)],
)  # fmt: skip
def test_warns_once_when_the_optimizer_cancels_gradient_scaling(build_model, make_args, caplog, optim, mode, warns):
    logging.Logger.warning_once.cache_clear()
    model = build_model(modalities=("vision", "audio"))
    trainer = AIMTrainer(model, args=make_args(modulation="ogm_ge", modulation_kwargs={"mode": mode}, optim=optim))
    with caplog.at_level(logging.WARNING, logger="aim_hf.trainer"):
        trainer.create_optimizer()
        trainer.create_optimizer()
    records = [r for r in caplog.records if "mode='update'" in r.getMessage()]
    assert len(records) == int(warns)
    if warns:
        assert "does almost nothing" in records[0].getMessage()
