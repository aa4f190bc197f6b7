"""unimodal_losses: the extra loss against a hand computation, its logged per-modality losses, and
its gradient reaching every encoder (features not detached) for every fusion with 3 modalities."""

from __future__ import annotations

import math

import pytest
from hooks import forward_end, gradients_ready
from tiny import TEXT_NO_DROPOUT
import torch
import torch.nn.functional as F

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation

MODALITIES = ("vision", "audio", "text")


def cross_entropy_by_hand(logits: list[list[float]], labels: list[int]) -> float:
    """Mean of -log softmax(z)[y] over the rows."""
    return sum(math.log(sum(math.exp(v) for v in z)) - z[y] for z, y in zip(logits, labels)) / len(labels)


def test_extra_loss_and_logged_losses_match_hand_computation(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    args = make_args(modulation="unimodal_losses", modulation_kwargs={"weight": 0.5})
    method = build_modulation("unimodal_losses", model, args)
    vision = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]]
    audio = [[0.0, 0.0, 0.0], [1.0, -1.0, 2.0], [-2.0, 1.0, 0.0]]
    labels = [0, 1, 2]
    # Two micro-batches: rows 0-1, then row 2.
    losses = []
    for rows in (slice(0, 2), slice(2, 3)):
        outputs = MultimodalOutput(
            modality_logits={"vision": torch.tensor(vision[rows]), "audio": torch.tensor(audio[rows])}
        )
        losses.append(forward_end(method, outputs, torch.tensor(labels[rows])).loss.item())
    expected = 0.5 * (cross_entropy_by_hand(vision[:2], labels[:2]) + cross_entropy_by_hand(audio[:2], labels[:2]))
    assert losses[0] == pytest.approx(expected, rel=1e-6)
    metrics = gradients_ready(method, 0, 10).metrics
    expected = {"unimodal/loss/vision": cross_entropy_by_hand(vision, labels)}
    expected["unimodal/loss/audio"] = cross_entropy_by_hand(audio, labels)
    assert metrics == pytest.approx(expected, rel=1e-6)
    assert gradients_ready(method, 1, 10).metrics == {}  # the statistics were consumed


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_unimodal_gradient_reaches_every_encoder(build_model, build_processor, build_dataset, make_args, fusion):
    """With the method, each encoder's gradient is the plain joint-training gradient plus that of
    `weight * sum_m CE(modality_logits[m], y)`, which is non-zero for every encoder."""
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(6, MODALITIES)))
    weight = 0.7

    def encoder_grads(method: str | None) -> dict[str, torch.Tensor]:
        model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
        model.train()
        if method is None:  # the extra loss alone, computed here
            outputs = model(**batch)
            labels = batch["labels"]
            loss = weight * sum(F.cross_entropy(z, labels) for z in outputs.modality_logits.values())
        else:
            kwargs = {"weight": weight} if method == "unimodal_losses" else {}
            args = make_args(modulation=method, modulation_kwargs=kwargs)
            trainer = AIMTrainer(model, args=args)
            loss = trainer.compute_loss(model, batch)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.encoders.named_parameters() if p.grad is not None}

    with_method, plain, extra = encoder_grads("unimodal_losses"), encoder_grads("none"), encoder_grads(None)
    assert with_method.keys() == plain.keys() == extra.keys()
    for name in with_method:
        # One backward of the sum against the sum of two backwards: float32 sums in another order (a few
        # elements, e.g. of the audio cls_token under the gated fusion, differ by about 1e-5).
        torch.testing.assert_close(with_method[name], plain[name] + extra[name], rtol=1e-4, atol=5e-5)
    for m in MODALITIES:
        assert sum(g.abs().sum() for n, g in extra.items() if n.startswith(f"{m}.")) > 0, m


def test_refuses_a_modulation_window(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    with pytest.raises(ValueError, match="whole training"):
        build_modulation("unimodal_losses", model, make_args(modulation="unimodal_losses", modulation_start=3))
