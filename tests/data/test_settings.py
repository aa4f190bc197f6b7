"""The benchmark settings built from the AV-digits sources (`aim_hf.data.settings`)."""

from __future__ import annotations

import numpy as np
import pytest

from aim_hf.data import load_av_digits
from aim_hf.data.av_digits import NUM_MEL_BINS, load_fsdd_mfcc, load_mnist_5k, mfcc_to_log_mel
from aim_hf.data.settings import SETTINGS, Setting, load_setting


@pytest.fixture(scope="module")
def sources():
    images, image_labels = load_mnist_5k()
    mfccs, audio_labels = load_fsdd_mfcc()
    return images, image_labels, mfccs, audio_labels


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def built(request):
    return SETTINGS[request.param], load_setting(request.param)


def test_av_digits_setting_is_the_embedded_data():
    setting, embedded = load_setting("av_digits"), load_av_digits(seed=0)
    for split in embedded:
        for column in ("label", "image_index", "recording_index"):
            assert setting[split][column] == embedded[split][column]


def test_sizes_balance_and_no_source_repeats(built):
    setting, data = built
    for split, per_digit in setting.split_sizes.items():
        labels = np.asarray(data[split]["label"])
        assert np.bincount(labels, minlength=10).tolist() == [per_digit] * 10
        assert not np.all(np.diff(labels) >= 0)  # rows are interleaved, not sorted by label
    images = [i for split in data for i in data[split]["image_index"]]
    recordings = [r for split in data for r in data[split]["recording_index"]]
    assert len(set(images)) == len(images) and len(set(recordings)) == len(recordings)


def test_construction_does_what_the_setting_says(built, sources):
    setting, data = built
    _, image_labels, mfccs, audio_labels = sources
    ambiguous = {d for pair in setting.ambiguous_pairs for d in pair}
    for split in data:
        labels = np.asarray(data[split]["label"])
        shown = image_labels[np.asarray(data[split]["image_index"])]
        said = audio_labels[np.asarray(data[split]["recording_index"])]
        # Images show the label, except inside an ambiguous pair, where they show either digit of it,
        # half and half over the pair's examples.
        outside = ~np.isin(labels, list(ambiguous))
        assert (shown[outside] == labels[outside]).all()
        for a, b in setting.ambiguous_pairs:
            inside = np.isin(labels, [a, b])
            assert set(shown[inside]) == {a, b} and (shown[inside] == a).sum() == inside.sum() // 2
        # Recordings say the label for exactly the audio_match share of each digit, and every digit is
        # said equally often, so a recording's digit tells the label with probability audio_match.
        for digit in range(10):
            assert (said[labels == digit] == digit).mean() == pytest.approx(setting.audio_match)
        assert len(set(np.bincount(said, minlength=10).tolist())) == 1
    # The spectrogram is the recovered log-mel of the recording's MFCCs.
    row = data["train"][0]
    clean = mfcc_to_log_mel(mfccs[row["recording_index"]], NUM_MEL_BINS)
    assert np.abs(np.asarray(row["audio"]) - clean).max() < 1e-4


def test_seed_fixes_the_construction_and_errors_name_the_problem():
    a, b = load_setting("hopeless", seed=1), load_setting("hopeless", seed=1)
    assert a["test"]["recording_index"] == b["test"]["recording_index"]
    assert a["test"]["recording_index"] != load_setting("hopeless", seed=2)["test"]["recording_index"]
    with pytest.raises(ValueError, match="Unknown setting 'nope'"):
        load_setting("nope")
    with pytest.raises(ValueError, match="more images of digit"):
        Setting("big", "test", split_sizes={"train": 400, "validation": 100, "test": 100}).load()
