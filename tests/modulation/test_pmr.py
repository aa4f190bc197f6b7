"""PMR: the coefficients, the prototypes (first mean, then EMA), the scores and the extra loss
against hand computations; with every fusion the loss on a real model is the hand-computed one."""

from __future__ import annotations

import math

import pytest
import torch
from hooks import forward_end, gradients_ready
from tiny import TEXT_NO_DROPOUT

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation
from aim_hf.modulation.pmr import pmr_coefficients

MODALITIES = ("vision", "audio", "text")


def test_coefficients_match_the_formula():
    ratios, beta, mu = pmr_coefficients(torch.tensor([0.6, 0.3]), alpha=0.6)
    assert ratios.tolist() == pytest.approx([2.0, 0.5])
    # The weak modality gets tanh(alpha * (1 / rho - 1)) on its PCE, the dominant one tanh(alpha * (rho - 1)).
    assert beta.tolist() == pytest.approx([0.0, math.tanh(0.6)]) and mu.tolist() == pytest.approx([math.tanh(0.6), 0.0])


def hand_terms(features: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor):
    """True-class prototype probabilities, PCE and mean entropy, by the definitions."""
    distances = ((features[:, None, :] - prototypes[None]) ** 2).sum(-1)
    probs = torch.exp(-distances) / torch.exp(-distances).sum(-1, keepdim=True)
    true = probs[torch.arange(len(labels)), labels]
    return true, -true.log().mean(), -(probs * probs.log()).sum(-1).mean()


def test_prototypes_scores_and_loss_match_hand_computation(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    pmr = build_modulation("pmr", model, make_args(modulation="pmr", modulation_kwargs={"alpha": 0.6, "momentum": 0.5}))
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    feats = [{m: 0.1 * torch.randn(6, 32, generator=gen) for m in ("vision", "audio")} for _ in range(3)]
    for fs in feats:  # vision separates the classes: it dominates
        fs["vision"][torch.arange(6), labels] += 0.5

    def micro_batches(step: int) -> list[torch.Tensor | None]:
        losses = []
        for rows in (slice(0, 4), slice(4, 6)):
            outputs = MultimodalOutput(depth_features={m: (f[rows],) for m, f in feats[step].items()})
            losses.append(forward_end(pmr, outputs, labels[rows]).loss)
        return losses

    means = [{m: torch.stack([f[labels == k].mean(0) for k in range(3)]) for m, f in fs.items()} for fs in feats]
    # Step 0: no prototype yet, so no loss; the prototypes become the class means.
    assert micro_batches(0) == [None, None] and gradients_ready(pmr, 0, 10).metrics == {}
    for m in ("vision", "audio"):
        torch.testing.assert_close(pmr.prototypes[m], means[0][m])
    # Step 1: weights still 0; scores with step 0's prototypes decide the next weights; EMA update.
    assert all(loss.item() == 0 for loss in micro_batches(1))
    metrics = gradients_ready(pmr, 1, 10).metrics
    scores = {m: hand_terms(feats[1][m], means[0][m], labels)[0].mean().item() for m in ("vision", "audio")}
    rho = scores["vision"] / scores["audio"]
    assert metrics["pmr/score/vision"] == pytest.approx(scores["vision"], rel=1e-5) and rho > 1
    assert metrics["pmr/mu/vision"] == pytest.approx(math.tanh(0.6 * (rho - 1)), rel=1e-5)
    rho_audio = 1 / rho
    assert metrics["pmr/beta/audio"] == pytest.approx(math.tanh(0.6 * (1 / rho_audio - 1)), rel=1e-5)
    assert metrics["pmr/beta/vision"] == metrics["pmr/mu/audio"] == 0.0
    prototypes = {m: 0.5 * means[0][m] + 0.5 * means[1][m] for m in ("vision", "audio")}
    for m in ("vision", "audio"):
        torch.testing.assert_close(pmr.prototypes[m], prototypes[m])
    # Step 2: L = beta_audio * PCE_audio - mu_vision * H_vision, per micro-batch.
    losses = micro_batches(2)
    for loss, rows in zip(losses, (slice(0, 4), slice(4, 6))):
        _, pce, _ = hand_terms(feats[2]["audio"][rows], prototypes["audio"], labels[rows])
        _, _, entropy = hand_terms(feats[2]["vision"][rows], prototypes["vision"], labels[rows])
        expected = metrics["pmr/beta/audio"] * pce - metrics["pmr/mu/vision"] * entropy
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("window, step, active", [({}, 52, True), ({}, 53, False), ({"modulation_end": 0.9}, 53, True)])
def test_weights_only_inside_the_window(build_model, make_args, window, step, active):
    """The reference's runs modulate until epoch 70 of 130: by default the weights are zero from 0.54 of
    the steps on (step 54 of 100), unless the user's modulation_end moves the end. A step sets the next
    step's weights."""
    model = build_model(modalities=("vision", "audio"))
    pmr = build_modulation("pmr", model, make_args(modulation="pmr", **window))
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for global_step in (step - 1, step):  # the first step makes the prototypes, the second scores with them
        feats = {m: 0.1 * torch.randn(6, 32, generator=gen) for m in ("vision", "audio")}
        feats["vision"][torch.arange(6), labels] += 0.5  # vision dominates
        forward_end(pmr, MultimodalOutput(depth_features={m: (f,) for m, f in feats.items()}), labels)
        metrics = gradients_ready(pmr, global_step, 100).metrics
    assert metrics["pmr/active"] == float(active) and metrics["pmr/ratio/vision"] > 1
    assert (metrics["pmr/beta/audio"] > 0) == active and (metrics["pmr/mu/vision"] > 0) == active


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_loss_on_a_real_model_trains_the_encoders(build_model, build_processor, build_dataset, make_args, fusion):
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    model.train()
    trainer = AIMTrainer(model, args=make_args(modulation="pmr"))
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(6, MODALITIES)))
    with torch.no_grad():
        features = {m: f[-1] for m, f in model(**batch).depth_features.items()}
    state = trainer.modulation.state_dict()
    # Each class's prototype near another class's mean (the tiny random BERT gives every text the same
    # feature: the offsets keep the prototypes apart), so that the PCE has a gradient.
    offsets = 0.1 * torch.eye(3, 32)
    wrong = lambda m, k: features[m][batch["labels"] == (k + 1) % 3].mean(0) + offsets[k]  # noqa: E731
    state["prototypes"] = {m: torch.stack([wrong(m, k) for k in range(3)]) for m in MODALITIES}
    state["seen"] = {m: torch.ones(3, dtype=torch.bool) for m in MODALITIES}
    state["beta"], state["mu"] = torch.tensor([0.0, 0.3, 0.2]), torch.tensor([0.4, 0.0, 0.0])
    trainer.modulation.load_state_dict(state)
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    extra = 0.0
    for i, m in enumerate(MODALITIES):
        _, pce, entropy = hand_terms(outputs.depth_features[m][-1], state["prototypes"][m], batch["labels"])
        extra = extra + state["beta"][i] * pce - state["mu"][i] * entropy
    torch.testing.assert_close(loss, outputs.loss + extra, rtol=1e-4, atol=1e-5)
    extra.backward()
    for m in MODALITIES:
        assert sum(p.grad.abs().sum() for p in model.encoders[m].parameters() if p.grad is not None) > 0, m
