"""AIM's second reading and its study options: learned DAP prototypes (the model entry point that
decodes a depth's output, the frozen-model refresh, scores, checkpoints), symmetric PAM, the capacity
bound (`dam_cap`) and what the auxiliary loss trains (`aux_trains`)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hooks import forward_end, gradients_ready, train_forward
from tiny import NUM_LABELS, make_rows
from transformers import ResNetConfig, ResNetModel

from aim_hf import MultimodalCollator, MultimodalModel
from aim_hf.modeling import MultimodalOutput
from aim_hf.modulation import build_modulation
from aim_hf.modulation.aim.auxiliary import encode_from_depth
from aim_hf.modulation.aim.strengths import (
    capped_strengths,
    dam_strengths,
    dominant_modalities,
    weak_capacities,
    weak_strengths,
)

TWO = ("vision", "audio")


def _resnet_model(encoder_paths) -> MultimodalModel:
    """A tiny from-scratch ResNet (4 convolutional stages, batch norm) for vision, beside BERT text."""
    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1])
    return MultimodalModel.from_encoders(
        {"vision": ResNetModel(config), "text": encoder_paths["text"]}, num_labels=NUM_LABELS
    )


def _model_and_batch(kind, build_model, build_processor, encoder_paths):
    if kind == "resnet":
        modalities = ("vision", "text")
        model = _resnet_model(encoder_paths)
    else:
        modalities = ("vision", "audio", "text")
        model = build_model(modalities)
    # Rows of different text lengths: BERT gets a real attention mask with padding.
    return model, MultimodalCollator(build_processor(modalities))(make_rows(6, modalities))


@pytest.mark.parametrize("kind", ["transformers", "resnet"])
def test_encode_from_depth_decodes_a_depth_output_as_the_normal_pass(
    kind, build_model, build_processor, encoder_paths
):
    """Feeding depth d's real output to `encode_from_depth` gives the normal final feature: the
    entry point runs exactly the layers after group d (ViT, AST, BERT; ResNet stages)."""
    model, batch = _model_and_batch(kind, build_model, build_processor, encoder_paths)
    model.eval()
    with torch.no_grad():
        out = model(**batch)
        for m in model.modalities:
            inputs = batch[m]
            outputs = model.depth_outputs(m, inputs)
            assert len(outputs) == 4
            for d, hidden in enumerate(outputs):
                decoded = encode_from_depth(model, m, d, hidden, inputs)
                torch.testing.assert_close(decoded, out.depth_features[m][-1], rtol=1e-5, atol=1e-6)
            # Decoding something else changes the result (the entry point does use `hidden`).
            assert not torch.allclose(encode_from_depth(model, m, 0, outputs[0] + 1, inputs), out.depth_features[m][-1])


def _refreshed(model, batch, make_args, **options):
    """An AIM (learned prototypes, `options` its own) after one training forward and the step-0 refresh."""
    aim = build_modulation("aim", model, make_args(modulation="aim", modulation_start=0, modulation_kwargs=options))
    train_forward(aim, model, batch)
    return aim, gradients_ready(aim, 0, 10).metrics


@pytest.mark.parametrize("kind", ["transformers", "resnet"])
def test_learned_prototypes_are_learned_with_the_model_frozen(
    kind, build_model, build_processor, encoder_paths, make_args
):
    model, batch = _model_and_batch(kind, build_model, build_processor, encoder_paths)
    model.train()
    model.probes.eval()  # a mixed mode, which the refresh must restore module by module
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    modes = {n: mod.training for n, mod in model.named_modules()}
    args = make_args(modulation="aim", modulation_start=0, modulation_kwargs={"prototype_iters": 30})
    aim = build_modulation("aim", model, args)
    train_forward(aim, model, batch)
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # batch-norm statistics after the forward
    rng = torch.get_rng_state()
    metrics = gradients_ready(aim, 0, 10).metrics

    # Frozen: no gradient, weight, buffer (batch-norm statistics), mode or global RNG draw changed.
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert {n: mod.training for n, mod in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)

    # One prototype per class in each depth's output space: a short token sequence at a
    # transformer depth, a small square map at a convolutional stage. Eval mode from here on: a
    # training forward would move the batch-norm statistics the prototypes are decoded with.
    model.eval()
    for m in model.modalities:
        for d, (prototype, raw) in enumerate(zip(aim.prototypes[m], model.depth_outputs(m, batch[m]))):
            if raw.dim() == 4:
                assert prototype.shape == (NUM_LABELS, raw.shape[1], 2, 2)
            else:
                assert prototype.shape == (NUM_LABELS, 2, raw.shape[-1])

    # Learned: the frozen rest of the network decodes each prototype as its class, far better than
    # the random draw it started from (same seed, no iteration).
    start, _ = _refreshed(model, batch, make_args, prototype_iters=0)
    inputs = {m: aim._prototype_inputs(m) for m in model.modalities}
    with torch.no_grad():
        before = start._prototype_loss(model, start.prototypes, inputs).item()
        after = aim._prototype_loss(model, aim.prototypes, inputs).item()
    assert after < 0.5 * before
    assert metrics["aim/prototype_loss"] == pytest.approx(after / sum(len(p) for p in aim.prototypes.values()), rel=0.2)
    # Deterministic from the seed and the weights: the same on every process without communication.
    again, _ = _refreshed(model, batch, make_args, prototype_iters=30)
    assert all(torch.equal(a, b) for m in model.modalities for a, b in zip(aim.prototypes[m], again.prototypes[m]))


def test_learned_score_and_refresh_schedule(build_model, build_processor, make_args):
    """The depth score is the mean true-class softmax of the cosines to the pooled prototypes; the
    prototypes change only at refresh steps (every `prototype_every`), warm-started."""
    model, batch = build_model(TWO), MultimodalCollator(build_processor(TWO))(make_rows(6, TWO))
    labels = batch["labels"]
    args = make_args(modulation="aim", modulation_start=0, modulation_kwargs={"prototype_every": 2, "tau": 0.1})
    aim = build_modulation("aim", model, args)
    history, losses = [], []
    for step in range(4):
        out = train_forward(aim, model, batch).outputs
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        metrics = gradients_ready(aim, step, 10).metrics
        history.append({m: [p.clone() for p in ps] for m, ps in aim.prototypes.items()})
        losses.append(metrics["aim/prototype_loss"])  # the latest refresh's
        if step == 1:  # scored against step 0's prototypes, pooled as the model pools (token mean)
            for m in TWO:
                for d in range(4):
                    h = F.normalize(out.depth_features[m][d].detach(), dim=-1)
                    pooled = F.normalize(history[0][m][d].mean(dim=1), dim=-1)
                    expected = (h @ pooled.T / 0.1).softmax(-1)[torch.arange(6), labels].mean().item()
                    assert metrics[f"aim/score/{m}/depth_{d}"] == pytest.approx(expected, rel=1e-5)
    same = lambda a, b: all(torch.equal(x, y) for m in TWO for x, y in zip(a[m], b[m]))  # noqa: E731
    assert same(history[0], history[1]) and same(history[2], history[3]) and not same(history[1], history[2])
    assert losses[0] == losses[1] != losses[2] == losses[3]

    # Saved and restored: a fresh AIM scores exactly as this one.
    restored = build_modulation("aim", model, make_args(modulation="aim", modulation_start=0))
    restored.load_state_dict(aim.state_dict())
    assert all(torch.equal(x, y) for m in TWO for x, y in zip(aim._pooled[m], restored._pooled[m]))
    class_mean = make_args(modulation="aim", modulation_kwargs={"prototypes": "class_mean"})
    with pytest.raises(ValueError, match="prototypes='learned'"):
        build_modulation("aim", model, class_mean).load_state_dict(aim.state_dict())


def test_weak_strengths_follow_the_gap_to_the_strongest():
    scores = {"a": torch.tensor([0.8, 0.5]), "b": torch.tensor([0.4, 0.5]), "c": torch.tensor([0.2])}
    mu = weak_strengths(scores, alpha=2.0)
    assert mu["a"] == [0.0, 0.0] and mu["b"][1] == 0.0 and mu["c"] == [math.tanh(2.0 * (1 - 0.2 / 0.8))]
    assert mu["b"][0] == pytest.approx(math.tanh(2.0 * 0.5))


def _informative_vision_steps(aim, model, steps: int) -> dict[str, float]:
    """`steps` optimizer steps of hand-made statistics: vision's depth features tell the label,
    audio's are noise; random gradients. Returns the last step's metrics."""
    for step in range(steps):
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        features = {
            "vision": tuple(F.one_hot(labels, 32).float() * 2 + 0.3 * torch.randn(6, 32) for _ in range(4)),
            "audio": tuple(torch.randn(6, 32) for _ in range(4)),
        }
        forward_end(aim, MultimodalOutput(depth_features=features), labels)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        metrics = gradients_ready(aim, step, 10).metrics
    return metrics


def test_weak_capacities_and_capped_strengths():
    """c = clip((s_min - chance) / (s - chance), 0, 1); 'min' bounds lambda by it."""
    scores = {"a": torch.tensor([0.6, 0.3, 0.05]), "b": torch.tensor([0.2, 0.3, 0.04]), "c": torch.tensor([0.08])}
    c = weak_capacities(scores, chance=0.1)
    # Depth 0: the weakest (c, below chance) reaches none of a's or b's gain; depth 1: a and b tie;
    # depth 2: below chance everywhere, nothing above chance to bound.
    assert c["a"] == pytest.approx([0.0, 1.0, 0.0], abs=1e-6) and c["b"] == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)
    assert c["c"] == [0.0]
    c = weak_capacities({"a": torch.tensor([0.6]), "b": torch.tensor([0.2])}, chance=0.1)
    assert c["a"][0] == pytest.approx(0.2) and c["b"] == [1.0]
    lambdas = {"a": [0.9], "b": [0.0]}
    assert capped_strengths(lambdas, c, "none") is lambdas
    assert capped_strengths(lambdas, c, "min")["a"][0] == pytest.approx(0.2)
    assert capped_strengths(lambdas, c, "min")["b"] == [0.0]



def test_the_least_modulated_modality_always_learns_from_the_auxiliary_loss():
    """`weak_only` detaches the modalities with an Auxiliary Block, but never the least modulated:
    when the weak modality out-scores the dominant one at one depth, both have a block."""
    one_sided = {"vision": [0.05, 0.4, 0.5, 0.4], "audio": [0.0, 0.0, 0.0, 0.0]}
    assert dominant_modalities(one_sided, 0.1) == ["vision"]
    both = {"vision": [0.0, 0.4, 0.5, 0.4], "audio": [0.3, 0.0, 0.0, 0.0]}
    assert dominant_modalities(both, 0.1) == ["vision"]  # before: ["vision", "audio"], L_aux trained nothing
    assert dominant_modalities(both, 0.35) == ["vision"]  # audio's block is below min_lambda
    three = {"vision": [0.0, 0.4], "audio": [0.3, 0.0], "text": [0.2, 0.3]}
    assert dominant_modalities(three, 0.1) == ["vision", "text"]
    assert dominant_modalities({"vision": [0.3, 0.0], "audio": [0.0, 0.3]}, 0.1) == []  # alike: both learn

@pytest.mark.parametrize("cap", ["none", "min"])
def test_dam_cap_bounds_the_logged_strengths_and_the_masks(cap, build_model, make_args):
    """Vision informative, audio noise near chance: uncapped, DAM switches off vision at every depth;
    capped, the strengths are the uncapped ones bounded by audio's capacity, and the masks follow."""
    torch.manual_seed(0)
    model = build_model(TWO).eval()
    options = {"prototypes": "class_mean", "min_lambda": 0.0, "dam_cap": cap}
    aim = build_modulation("aim", model, make_args(modulation="aim", modulation_start=0, modulation_kwargs=options))
    metrics = _informative_vision_steps(aim, model, 3)
    plain = dam_strengths(aim.scores, 1.0)
    bounded = capped_strengths(plain, weak_capacities(aim.scores, 1.0 / model.config.num_labels), cap)
    logged = [metrics[f"aim/lambda/vision/depth_{d}"] for d in range(4)]
    assert logged == pytest.approx(bounded["vision"])
    if cap == "none":
        assert logged == pytest.approx(plain["vision"])
    else:
        assert all(b < p for b, p in zip(logged, plain["vision"]))
    # The next step's masks are sized by the logged (bounded) strengths.
    expected = sum(
        math.ceil(lam * 0.5 * module.weight.shape[0])
        for lam, group in zip(logged, model.unit_modules("vision"))
        for module in group.values()
    )
    assert aim._masked_units["vision"] == expected > 0


