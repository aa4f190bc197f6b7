"""MLA: each step trains one modality, in turn, through the shared head, for every fusion; the
head's gradient is projected orthogonal to the previous step's; the entropy-weighted evaluation
fusion against a hand computation and in the trainer's evaluation."""

from __future__ import annotations

import math

import pytest
from tiny import TEXT_NO_DROPOUT
import torch
import torch.nn.functional as F

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modulation import build_modulation
from aim_hf.modulation.base import HookContext
from aim_hf.modulation.mla import entropy_weighted_logits, unimodal_head_logits

MODALITIES = ("vision", "audio", "text")


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_each_step_trains_one_modality_through_the_shared_head(
    build_model, build_processor, build_dataset, make_args, fusion
):
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    model.train()
    trainer = AIMTrainer(model, args=make_args(modulation="mla"))
    trainer.state.global_step = 4  # 4 % 3: the second modality's turn
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(6, MODALITIES)))
    seen = {}
    handle = model.fusion.register_forward_pre_hook(lambda module, args: seen.update(args[0]))
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    handle.remove()
    final = {m: outputs.depth_features[m][-1] for m in MODALITIES}
    assert torch.equal(seen["audio"], final["audio"])
    assert all(torch.equal(seen[m], torch.zeros_like(final[m])) for m in ("vision", "text"))
    with torch.no_grad():
        alone = unimodal_head_logits(model, {m: f.detach() for m, f in final.items()})["audio"]
    torch.testing.assert_close(outputs.fused_loss, F.cross_entropy(alone, batch["labels"]))
    loss.backward()
    trainer.modulation.on_gradients_ready(HookContext(model=model, step=4, max_steps=10))
    assert all(p.grad is None for m in ("vision", "text") for p in model.encoders[m].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["audio"].parameters())


def test_head_gradient_is_projected_orthogonal_to_the_previous_steps(build_model, make_args):
    model = build_model(("vision", "audio"))
    head = list(model.fusion.parameters())
    sizes = [p.numel() for p in head]
    torch.manual_seed(0)
    g1, g2 = torch.randn(sum(sizes)), torch.randn(sum(sizes))

    def step(mla, g, global_step):
        for p, piece in zip(head, g.split(sizes)):
            p.grad = piece.view_as(p).clone()
        ctx = HookContext(model=model, step=global_step, max_steps=10)
        mla.on_gradients_ready(ctx)
        return torch.cat([p.grad.reshape(-1) for p in head]), ctx.metrics

    mla = build_modulation("mla", model, make_args(modulation="mla"))
    first, metrics = step(mla, g1, 0)
    assert torch.equal(first, g1) and "mla/head_cos" not in metrics  # nothing to project on yet
    second, metrics = step(mla, g2, 1)
    expected = g2 - (g2 @ g1) / (g1 @ g1) * g1
    torch.testing.assert_close(second, expected)
    assert abs(second @ g1) < 1e-4 * g1.norm() * g2.norm()
    assert metrics["mla/head_cos"] == pytest.approx(((g2 @ g1) / (g1.norm() * g2.norm())).item(), rel=1e-5)
    torch.testing.assert_close(mla.state_dict()["prev_head_grad"], g2)  # the raw gradient, before projection

    args = make_args(modulation="mla", modulation_kwargs={"gradient_projection": False})
    plain = build_modulation("mla", model, args)
    step(plain, g1, 0)
    assert torch.equal(step(plain, g2, 1)[0], g2)


def test_entropy_weights_match_hand_computation():
    confident, uniform = torch.tensor([[2.0, 0.0, 0.0]]), torch.zeros(1, 3)
    logits, weights = entropy_weighted_logits({"a": confident, "b": uniform})
    p = torch.tensor([math.exp(2), 1.0, 1.0]) / (math.exp(2) + 2)
    h_a, h_b = -(p * p.log()).sum().item(), math.log(3)
    w_a = math.exp(-h_a) / (math.exp(-h_a) + math.exp(-h_b))
    assert weights[0].tolist() == pytest.approx([w_a, 1 - w_a], rel=1e-5)
    torch.testing.assert_close(logits, w_a * confident, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eval_fusion", ["entropy", "model"])
def test_evaluation_uses_the_entropy_weighted_fusion(
    build_model, build_processor, build_dataset, make_args, eval_fusion
):
    model = build_model(MODALITIES, encoder_kwargs=TEXT_NO_DROPOUT)
    model.eval()
    args = make_args(modulation="mla", modulation_kwargs={"eval_fusion": eval_fusion})
    trainer = AIMTrainer(model, args=args)
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(6, MODALITIES)))
    with torch.no_grad():
        plain = model(**batch)
        loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    if eval_fusion == "model":
        torch.testing.assert_close(outputs.logits, plain.logits)
        torch.testing.assert_close(loss, plain.loss)
        return
    final = {m: plain.depth_features[m][-1] for m in MODALITIES}
    expected, _ = entropy_weighted_logits(unimodal_head_logits(model, final))
    torch.testing.assert_close(outputs.logits, expected)
    fused = F.cross_entropy(expected, batch["labels"])
    torch.testing.assert_close(loss, plain.loss - plain.fused_loss + fused)


def test_a_modulation_window_is_refused(build_model, make_args):
    with pytest.raises(ValueError, match="mla alternates modalities for the whole training"):
        build_modulation("mla", build_model(("vision", "audio")), make_args(modulation="mla", modulation_end=5))
