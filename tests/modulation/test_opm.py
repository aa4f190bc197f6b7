"""OPM: the drop probability against a hand computation; dropped samples enter the fusion with a
zero feature of the dominant modality, for every fusion; the draws follow the sample's place in the
step's global batch; evaluation never drops."""

from __future__ import annotations

import math

import pytest
import torch
from hooks import forward_end, gradients_ready
from tiny import TEXT_NO_DROPOUT

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation
from aim_hf.modulation.base import HookContext
from aim_hf.modulation.opm import drop_probabilities

MODALITIES = ("vision", "audio", "text")


def test_drop_probability_matches_hand_computation(build_model, make_args):
    model = build_model(modalities=("vision", "audio"))
    opm = build_modulation("opm", model, make_args(modulation="opm", modulation_kwargs={"q_base": 0.4, "lam": 0.5}))
    # Two micro-batches; vision confident and right, audio uniform.
    vision, audio = torch.tensor([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5]]), torch.zeros(3, 3)
    labels = torch.tensor([0, 1, 2])
    for rows in (slice(0, 2), slice(2, 3)):
        forward_end(opm, MultimodalOutput(modality_logits={"vision": vision[rows], "audio": audio[rows]}), labels[rows])
    s_v = (math.exp(2) / (math.exp(2) + 2) + math.exp(1) / (math.exp(1) + 2) + math.exp(0.5) / (math.exp(0.5) + 2)) / 3
    rho = s_v / (1 / 3)
    metrics = gradients_ready(opm, step=0, max_steps=10).metrics
    assert metrics["opm/ratio/vision"] == pytest.approx(rho, rel=1e-5)
    assert metrics["opm/drop_prob/vision"] == pytest.approx(0.4 * (1 + 0.5 * math.tanh(rho - 1)), rel=1e-5)
    assert metrics["opm/drop_prob/audio"] == 0.0 and opm.state_dict()["drop_prob"][1] == 0.0
    # Three modalities: each against the mean of the others; the probability is clipped to 1.
    ratios, probs = drop_probabilities(torch.tensor([0.9, 0.3, 0.3]), q_base=0.8, lam=1.0)
    assert ratios[0].item() == pytest.approx(3.0) and probs.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "window, step, max_steps, drops",
    [
        ({"modulation_end": 1}, 0, 10, False),  # sizes step 1, outside [0, 1)
        # The default window is the reference's: no drop in its warm-up, epochs 0-5 of 100.
        ({}, 4, 100, False),
        ({}, 5, 100, True),
        ({"modulation_start": 0}, 0, 100, True),
    ],
)
def test_drops_only_inside_the_window(build_model, make_args, window, step, max_steps, drops):
    model = build_model(modalities=("vision", "audio"))
    opm = build_modulation("opm", model, make_args(modulation="opm", modulation_kwargs={"q_base": 1.0}, **window))
    forward_end(
        opm,
        MultimodalOutput(modality_logits={"vision": torch.tensor([[5.0, 0, 0]]), "audio": torch.zeros(1, 3)}),
        torch.tensor([0]),
    )
    metrics = gradients_ready(opm, step=step, max_steps=max_steps).metrics
    assert metrics["opm/ratio/vision"] > 1 and (metrics["opm/drop_prob/vision"] > 0) == drops
    ctx = HookContext(model=model, step=step + 1, max_steps=max_steps, labels=torch.tensor([0]))
    opm.on_micro_batch_begin(ctx)
    if drops:  # a drop probability of 1: the dominant vision is dropped, audio never
        keep = ctx.forward_kwargs["feature_keep"]
        assert list(keep) == ["vision"] and keep["vision"].tolist() == [0.0]
    else:
        assert ctx.forward_kwargs == {}


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_dropped_samples_enter_the_fusion_with_a_zero_dominant_feature(
    build_model, build_processor, build_dataset, make_args, fusion
):
    model = build_model(MODALITIES, fusion=fusion, encoder_kwargs=TEXT_NO_DROPOUT)
    model.train()
    trainer = AIMTrainer(model, args=make_args(modulation="opm"))
    trainer.modulation.load_state_dict({"drop_prob": torch.tensor([0.5, 0.0, 0.0])})  # vision dominant
    batch = MultimodalCollator(build_processor(MODALITIES))(list(build_dataset(12, MODALITIES)))
    seen = {}
    handle = model.fusion.register_forward_pre_hook(lambda module, args: seen.update(args[0]))
    _, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    handle.remove()
    keep = trainer.modulation._keep["vision"]
    assert 0 < keep.sum() < 12 and set(trainer.modulation._keep) == {"vision"}
    final = {m: outputs.depth_features[m][-1] for m in MODALITIES}
    assert torch.equal(seen["vision"][keep == 0], torch.zeros_like(seen["vision"][keep == 0]))
    assert torch.equal(seen["vision"][keep == 1], final["vision"][keep == 1])
    assert all(torch.equal(seen[m], final[m]) for m in ("audio", "text"))


def test_draws_follow_the_place_in_the_global_batch(build_model, build_processor, build_dataset, make_args):
    """Through the trainer's forward: micro-batch 2 of 2 (batch 2) draws what rows 2-3 of one batch
    of 4 draw at the same step."""
    model = build_model(modalities=("vision", "audio"))
    model.train()
    collate = MultimodalCollator(build_processor(("vision", "audio")))
    rows = list(build_dataset(4, ("vision", "audio")))

    def keep_masks(batch: int, micro: int) -> list[torch.Tensor]:
        trainer = AIMTrainer(model, args=make_args(modulation="opm", per_device_train_batch_size=batch))
        trainer.modulation.load_state_dict({"drop_prob": torch.tensor([0.5, 0.0])})
        trainer.state.global_step = 7
        masks = []
        for j in range(micro):
            trainer.compute_loss(model, collate(rows[j * batch : (j + 1) * batch]))
            masks.append(trainer.modulation._keep["vision"])
        return masks

    assert torch.equal(torch.cat(keep_masks(2, 2)), keep_masks(4, 1)[0])


def test_evaluation_never_drops(build_model, build_processor, build_dataset, make_args):
    model = build_model(("vision", "audio"))
    trainer = AIMTrainer(model, args=make_args(modulation="opm"))
    trainer.modulation.load_state_dict({"drop_prob": torch.tensor([1.0, 0.0])})  # would drop every sample
    batch = MultimodalCollator(build_processor(("vision", "audio")))(list(build_dataset(6, ("vision", "audio"))))
    model.eval()
    with torch.no_grad():
        logits = trainer.compute_loss(model, batch, return_outputs=True)[1].logits  # what evaluation runs
        plain = model(**batch).logits
        dropped = model(**batch, feature_keep={"vision": torch.zeros(6)}).logits
    torch.testing.assert_close(logits, plain)
    assert not torch.allclose(logits, dropped)
