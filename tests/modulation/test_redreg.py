"""RedReg: the growth rate, the redundancy phase monitor and the gate threshold against hand
computations (the orthogonal pull: tests/test_inforeg.py); end to end, the co-information gate, the
statistics of a step against the hand-computed whole batch, and the dominant encoder alone pulled."""

from __future__ import annotations

import math

import pytest
from tiny import TEXT_NO_DROPOUT
import torch
import torch.nn.functional as F

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modulation.base import HookContext
from aim_hf.modulation.redreg import gate_threshold, growth_rates, redundancy_phase

MODALITIES = ("vision", "audio", "text")


def test_growth_rate_by_hand():
    history = torch.tensor([[0.2, 0.5], [0.4, 0.5], [0.6, 0.4]], dtype=torch.float64)
    assert growth_rates(history[:2], window=2).tolist() == [1.0, 1.0]  # not more than W steps yet
    # Recent mean (0.4 + 0.6) / 2 = 0.5 against (0.2 + 0.4) / 2 = 0.3: 0.2 / 0.3; second: (0.45 - 0.5) / 0.5.
    assert growth_rates(history, window=2).tolist() == pytest.approx([2 / 3, -0.1])


def test_redundancy_phase_by_hand():
    coupling = torch.tensor([2.0, 1.0], dtype=torch.float64)
    ema = torch.tensor([1.0, 0.0], dtype=torch.float64)
    growth = torch.tensor([0.5, -0.3], dtype=torch.float64)
    ema, redundancy, phase = redundancy_phase(coupling, ema, growth, momentum=0.9, gamma=0.6)
    # ema: 0.9 * 1 + 0.1 * 2 = 1.1, and 0.1 (from 0, as the reference starts); red = c / ema.
    assert ema.tolist() == pytest.approx([1.1, 0.1])
    assert redundancy.tolist() == pytest.approx([2 / 1.1, 10.0])
    # Only a growing score lowers the phase score.
    assert phase.tolist() == pytest.approx([2 / 1.1 - 0.3, 10.0])


def test_gate_threshold_rises_linearly_over_training():
    assert [gate_threshold(0.2, 0.5, s, 4) for s in range(4)] == pytest.approx([0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize("gate_open", [True, False])
@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_step_statistics_gate_and_pull(build_model, build_processor, build_dataset, make_args, fusion, gate_open):
    """Two accumulated micro-batches: scores, coupling and agreement equal the hand-computed whole batch;
    the gate opens with a threshold just under the agreement and stays shut just above it; when open,
    only the dominant encoder is pulled, along the part of its drift orthogonal to its gradient."""
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(6, MODALITIES)))
    halves = [
        {k: ({kk: vv[rows] for kk, vv in v.items()} if isinstance(v, dict) else v[rows]) for k, v in batch.items()}
        for rows in (slice(0, 3), slice(3, 6))
    ]
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    model.train()
    with torch.no_grad():
        out = model(**batch)
    labels = batch["labels"]
    shares = {m: out.modality_logits[m].float() for m in MODALITIES}
    scores = {m: F.softmax(z, -1)[torch.arange(6), labels].mean().item() for m, z in shares.items()}
    dominant = max(scores, key=scores.get)
    others = [m for m in MODALITIES if m != dominant]
    agreement = sum(F.cosine_similarity(shares[dominant], shares[m], dim=-1).mean().item() for m in others) / 2
    coupling = {m: out.depth_features[m][-1].pow(2).mean().item() / shares[m].pow(2).mean().item() for m in MODALITIES}
    beta = math.exp(0.9 * math.tanh(scores[dominant] - sum(scores[m] for m in others) / 2))

    threshold = agreement + (-1e-3 if gate_open else 1e-3)
    kwargs = {"gate_start": threshold, "gate_end": threshold, "trigger": -100.0}  # the phase monitor always on
    args = make_args(modulation="redreg", gradient_accumulation_steps=2, modulation_kwargs=kwargs)
    trainer = AIMTrainer(model, args=args)
    for half in halves:
        (trainer.compute_loss(model, half) / 2).backward()
    ctx = HookContext(model=model, step=0, max_steps=10)
    trainer.modulation.on_gradients_ready(ctx)
    metrics = ctx.metrics
    for i, m in enumerate(MODALITIES):
        assert metrics[f"redreg/score/{m}"] == pytest.approx(scores[m], rel=1e-5)
        assert metrics[f"redreg/redundancy/{m}"] == pytest.approx(10.0, rel=1e-5)  # c / (0.1 c) at the first step
        assert trainer.modulation.ema[i].item() == pytest.approx(0.1 * coupling[m], rel=1e-4)
        assert metrics[f"redreg/coeff/{m}"] == pytest.approx(beta if gate_open and m == dominant else 0.0)
    assert metrics["redreg/agreement"] == pytest.approx(agreement, rel=1e-4, abs=1e-6)
    assert metrics["redreg/gate_open"] == float(gate_open)

    # The pull after an optimizer step: the dominant encoder alone, orthogonally to each gradient.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    anchors = trainer.modulation.anchors.values
    trainer.modulation.on_optimizer_step(HookContext(model=model, optimizer=optimizer))
    pulled = 0
    for name, p in model.named_parameters():
        if gate_open and name.startswith(f"encoders.{dominant}.") and p.requires_grad:
            d = params[name] - anchors[dominant][name.removeprefix(f"encoders.{dominant}.")]
            g = p.grad
            if g is not None and (g * g).sum() > 0:
                d = d - (d * g).sum() / (g * g).sum() * g
            torch.testing.assert_close(p.detach(), params[name] - 0.1 * beta * d, msg=lambda s: f"{name}: {s}")
            pulled += int(not torch.equal(p.detach(), params[name]))
        else:
            assert torch.equal(p.detach(), params[name]), name
    assert pulled > 0 if gate_open else pulled == 0
