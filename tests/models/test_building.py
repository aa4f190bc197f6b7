"""Building a model by hand: blanked modalities of every kind, encoders left with zero token
embeddings, and the spectrogram extractor's statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import ASTConfig, AutoModel, ResNetConfig, ResNetModel

from aim_hf import BlankModalities, MultimodalCollator, MultimodalModel, SpectrogramFeatureExtractor
from aim_hf.data import av_digits_encoders
from aim_hf.data.unimodal import hold_blank_statistics
from tiny import make_rows


def test_blanked_text_gives_one_feature_whatever_the_text(build_model, build_processor):
    modalities = ("vision", "text")
    model = build_model(modalities).eval()
    collate = BlankModalities(MultimodalCollator(build_processor(modalities)), keep="vision")
    rows = make_rows(4, modalities)
    rows[0]["text"], rows[1]["text"] = "w3 w4", "w9 w8 w7 w6 w5 w4 w3 w2 w1"
    text = collate(rows)["text"]
    assert set(text["input_ids"].flatten().tolist()) == {0}  # [PAD]
    assert text["attention_mask"].sum(1).tolist() == [1, 1, 1, 1]
    other = collate(make_rows(2, modalities, seed=5))["text"]  # other texts, another padded length
    with torch.no_grad():
        features = model.encoders["text"](**text).last_hidden_state[:, 0]
        features_other = model.encoders["text"](**other).last_hidden_state[:, 0]
    torch.testing.assert_close(features, features[:1].expand_as(features))
    torch.testing.assert_close(features_other, features[:2])
    # The kept modality is untouched, and float inputs of the others are zeros with masks kept.
    full = MultimodalCollator(build_processor(modalities))(rows)
    assert torch.equal(collate(rows)["vision"]["pixel_values"], full["vision"]["pixel_values"])


def test_held_statistics_give_a_blank_one_feature_in_training_and_evaluation(encoder_paths):
    """A BatchNorm encoder (tiny ResNet) fed blanks: in training mode it normalises them with the
    batch's statistics, so its feature differs from the one it evaluates with; once
    `hold_blank_statistics` holds it, the two are the same and the running statistics stay. The kept
    modality's encoder is left alone."""
    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    model = MultimodalModel.from_encoders({"vision": ResNetModel(config), "text": encoder_paths["text"]}, num_labels=3)
    with torch.no_grad():  # running statistics of real images, as a pretrained encoder holds
        model.encoders["vision"].train()(pixel_values=torch.randn(16, 3, 16, 16) + 1)
    blank = torch.zeros(4, 3, 16, 16)

    def features(training: bool) -> torch.Tensor:
        model.train(training)
        with torch.no_grad():
            return model.encoders["vision"](pixel_values=blank).pooler_output.flatten(1)

    assert not torch.allclose(features(True), features(False))
    layers = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoders["vision"].modules())
    assert layers > 0 and hold_blank_statistics(model.encoders, keep="text") == layers
    running = [b.clone() for n, b in model.encoders["vision"].named_buffers() if n.endswith("running_mean")]
    torch.testing.assert_close(features(True), features(False))
    after = [b for n, b in model.encoders["vision"].named_buffers() if n.endswith("running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(running, after))
    kept = ResNetModel(config)
    assert hold_blank_statistics({"vision": kept, "text": model.encoders["text"]}, keep="vision") == 0


def test_blanked_float_inputs_are_zeros_with_masks_kept(build_processor):
    modalities = ("vision", "speech")
    rows = make_rows(2, modalities)
    rows[1]["speech"] = {"array": rows[1]["speech"]["array"][:1000], "sampling_rate": 16000}
    blanked = BlankModalities(MultimodalCollator(build_processor(modalities)), keep="vision")(rows)["speech"]
    assert not blanked["input_values"].any() and blanked["attention_mask"].sum(1).tolist() == [4000, 1000]


def test_from_encoders_warns_about_zero_token_embeddings(encoder_paths):
    torch.manual_seed(0)
    ast = AutoModel.from_config(ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, num_mel_bins=16, max_length=32))  # fmt: skip
    with pytest.warns(UserWarning, match=r"^The 'audio' encoder's cls_token, distillation_token, position_embeddings are all zero"):
        MultimodalModel.from_encoders({"vision": encoder_paths["vision"], "audio": ast}, num_labels=3)
    # The public helper the warning names draws them, and the warning is gone.
    from aim_hf.data import init_token_embeddings

    init_token_embeddings(ast)
    assert all(p.any() for n, p in ast.embeddings.named_parameters() if n.endswith(("token", "position_embeddings")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultimodalModel.from_encoders({"vision": encoder_paths["vision"], "audio": ast}, num_labels=3)
    # The AV-digits encoders built from configs have theirs drawn (aim_hf.data.init_token_embeddings).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultimodalModel.from_encoders(av_digits_encoders(hidden_size=16, num_hidden_layers=2), num_labels=10)


def test_spectrogram_extractor_fit():
    rng = np.random.default_rng(0)
    bins = 4
    spectrograms = [rng.normal([-80, -40, 0, 5], [1, 2, 3, 0], (frames, bins)) for frames in (3, 7, 11)]
    extractor = SpectrogramFeatureExtractor(num_mel_bins=bins, max_length=8)
    assert extractor.fit(iter(spectrograms)) is extractor  # any iterable, one pass
    frames = np.concatenate(spectrograms)
    np.testing.assert_allclose(extractor.mean, frames.mean(0), rtol=1e-6)
    np.testing.assert_allclose(extractor.std[:3], frames.std(0)[:3], rtol=1e-6)
    assert extractor.std[3] == 1.0  # a constant bin is only centred
    values = extractor([s.tolist() for s in spectrograms], return_tensors="np")["input_values"]
    # A batch of nested lists, as dataset rows hold them: normalised, cropped to 8 frames, padded with 0.
    expected = (spectrograms[2][:8] - extractor.mean) / extractor.std
    np.testing.assert_allclose(values[2], expected, atol=1e-4)
    assert values.shape == (3, 8, bins) and not values[0, 3:].any()
    with pytest.raises(ValueError, match=r"Spectrogram 1: expected shape \(frames, 4\)"):
        extractor.fit([spectrograms[0], np.zeros((3, 5))])
    with pytest.raises(ValueError, match="at least one spectrogram"):
        extractor.fit([])
