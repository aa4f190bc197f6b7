"""The multimodal model: building from local encoders, forward, fusions, depth groups, save/load, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from aim_hf import MultimodalConfig, MultimodalModel, MultimodalCollator
from aim_hf.modeling import split_depth_groups
from tiny import NUM_LABELS, make_rows


def _batch(processor_builder, modalities, n=4, seed=0):
    rows = make_rows(n, modalities, seed=seed)
    return MultimodalCollator(processor_builder(modalities))(rows)


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
def test_forward_outputs_every_fusion(build_model, build_processor, fusion):
    model = build_model(fusion=fusion)
    batch = _batch(build_processor, ("vision", "audio", "text"))
    out = model(**batch)
    assert out.logits.shape == (4, NUM_LABELS)
    assert set(out.probe_logits) == set(out.modality_logits) == {"vision", "audio", "text"}
    # Each modality's share adds up to the fused logits.
    torch.testing.assert_close(sum(out.modality_logits.values()), out.logits)
    for m, feats in out.depth_features.items():
        assert len(feats) == 4 and all(f.shape == (4, 32) for f in feats)
    expected = torch.nn.functional.cross_entropy(out.logits, batch["labels"]) + sum(
        torch.nn.functional.cross_entropy(p, batch["labels"]) for p in out.probe_logits.values()
    )
    torch.testing.assert_close(out.loss, expected)


def test_probes_do_not_train_encoders(build_model, build_processor):
    model = build_model(modalities=("vision", "text"))
    out = model(**_batch(build_processor, ("vision", "text")))
    probe_loss = sum(torch.nn.functional.cross_entropy(p, torch.zeros(4, dtype=torch.long)) for p in out.probe_logits.values())
    probe_loss.backward()
    assert all(p.grad is None for p in model.encoders.parameters())
    assert all(p.grad is not None for p in model.probes.parameters())


def test_wav2vec2_encoder_and_frame_mask(build_model, build_processor):
    model = build_model(modalities=("vision", "speech"))
    batch = _batch(build_processor, ("vision", "speech"))
    out = model(**batch)
    assert out.logits.shape == (4, NUM_LABELS)
    assert model._depths["speech"].layer_path == "encoder.layers"


def test_depth_groups_split_contiguously():
    assert split_depth_groups(12, 4) == [range(0, 3), range(3, 6), range(6, 9), range(9, 12)]
    assert split_depth_groups(2, 4) == [range(0, 1), range(1, 2)]
    groups = split_depth_groups(7, 3)
    assert [i for g in groups for i in g] == list(range(7))


def test_save_load_round_trip_with_auto_classes(build_model, build_processor, tmp_path):
    model = build_model(fusion="gated").eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert isinstance(config, MultimodalConfig) and config.modalities == ["vision", "audio", "text"]
    batch = _batch(build_processor, ("vision", "audio", "text"))
    batch.pop("labels")
    for auto in (AutoModel, AutoModelForSequenceClassification):
        loaded = auto.from_pretrained(tmp_path / "m").eval()
        assert isinstance(loaded, MultimodalModel)
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_freeze_whole_encoder_and_first_layers(build_model):
    model = build_model(modalities=("vision", "text"), freeze={"vision": -1, "text": 2})
    assert not any(p.requires_grad for p in model.encoders["vision"].parameters())
    layers = model._depths["text"].layers
    assert not any(p.requires_grad for p in layers[1].parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    assert not any(p.requires_grad for p in model.encoders["text"].embeddings.parameters())


def test_error_missing_modality(build_model, build_processor):
    model = build_model()
    batch = _batch(build_processor, ("vision", "audio", "text"))
    del batch["audio"]
    with pytest.raises(ValueError, match="missing: \\['audio'\\]"):
        model(**batch)


def test_error_label_outside_num_labels(build_model, build_processor):
    model = build_model()
    batch = _batch(build_processor, ("vision", "audio", "text"))
    batch["labels"][0] = NUM_LABELS
    with pytest.raises(ValueError, match="Labels must lie in \\[0, 2\\]"):
        model(**batch)


def test_error_mismatched_batch_sizes(build_model, build_processor):
    model = build_model()
    batch = _batch(build_processor, ("vision", "audio", "text"))
    batch["vision"]["pixel_values"] = batch["vision"]["pixel_values"][:3]
    with pytest.raises(ValueError, match="same batch size"):
        model(**batch)


def test_error_unknown_fusion(build_model):
    with pytest.raises(ValueError, match="Unknown fusion 'bilinear'"):
        build_model(fusion="bilinear")


def test_error_unknown_encoder(tmp_path):
    with pytest.raises(ValueError, match="Could not load the 'vision' encoder"):
        MultimodalModel.from_encoders({"vision": str(tmp_path / "nope"), "text": str(tmp_path / "nope2")}, num_labels=2)


def test_error_single_modality(encoder_paths):
    with pytest.raises(ValueError, match="at least two"):
        MultimodalModel.from_encoders({"vision": encoder_paths["vision"]}, num_labels=2)
