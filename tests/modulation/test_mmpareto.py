"""MMPareto: the Pareto weights and the combined gradient against a hand computation (conflicting
and not); end to end, each encoder's gradient after two accumulated micro-batches equals the
combination of the hand-computed multimodal and unimodal gradients of the whole batch, for every
fusion with three modalities."""

from __future__ import annotations

import math

import pytest
from tiny import TEXT_NO_DROPOUT
import torch
import torch.nn.functional as F

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modulation.base import HookContext
from aim_hf.modulation.mmpareto import pareto_combine, pareto_weights

MODALITIES = ("vision", "audio", "text")


def test_conflicting_gradients_get_the_min_norm_weights_and_the_sums_norm():
    g_mm, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-0.5, 1.0])
    # dot = -1/2, |g_mm|^2 = 1, |g_u|^2 = 5/4: w_mm = (5/4 + 1/2) / (1 + 5/4 + 1) = 7/13.
    cos, w_mm, w_u = pareto_weights(g_mm, g_u)
    assert cos == pytest.approx(-0.5 / math.sqrt(1.25))
    assert (w_mm, w_u) == pytest.approx((7 / 13, 6 / 13))
    # Direction (4, 6) / 13, orthogonal to g_mm - g_u (min norm); rescaled to |g_mm + g_u| = sqrt(5) / 2.
    combined, _, _ = pareto_combine(g_mm, g_u)
    expected = torch.tensor([4.0, 6.0]) * (math.sqrt(5) / 2) / math.sqrt(52)
    torch.testing.assert_close(combined, expected)


def test_gradients_without_conflict_are_summed():
    g_mm, g_u = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert pareto_weights(g_mm, g_u) == pytest.approx((1 / math.sqrt(2), 0.5, 0.5))
    torch.testing.assert_close(pareto_combine(g_mm, g_u)[0], torch.tensor([2.0, 1.0]))


def flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """The gradient of `loss` over `params` as one vector (zeros where a parameter is unused)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def negate_shares(model) -> None:
    """Make each unimodal loss pull against the multimodal one (the shares' sign flipped for the
    unimodal losses only; the fused logits are untouched), so that the conflict branch runs."""
    model.fusion.register_forward_hook(lambda module, args, out: (out[0], {m: -z for m, z in out[1].items()}))


@pytest.mark.parametrize("loss_scale", [None, 1024.0])
@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_encoder_gradient_is_the_combination_of_the_hand_gradients(
    build_model, build_processor, build_dataset, make_args, fusion, loss_scale
):
    """`loss_scale`: an fp16-style GradScaler scales the backward (and the gradients the step sees)."""
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(6, MODALITIES)))
    halves = [
        {k: ({kk: vv[rows] for kk, vv in v.items()} if isinstance(v, dict) else v[rows]) for k, v in batch.items()}
        for rows in (slice(0, 3), slice(3, 6))
    ]

    # By hand, on the whole batch: g_mm from the fused loss, g_u from each modality's own loss.
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    negate_shares(model)
    model.train()
    outputs = model(**batch)
    labels = batch["labels"]
    expected, cosines = {}, {}
    for m in MODALITIES:
        params = list(model.encoders[m].parameters())
        unimodal = {v: F.cross_entropy(outputs.modality_logits[v], labels) for v in MODALITIES}
        # Gated/FiLM: the other modalities' unimodal losses reach encoder m too; they count with g_mm.
        others = sum(unimodal[v] for v in MODALITIES if v != m)
        g_mm = flat_grad(F.cross_entropy(outputs.logits, labels) + others, params)
        g_u = flat_grad(unimodal[m], params)
        cos = torch.dot(g_mm, g_u) / (g_mm.norm() * g_u.norm())
        if cos >= 0:
            w_mm = 0.5
        else:
            w_mm = (torch.dot(g_u, g_u) - torch.dot(g_mm, g_u)) / (g_mm - g_u).pow(2).sum()
        direction = w_mm * g_mm + (1 - w_mm) * g_u
        expected[m], cosines[m] = direction * (g_mm + g_u).norm() / direction.norm(), cos.item()
    assert min(cosines.values()) < 0  # the conflict branch is exercised

    # The method: two micro-batches, each loss divided by 2 (and scaled) as the trainer does, then the step.
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    negate_shares(model)
    model.train()
    trainer = AIMTrainer(model, args=make_args(modulation="mmpareto", gradient_accumulation_steps=2))
    scale = 1.0
    if loss_scale is not None:
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=loss_scale)
        scale = loss_scale
    for half in halves:
        (trainer.compute_loss(model, half) * scale / 2).backward()
    ctx = HookContext(model=model, step=0, max_steps=10, grad_scale=loss_scale)
    trainer.modulation.on_gradients_ready(ctx)
    metrics = ctx.metrics
    for m in MODALITIES:
        params = model.encoders[m].parameters()
        got = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        # g_mm = .grad - g_u cancels digits: float32 noise of about 1e-6.
        torch.testing.assert_close(got, expected[m] * scale, rtol=1e-4, atol=1e-5 * scale, msg=lambda s: f"{m}: {s}")
        assert metrics[f"mmpareto/cos/{m}"] == pytest.approx(cosines[m], rel=1e-4, abs=1e-6)
