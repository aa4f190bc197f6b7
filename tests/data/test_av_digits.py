"""The embedded AV-digits dataset, its spectrogram feature extractor and its unimodal blanking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor

from aim_hf import MultimodalCollator, MultimodalModel, MultimodalProcessor
from aim_hf.data import (
    LABEL_NAMES,
    BlankModalities,
    SpectrogramFeatureExtractor,
    av_digits_encoders,
    av_digits_processor,
    load_av_digits,
    mfcc_to_log_mel,
)
from aim_hf.data.av_digits import load_fsdd_mfcc, load_mnist_5k

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


@pytest.fixture(scope="module")
def data():
    return load_av_digits(seed=0)


def test_splits_sizes_and_balance(data):
    assert {s: len(d) for s, d in data.items()} == {"train": 2000, "validation": 500, "test": 500}
    assert data["train"].features["label"].names == LABEL_NAMES
    for split in data.values():
        counts = np.bincount(split["label"], minlength=10)
        assert (counts == counts[0]).all()


def test_pairing_agrees_and_sources_are_disjoint(data):
    images, image_labels = load_mnist_5k()
    _, audio_labels = load_fsdd_mfcc()
    seen_images, seen_recordings = set(), set()
    for split in data.values():
        labels = np.array(split["label"])
        image_ids, recording_ids = np.array(split["image_index"]), np.array(split["recording_index"])
        assert (image_labels[image_ids] == labels).all() and (audio_labels[recording_ids] == labels).all()
        assert not seen_images & set(image_ids.tolist()) and not seen_recordings & set(recording_ids.tolist())
        seen_images |= set(image_ids.tolist())
        seen_recordings |= set(recording_ids.tolist())
    assert len(seen_images) == len(seen_recordings) == 3000
    # The image column holds the very MNIST image of the recorded index.
    row = data["test"][7]
    assert np.array_equal(np.asarray(row["vision"]), images[row["image_index"]])


def test_audio_is_the_inverse_dct_of_the_mfccs(data):
    mfccs, _ = load_fsdd_mfcc()
    row = data["validation"][3]
    audio = np.asarray(row["audio"], dtype=np.float32)
    assert audio.shape == (len(mfccs[row["recording_index"]]), 32)
    assert np.allclose(audio, mfcc_to_log_mel(mfccs[row["recording_index"]], 32), atol=1e-4)
    # Orthonormal DCT-II of the recovered spectrum gives the MFCCs back.
    from scipy.fft import dct

    assert np.allclose(dct(audio, type=2, norm="ortho", axis=1)[:, :13], mfccs[row["recording_index"]], atol=1e-2)


def test_seed_fixes_the_data_and_noise_degrades_images_only(data):
    again = load_av_digits(seed=0)
    other = load_av_digits(seed=1, image_noise=0.3)
    assert again["train"]["recording_index"] == data["train"]["recording_index"]
    assert again["train"]["image_index"] == data["train"]["image_index"]
    assert other["train"]["recording_index"] != data["train"]["recording_index"]
    images, _ = load_mnist_5k()
    noisy = other["train"][0]
    assert not np.array_equal(np.asarray(noisy["vision"]), images[noisy["image_index"]])
    assert np.allclose(np.asarray(noisy["audio"]), mfcc_to_log_mel(load_fsdd_mfcc()[0][noisy["recording_index"]]), atol=1e-4)


def test_feature_extractor_shapes_and_round_trip(tmp_path):
    extractor = SpectrogramFeatureExtractor(num_mel_bins=32, max_length=20, mean=-2.0, std=4.0)
    short, long = np.ones((7, 32), np.float32), np.arange(25 * 32, dtype=np.float32).reshape(25, 32)
    values = extractor([short, long], return_tensors="pt")["input_values"]
    assert values.shape == (2, 20, 32)
    assert torch.allclose(values[0, :7], torch.full((7, 32), 0.75)) and (values[0, 7:] == 0).all()
    assert torch.allclose(values[1], (torch.from_numpy(long[:20]) + 2.0) / 4.0)
    with pytest.raises(ValueError, match="num_mel_bins=32"):
        extractor([np.ones((5, 13))])
    per_bin = SpectrogramFeatureExtractor(num_mel_bins=2, max_length=1, mean=[1.0, -1.0], std=[2.0, 0.5])
    assert per_bin([np.array([[3.0, 0.0]])])["input_values"].tolist() == [[[1.0, 2.0]]]
    with pytest.raises(ValueError, match="list of 2 floats"):
        SpectrogramFeatureExtractor(num_mel_bins=2, mean=[0.0, 0.0, 0.0])

    processor = MultimodalProcessor({"audio": extractor, "other": SpectrogramFeatureExtractor(num_mel_bins=8)})
    processor.save_pretrained(tmp_path)
    loaded = MultimodalProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded["audio"], SpectrogramFeatureExtractor)
    assert (loaded["audio"].mean, loaded["audio"].std, loaded["audio"].max_length) == (-2.0, 4.0, 20)
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path / "other"), SpectrogramFeatureExtractor)
    assert torch.equal(loaded["audio"]([short, long], return_tensors="pt")["input_values"], values)


def test_encoders_processor_and_collated_batch_fit_the_model(data):
    encoders = av_digits_encoders(**TINY)
    processor = av_digits_processor(encoders, data["train"])
    rows = [data["train"][i] for i in range(6)]
    batch = MultimodalCollator(processor)(rows)
    assert batch["vision"]["pixel_values"].shape == (6, 3, 28, 28)
    assert batch["audio"]["input_values"].shape == (6, 32, 32)
    assert batch["labels"].tolist() == [r["label"] for r in rows]
    model = MultimodalModel.from_encoders(encoders, num_labels=10)
    out = model(**batch)
    assert out.logits.shape == (6, 10) and torch.isfinite(out.loss)


def test_blanking_keeps_one_modality_and_gradients_stay_finite(data):
    encoders = av_digits_encoders(**TINY)
    processor = av_digits_processor(encoders, data["train"])
    rows = [data["train"][i] for i in range(6)]
    full = MultimodalCollator(processor)(rows)
    blanked = BlankModalities(MultimodalCollator(processor), keep="vision")(rows)
    assert torch.equal(blanked["vision"]["pixel_values"], full["vision"]["pixel_values"])
    assert not blanked["audio"]["input_values"].any() and full["audio"]["input_values"].any()
    model = MultimodalModel.from_encoders(encoders, num_labels=10)
    model(**blanked).loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert torch.isfinite(norm)
    with pytest.raises(ValueError, match="text"):
        BlankModalities(MultimodalCollator(processor), keep="text")(rows)