# ------------------------------------------------------------------------------ study choices
def _with_masks(build_model, build_processor, make_args, **options):
    """Model (eval: no dropout), batch, and an AIM whose next step masks vision (dominant) at every
    depth, after two steps of hand-made statistics (vision informative, audio noise)."""
    torch.manual_seed(0)
    model = build_model(TWO).eval()
    # The first reading (no capacity bound: audio is noise here) unless overridden.
    first = {"prototypes": "class_mean", "pam": "dominant", "aux_trains": "all", "dam_cap": "none"}
    args = make_args(modulation="aim", modulation_start=0, modulation_kwargs=first | options)
    aim = build_modulation("aim", model, args)
    _informative_vision_steps(aim, model, 2)
    model.zero_grad(set_to_none=True)
    assert set(aim.masks) == {"vision"}
    return model, MultimodalCollator(build_processor(TWO))(make_rows(6, TWO)), aim


def _grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _region(grads, prefix):
    return {n: g for n, g in grads.items() if n.startswith(prefix)}


@pytest.mark.parametrize("trains", ["all", "weak_only"])
def test_aux_trains_decides_what_the_auxiliary_loss_reaches(trains, build_model, build_processor, make_args):
    model, batch, aim = _with_masks(build_model, build_processor, make_args, aux_trains=trains)
    plain = _grads(model, model(**batch).loss)
    ctx = train_forward(aim, model, batch)
    grads = _grads(model, ctx.outputs.loss + ctx.loss)
    same = lambda prefix: all(  # noqa: E731
        torch.allclose(grads[n], g, rtol=1e-5, atol=1e-7) for n, g in _region(plain, prefix).items()
    )
    assert same("fusion.") == (trains == "weak_only")  # the head learns as in joint training
    assert same("encoders.vision.") == (trains == "weak_only")  # the dominant encoder gets nothing from L_aux
    assert not same("encoders.audio.")  # the weak encoder always gets L_aux's gradient
    assert aim.aux_detached == (["vision"] if trains == "weak_only" else [])


