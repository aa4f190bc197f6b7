"""AIM: DAP prototypes and scores, DAM strengths, PAM importance and masks, Auxiliary Block
gradients, equivalence with joint training at alpha = 0, checkpoint resume, imbalance reaction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hooks import forward_end, gradients_ready, train_forward
from tiny import NUM_LABELS, make_rows

from aim_hf import AIMTrainer, MultimodalCollator
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation
from aim_hf.modulation.aim.masking import update_importance

TWO = ("vision", "audio")
# The first reading (class-mean prototypes, dominant-only PAM), which the hand-made statistics test.
FIRST = {"prototypes": "class_mean", "pam": "dominant", "aux_trains": "all", "dam_cap": "none"}
QK_PARTNER = {"q_proj": "k_proj", "k_proj": "q_proj"}


def _features(labels: torch.Tensor, informative: bool, depths: int = 4, dim: int = 4) -> tuple[torch.Tensor, ...]:
    """Hand-made pooled features per depth: class-dependent (plus noise) when `informative`."""
    noise = [torch.randn(labels.shape[0], dim) for _ in range(depths)]
    if not informative:
        return tuple(noise)
    signal = F.one_hot(labels, dim).float() * 2
    return tuple(signal + 0.3 * n for n in noise)


def _outputs(labels: torch.Tensor) -> MultimodalOutput:
    return MultimodalOutput(depth_features={"vision": _features(labels, True), "audio": _features(labels, False)})


def _true_class_prob(features: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    cos = F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).T
    return (cos / tau).softmax(-1)[torch.arange(labels.shape[0]), labels].mean()


def _class_means(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    h = F.normalize(features, dim=-1)
    return torch.stack([h[labels == k].mean(0) for k in range(NUM_LABELS)])


def test_prototypes_scores_and_strengths_match_direct_computation(build_model, make_args):
    torch.manual_seed(0)
    args = make_args(
        modulation="aim", modulation_start=0, modulation_kwargs={**FIRST, "alpha": 1.5, "tau": 0.1, "momentum": 0.9}
    )
    aim = build_modulation("aim", build_model(TWO), args)
    # Step 0: two micro-batches seed the prototypes with the class means; no score yet.
    labels_a, labels_b = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2])
    out_a, out_b = _outputs(labels_a), _outputs(labels_b)
    assert forward_end(aim, out_a, labels_a).loss is None and forward_end(aim, out_b, labels_b).loss is None
    metrics = gradients_ready(aim, 0, 10).metrics
    labels_ab = torch.cat([labels_a, labels_b])
    for m in TWO:
        for d in range(4):
            feats = torch.cat([out_a.depth_features[m][d], out_b.depth_features[m][d]])
            torch.testing.assert_close(aim.prototypes[m][d], _class_means(feats, labels_ab))
    assert "aim/score/vision/depth_0" not in metrics and metrics["aim/lambda/vision/depth_0"] == 0.0
    prototypes_0 = {m: [p.clone() for p in ps] for m, ps in aim.prototypes.items()}

    # Step 1 (class 2 absent): scores against step 0's prototypes; EMA for the classes present only.
    labels_c = torch.tensor([0, 0, 1])
    out_c = _outputs(labels_c)
    forward_end(aim, out_c, labels_c)
    metrics = gradients_ready(aim, 1, 10).metrics
    scores_1 = {}
    for m in TWO:
        for d in range(4):
            feats = out_c.depth_features[m][d]
            scores_1[m, d] = _true_class_prob(feats, prototypes_0[m][d], labels_c, 0.1).item()
            assert metrics[f"aim/score/{m}/depth_{d}"] == pytest.approx(scores_1[m, d], rel=1e-5)
            h = F.normalize(feats, dim=-1)
            expected = prototypes_0[m][d].clone()
            for k in (0, 1):
                expected[k] = 0.9 * expected[k] + 0.1 * h[labels_c == k].mean(0)
            torch.testing.assert_close(aim.prototypes[m][d], expected)
    for d in range(4):
        weakest = min(scores_1["vision", d], scores_1["audio", d])
        for m in TWO:
            lam = math.tanh(1.5 * (scores_1[m, d] / weakest - 1))
            assert metrics[f"aim/lambda/{m}/depth_{d}"] == pytest.approx(lam, rel=1e-5, abs=1e-7)
    assert metrics["aim/lambda/vision/depth_1"] > 0 and metrics["aim/lambda/audio/depth_1"] == 0.0

    # Step 2: the score is an EMA of the step scores.
    prototypes_1 = {m: [p.clone() for p in ps] for m, ps in aim.prototypes.items()}
    labels_d = torch.tensor([2, 1, 0])
    out_d = _outputs(labels_d)
    forward_end(aim, out_d, labels_d)
    metrics = gradients_ready(aim, 2, 10).metrics
    for m in TWO:
        step_score = _true_class_prob(out_d.depth_features[m][0], prototypes_1[m][0], labels_d, 0.1).item()
        expected = 0.9 * scores_1[m, 0] + 0.1 * step_score
        assert metrics[f"aim/score/{m}/depth_0"] == pytest.approx(expected, rel=1e-5)


def unit_importance(module: torch.nn.Module) -> torch.Tensor:
    """The Taylor importance of each output unit, one layer at a time (AIM computes all at once)."""
    value = (module.weight * module.weight.grad).abs().flatten(1).sum(1)
    return (value + (module.bias * module.bias.grad).abs()).detach()


def test_importance_and_masks_pick_the_most_important_units(build_model, make_args):
    torch.manual_seed(0)
    model = build_model(TWO)
    args = make_args(modulation="aim", modulation_start=0, modulation_kwargs={**FIRST, "r_max": 0.5})
    aim = build_modulation("aim", model, args)
    units = {m: {n: mod for group in model.unit_modules(m) for n, mod in group.items()} for m in TWO}
    expected = {}
    for step in range(2):
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        forward_end(aim, _outputs(labels), labels)
        grads = {p: torch.randn_like(p) for p in model.parameters()}
        for p, g in grads.items():
            p.grad = g
        metrics = gradients_ready(aim, step, 10).metrics
        for m in TWO:
            for name, module in units[m].items():
                value = unit_importance(module)
                expected[m, name] = value if step == 0 else 0.9 * expected[m, name] + 0.1 * value
    # fp16: gradients still scaled by the GradScaler's factor are divided by it.
    scaled = build_modulation("aim", model, make_args(modulation="aim", modulation_kwargs=FIRST))
    for p, g in grads.items():
        p.grad = g * 1024.0
    update_importance(scaled.importance, scaled._unit_list, 1024.0, scaled.config.momentum)
    for p, g in grads.items():
        p.grad = g
    for name, module in units["vision"].items():
        torch.testing.assert_close(scaled.importance["vision"][name], unit_importance(module))
    # A non-finite gradient (an fp16 overflow, a step the GradScaler skips) leaves the whole AIM
    # state untouched: importance, prototypes, scores and the next step's masks.
    before = aim.state_dict()
    next(iter(units["audio"].values())).weight.grad[0, 0] = float("inf")
    forward_end(aim, _outputs(labels), labels)
    assert gradients_ready(aim, 2, 10, grad_scale=1.0).metrics == {}
    after = aim.state_dict()
    for key in ("importance", "masks"):
        for m in before[key]:
            assert all(torch.equal(before[key][m][k], v) for k, v in after[key][m].items())
    assert all(torch.equal(before["scores"][m], after["scores"][m]) for m in TWO)
    assert all(torch.equal(a, b) for m in TWO for a, b in zip(before["prototypes"][m], after["prototypes"][m]))

    masks = aim.masks
    assert set(masks) == {"vision"}  # the informative modality is the strong one at every depth
    for d, group in enumerate(model.unit_modules("vision")):
        lam = metrics[f"aim/lambda/vision/depth_{d}"]
        assert lam > 0
        for name, module in group.items():
            importance = expected["vision", name]
            torch.testing.assert_close(aim.importance["vision"][name], importance)
            num_off = math.ceil(lam * 0.5 * importance.numel())
            off = set(torch.nonzero(masks["vision"][name] == 0).flatten().tolist())
            assert off == set(importance.topk(num_off).indices.tolist())


def test_masks_only_inside_the_modulation_window(build_model, make_args):
    """Statistics accumulate from step 0; masks exist only for steps in [start, end)."""
    torch.manual_seed(0)
    model = build_model(TWO)
    args = make_args(modulation="aim", modulation_start=2, modulation_end=4, modulation_kwargs=FIRST)
    aim = build_modulation("aim", model, args)
    assert build_modulation("aim", model, make_args(modulation="aim")).start == 0.1  # AIM's default warm-up
    has_masks = []
    for step in range(5):
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        forward_end(aim, _outputs(labels), labels)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        metrics = gradients_ready(aim, step, 10).metrics
        assert metrics["aim/active"] == float(2 <= step < 4)
        has_masks.append(bool(aim.masks))  # the masks of step + 1
    assert has_masks == [False, True, True, False, False]


def test_min_lambda_leaves_weakly_modulated_groups_whole(build_model, make_args):
    """With the spec's default (0) a tiny lambda still switches off one unit per layer; with
    `min_lambda` the groups at or below it get no Auxiliary Block."""
    torch.manual_seed(0)
    model = build_model(TWO)
    groups = model.unit_modules("vision")
    strengths = {"vision": [0.05, 0.1, 0.3, 0.6], "audio": [0.0] * len(model.unit_modules("audio"))}
    for min_lambda, masked_groups in ((0.0, {0, 1, 2, 3}), (0.1, {2, 3})):
        aim = build_modulation("aim", model, make_args(modulation="aim", modulation_kwargs={"min_lambda": min_lambda}))
        for group in groups:
            for name, module in group.items():
                aim.importance["vision"][name] = torch.rand(module.weight.shape[0])
        masks = aim._build_masks(strengths)[0]["vision"]
        assert {d for d, group in enumerate(groups) if set(group) & set(masks)} == masked_groups
        for d in masked_groups:
            for name, module in groups[d].items():
                expected = math.ceil(strengths["vision"][d] * 0.5 * module.weight.shape[0])
                assert int((masks[name] == 0).sum()) == expected
                assert aim.importance["vision"][name][masks[name] == 0].min() >= aim.importance["vision"][name][
                    masks[name] == 1
                ].max()


def test_auxiliary_blocks_zero_gradient_and_equal_full_recompute(build_model, build_processor, make_args):
    """Units switched off get exactly zero gradient from L_aux and the others do get gradient; the
    auxiliary pass (replaying the layers before the first masked group) equals a full recompute."""
    torch.manual_seed(0)
    model = build_model(TWO).eval()
    aim = build_modulation("aim", model, make_args(modulation="aim", modulation_kwargs={"beta_aux": 1.0}))
    for m in TWO:
        for group in model.unit_modules(m):
            for name, module in group.items():
                aim.importance[m][name] = torch.rand(module.weight.shape[0])
    aim.masks, _ = aim._build_masks({"vision": [0.0, 0.0, 0.6, 0.6], "audio": [0.0, 0.8, 0.0, 0.0]})
    batch = MultimodalCollator(build_processor(TWO))(make_rows(6, TWO))
    labels = batch["labels"]
    ctx = train_forward(aim, model, batch)
    loss = ctx.loss
    assert not ctx.forward_kwargs  # the auxiliary pass is AIM's own: the model's forward takes nothing of it
    loss.backward()
    for m in TWO:
        for group in model.unit_modules(m):
            for name, module in group.items():
                mask = aim.masks.get(m, {}).get(name)
                row_norms = module.weight.grad.flatten(1).norm(dim=1)
                if mask is None:  # unmasked layers, before and after the masked groups, still learn
                    assert (row_norms > 0).all()
                    continue
                assert (mask == 0).any() and (mask == 1).any()
                assert torch.equal(row_norms[mask == 0], torch.zeros(int((mask == 0).sum())))
                assert torch.equal(module.bias.grad[mask == 0], torch.zeros(int((mask == 0).sum())))
                # A kept query dimension is inert when its key dimension is off, and vice versa.
                kept = mask == 1
                suffix = name.rsplit(".", 1)[-1]
                if suffix in QK_PARTNER:
                    kept &= aim.masks[m][name[: -len(suffix)] + QK_PARTNER[suffix]] == 1
                assert (row_norms[kept] > 0).all(), name

    handles = []
    for m, masks in aim.masks.items():
        for group in model.unit_modules(m):
            for name, module in group.items():
                if name in masks:
                    handles.append(module.register_forward_hook(lambda mod, a, o, k=masks[name]: o * k))
    try:
        with torch.no_grad():
            full = model(**batch)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(loss, F.cross_entropy(full.logits, labels), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(full.logits, ctx.outputs.logits)


def _train(
    build_model, build_processor, build_dataset, make_args, modalities, informative=None, fusion="concat", resume=None, **kw
):
    """An `AIMTrainer` on 24 rows of the tiny model, trained (from checkpoint `resume` if given)."""
    trainer = AIMTrainer(
        model=build_model(modalities, fusion=fusion),
        args=make_args(**kw),
        train_dataset=build_dataset(24, modalities, informative=informative),
        processing_class=build_processor(modalities),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_alpha_zero_is_plain_joint_training_bit_for_bit(build_model, build_processor, build_dataset, make_args):
    # BERT has dropout: any extra random draw of an auxiliary pass would change the result.
    modalities = ("vision", "text")
    kw = dict(max_steps=3, logging_steps=1)
    plain = _train(build_model, build_processor, build_dataset, make_args, modalities, modulation="none", **kw)
    aim = _train(
        build_model, build_processor, build_dataset, make_args, modalities,
        modulation="aim", modulation_start=0, modulation_kwargs={"alpha": 0.0}, **kw,
    )
    assert aim.modulation.scores is not None  # AIM did score the depths ...
    logs = [log for log in aim.state.log_history if "loss" in log]
    assert all(value == 0.0 for log in logs for key, value in log.items() if key.startswith("aim/lambda"))
    assert "aim/aux_loss" not in logs[-1]  # ... but no auxiliary pass ran
    for (name, p), q in zip(plain.model.named_parameters(), aim.model.parameters()):
        assert torch.equal(p, q), name


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_resume_from_checkpoint_continues_exactly(build_model, build_processor, build_dataset, make_args, tmp_path):
    modalities = ("vision", "text")
    # Uncapped DAM: the tiny models' near-chance scores would leave the capacity bound no block to save.
    kw = dict(
        modulation="aim", modulation_start=0, max_steps=5, save_strategy="steps", save_steps=3,
        modulation_kwargs={"dam_cap": "none"},
    )
    full = _train(build_model, build_processor, build_dataset, make_args, modalities, **kw)
    checkpoint = tmp_path / "out" / "checkpoint-3"
    saved = torch.load(checkpoint / "modulation_state.pt", weights_only=False)
    assert saved["state"]["masks"]  # Auxiliary Blocks are active across the save

    resumed = _train(
        build_model, build_processor, build_dataset, make_args, modalities,
        resume=str(checkpoint), output_dir=str(tmp_path / "resumed"), **kw,
    )
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    assert _same_state(full.modulation.state_dict(), resumed.modulation.state_dict())


def test_trains_three_modalities(build_model, build_processor, build_dataset, make_args):
    modalities = ("vision", "audio", "text")
    trainer = _train(
        build_model, build_processor, build_dataset, make_args, modalities,
        fusion="gated", modulation="aim", modulation_start=0, max_steps=3, logging_steps=3,
    )
    log = [log for log in trainer.state.log_history if "loss" in log][-1]
    assert math.isfinite(log["loss"]) and math.isfinite(log["aim/aux_loss"])
    assert sum(log[f"aim/masked_fraction/{m}"] for m in modalities) > 0
    for m in modalities:
        assert {f"aim/lambda/{m}/depth_{d}" for d in range(4)} <= log.keys()
        assert f"aim/score/{m}/depth_3" in log and f"probe_accuracy/{m}" in log


@pytest.mark.parametrize("pam", ["symmetric", "dominant"])
def test_lambda_rises_for_the_informative_modality(pam, build_model, build_processor, build_dataset, make_args):
    """Two modalities, vision label-informative and audio noise: DAM's lambda (uncapped: the capacity
    bound would switch a noise partner's modulation off) modulates vision only; symmetric PAM also
    gives audio, the weak one, a smaller Auxiliary Block of strength mu."""
    trainer = _train(
        build_model, build_processor, build_dataset, make_args, TWO, informative=("vision",),
        modulation="aim", modulation_start=0, max_steps=5, logging_steps=1,
        modulation_kwargs={"pam": pam, "dam_cap": "none"},
    )
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs[0]["aim/lambda/vision/depth_3"] == 0.0  # no prototype before the first step
    last = logs[-1]
    for d in range(4):
        assert last[f"aim/lambda/vision/depth_{d}"] > 0.1
        assert last[f"aim/lambda/audio/depth_{d}"] == 0.0
        assert last[f"aim/score/vision/depth_{d}"] > last[f"aim/score/audio/depth_{d}"]
    assert math.isfinite(last["aim/aux_loss"])
    if pam == "dominant":
        assert last["aim/masked_fraction/vision"] > 0 and last["aim/masked_fraction/audio"] == 0
        assert not any(key.startswith("aim/mu/") for key in last)
        return
    assert last["aim/masked_fraction/vision"] > last["aim/masked_fraction/audio"] > 0
    scores = trainer.modulation.scores
    for d in range(4):
        mu = math.tanh(1.0 * (1 - scores["audio"][d].item() / scores["vision"][d].item()))
        assert last[f"aim/mu/audio/depth_{d}"] == pytest.approx(mu, rel=1e-5)
        assert last[f"aim/mu/vision/depth_{d}"] == 0.0