def test_masks_switch_off_the_most_important_units(build_model, make_args):
    model = build_model(TWO)
    aim = build_modulation("aim", model, make_args(modulation="aim", modulation_kwargs={"min_lambda": 0.0}))
    for group in model.unit_modules("vision"):
        for name, module in group.items():
            aim.importance["vision"][name] = torch.rand(module.weight.shape[0])
    masks, _ = aim._build_masks({"vision": [0.6] * 4, "audio": [0.0] * 4})
    for name, mask in masks["vision"].items():
        importance = aim.importance["vision"][name]
        off, kept = importance[mask == 0], importance[mask == 1]
        assert off.numel() == math.ceil(0.6 * 0.5 * importance.numel())
        assert off.min() >= kept.max()


def _pretrained_like(labels: torch.Tensor, shared: float, signal: float, dim: int = 8) -> tuple[torch.Tensor, ...]:
    """Pooled outputs at 4 depths: `shared` times one direction every example has (a pretrained
    encoder's first depths: mean pairwise cosine 0.5-0.65 for MobileNetV2 and MiniLM), plus
    `signal` times the class's one-hot, plus unit noise."""
    common = torch.ones(dim) / dim**0.5
    onehot = F.one_hot(labels, dim).float()
    return tuple(shared * common + signal * onehot + torch.randn(labels.shape[0], dim) for _ in range(4))


def _probe_accuracy(features: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor) -> float:
    """A linear probe (least squares on one-hot targets, with a bias) fitted on one set, scored on another."""
    design = torch.cat([features, torch.ones(len(features), 1)], 1)
    weights = torch.linalg.lstsq(design, F.one_hot(labels, NUM_LABELS).float()).solution
    predicted = (torch.cat([test, torch.ones(len(test), 1)], 1) @ weights).argmax(1)
    return (predicted == test_labels).float().mean().item()


def test_centered_scores_rank_the_modalities_as_linear_probes_do(build_model, make_args):
    """Three modalities: text's outputs share a large direction but separate the classes best (as a
    pretrained text encoder's first depths do next to encoders trained from scratch), vision's
    separate them less, audio's not at all. At every depth a linear probe ranks text > vision >
    audio; with `center=True` so do the depth scores, while the raw cosines put vision above text:
    text's shared direction makes its cosines alike. The centers are checkpoint state."""
    torch.manual_seed(0)
    three = ("vision", "audio", "text")
    kinds = {"text": (12.0, 2.0), "vision": (0.0, 1.0), "audio": (0.0, 0.0)}

    def outputs(labels):
        return MultimodalOutput(depth_features={m: _pretrained_like(labels, *kinds[m]) for m in three})

    fit_labels, test_labels = torch.randint(0, NUM_LABELS, (600,)), torch.randint(0, NUM_LABELS, (600,))
    fit, test = outputs(fit_labels), outputs(test_labels)
    probes = {
        (m, d): _probe_accuracy(fit.depth_features[m][d], fit_labels, test.depth_features[m][d], test_labels)
        for m in three
        for d in range(4)
    }
    model = build_model(three)
    ranked = {}
    for center in (True, False):
        args = make_args(modulation="aim", modulation_start=0, modulation_kwargs={"prototypes": "class_mean", "center": center})
        aim = build_modulation("aim", model, args)
        for step in range(8):
            labels = torch.randint(0, NUM_LABELS, (64,))
            forward_end(aim, outputs(labels), labels)
            metrics = gradients_ready(aim, step, 100).metrics
        ranked[center] = [sorted(three, key=lambda m: -metrics[f"aim/score/{m}/depth_{d}"]) for d in range(4)]
        if center:
            resumed = build_modulation("aim", model, args)
            resumed.load_state_dict(aim.state_dict())
            assert all(torch.equal(a, b) for m in three for a, b in zip(aim.centers[m], resumed.centers[m]))
    by_probe = [sorted(three, key=lambda m: -probes[m, d]) for d in range(4)]
    assert by_probe == [["text", "vision", "audio"]] * 4
    assert ranked[True] == by_probe
    assert all(order[:2] == ["vision", "text"] for order in ranked[False])
