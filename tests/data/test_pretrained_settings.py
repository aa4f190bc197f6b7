"""The settings for pretrained encoders: `emoji` (`aim_hf.data.emoji`) and `spoken` (`aim_hf.data.spoken`).

They read Debian's unicode-data, fonts-noto-color-emoji, espeak-ng and dataset-fashion-mnist."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from aim_hf.cli import main
from aim_hf.data import speech_bank
from aim_hf.data.av_digits import load_mnist_5k
from aim_hf.data.emoji import (
    EMOJI_FONT, EMOJI_TEST, SKIN_TONES, EmojiEntry, EmojiSetting, load_emoji_entries, mask_name, render_emoji,
)
from aim_hf.data.settings import PRETRAINED_SETTINGS, load_setting
from aim_hf.data.speech_bank import SAMPLING_RATE, Utterance, bank_utterances, load_speech_bank
from aim_hf.data.spoken import FASHION_MNIST, FASHION_NAMES, SPEECH_RMS, SpokenSetting, load_fashion_mnist, place_in_clip

DEBIAN_LINE = "apt-get install unicode-data fonts-noto-color-emoji espeak-ng dataset-fashion-mnist"
# The README's test command passes on a machine without the optional Debian data; CI installs it.
pytestmark = pytest.mark.skipif(
    not (EMOJI_TEST.is_file() and EMOJI_FONT.is_file() and FASHION_MNIST.is_dir() and shutil.which("espeak-ng")),
    reason=f"needs the optional Debian data: {DEBIAN_LINE}",
)

EMOJI_SIZE = 16  # small images: the tests check the construction, not the pictures


@pytest.fixture(scope="module")
def emoji():
    return load_setting("emoji", seed=0, image_size=EMOJI_SIZE)


def _disjoint(by_split: dict[str, set]) -> bool:
    """Whether no two splits share an item."""
    return sum(map(len, by_split.values())) == len(set().union(*by_split.values()))


def test_emoji_sizes_classes_and_stratified_split(emoji):
    entries = [e for e in load_emoji_entries() if not any(c in SKIN_TONES for c in e.code_points)]
    groups = list(dict.fromkeys(e.group for e in entries))
    assert len(load_emoji_entries()) == 3655 and len(groups) == 9
    assert emoji["train"].features["label"].names == groups
    assert sum(len(emoji[s]) for s in emoji) == len(entries)  # every emoji without a skin tone, once
    assert _disjoint({split: set(emoji[split]["family"]) for split in emoji})
    # Each class is divided 3 : 1 : 2, up to one family (at most 3 emoji without skin tones).
    for g, group in enumerate(groups):
        total = sum(e.group == group for e in entries)
        for split, share in {"train": 1 / 2, "validation": 1 / 6, "test": 1 / 3}.items():
            count = int((np.asarray(emoji[split]["label"]) == g).sum())
            assert abs(count - share * total) <= 3, (group, split, count, total)


def test_emoji_no_family_in_two_splits_with_skin_tones():
    setting = EmojiSetting(drop_skin_tones=False, label_level="subgroup")
    splits = setting.split(seed=0)  # what `load` builds its rows from, without rendering the glyphs
    assert _disjoint({split: {e.family for e in entries} for split, (entries, _) in splits.items()})
    emoji = [e.text for entries, _ in splits.values() for e in entries]
    kept = set(setting.class_names())
    assert len(emoji) == len(set(emoji)) == sum(e.subgroup in kept for e in load_emoji_entries())
    assert any(c in SKIN_TONES for c in map(ord, "".join(emoji)))
    # Every subgroup kept (>= 6 families) is in every split.
    num = len(kept)
    assert num > 80
    for _, labels in splits.values():
        assert np.bincount(labels, minlength=num).min() >= 1


def test_emoji_family_joins_skin_tone_and_gender_variants():
    by_name = {e.name: e for e in load_emoji_entries()}
    running = {by_name[n].family for n in ("person running", "man running", "woman running: dark skin tone")}
    assert len(running) == 1
    assert by_name["thumbs up: medium skin tone"].family == by_name["thumbs up"].family
    assert by_name["thumbs up"].family != by_name["thumbs down"].family
    assert EmojiEntry((0x1F44D, 0x1F3FD), "x", "g", "s").family == "1F44D"


def test_emoji_text_drops_label_words_and_masks(emoji):
    rows = emoji["test"]
    names = rows.features["label"].names
    for text, name, label in zip(rows["text"], rows["name"], rows["label"]):
        label_words = {w.lower() for w in re.split(r"[^A-Za-z]+", names[label]) if w}
        words = [w.lower().strip(":,") for w in text.split()]
        assert not label_words & set(words) and not {w + "s" for w in words} & label_words
        assert text.split() == [w for w in name.split() if w in text.split()]  # the name's words, in order
    flags = [t for t, label in zip(rows["text"], rows["label"]) if names[label] == "Flags"]
    assert flags and not any("flag" in t.lower().split() for t in flags)
    assert "Japan" in [t for split in emoji for t in emoji[split]["text"]]  # "flag: Japan" without "flag:"
    # Label words match in the singular and without punctuation.
    label_words = {"activity", "flag"}  # the words of the labels "Activities" and "Flags"
    assert mask_name("Flags: activities, ball", label_words, 0.0, np.random.default_rng(0)) == "ball"
    # Without the label words dropped, half of the words masked: each text keeps the name's words, in
    # order, and about half of them.
    half = load_setting("emoji", image_size=8, mask_label_words=False, mask_fraction=0.5)["train"]
    kept = [len(t.split()) / len(n.split()) for t, n in zip(half["text"], half["name"])]
    assert 0.4 < np.mean(kept) < 0.6 and {0.0, 1.0} <= set(kept)
    for text, name in zip(half["text"], half["name"]):
        words = iter(name.split())
        assert all(w in words for w in text.split())


def test_emoji_images_are_the_glyphs(emoji):
    row = emoji["validation"][0]
    image = np.asarray(row["vision"])
    assert image.shape == (EMOJI_SIZE, EMOJI_SIZE, 3)
    assert np.array_equal(image, render_emoji(row["emoji"], EMOJI_SIZE))
    assert image.std() > 10 and not np.array_equal(image, render_emoji("\U0001f680", EMOJI_SIZE))


def test_emoji_seed_fixes_the_data(emoji):
    again = load_setting("emoji", seed=0, image_size=EMOJI_SIZE, mask_fraction=0.3)
    for split in emoji:
        assert again[split]["emoji"] == emoji[split]["emoji"] and again[split]["text"] != emoji[split]["text"]
    assert load_setting("emoji", seed=0, image_size=8, mask_fraction=0.3)["test"]["text"] == again["test"]["text"]
    other = load_setting("emoji", seed=1, image_size=EMOJI_SIZE, image_noise=0.2)
    assert set(other["test"]["emoji"]) != set(emoji["test"]["emoji"])
    assert len(other["test"]) == pytest.approx(len(emoji["test"]), abs=10)
    row = other["test"][0]
    clean = render_emoji(row["emoji"], EMOJI_SIZE).astype(float)
    assert 10 < np.abs(np.asarray(row["vision"], float) - clean).mean() < 50  # the image noise


# Small banks: 2 accents x 2 variants x 2 speeds x 2 pitches = 16 utterances of each word.
SMALL_BANK = dict(accents=("en-us", "en-gb"), variants=("m3", "f2"), speeds=(150, 200), pitches=(40, 60))


@pytest.fixture(scope="module")
def bank_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bank"))


def _spoken(bank_cache, **options):
    defaults = dict(SMALL_BANK, split_sizes={"train": 6, "validation": 2, "test": 4}, cache=bank_cache)
    return load_setting("spoken", **{**defaults, **options})


@pytest.fixture(scope="module")
def spoken(bank_cache):
    return _spoken(bank_cache, seed=0)


def test_spoken_sizes_balance_and_no_repeats(spoken):
    images, labels = load_fashion_mnist()
    assert images.shape == (70000, 28, 28) and np.bincount(labels).tolist() == [7000] * 10
    names = spoken["train"].features["label"].names
    assert names[0] == "T-shirt/top" and len(names) == 10
    for split, per_class in {"train": 6, "validation": 2, "test": 4}.items():
        rows = spoken[split]
        assert np.bincount(rows["label"], minlength=10).tolist() == [per_class] * 10
        assert (labels[np.asarray(rows["image_index"])] == np.asarray(rows["label"])).all()  # the class's image
        assert np.array_equal(np.asarray(rows[0]["vision"]), images[rows[0]["image_index"]])
        assert {len(a) for a in rows["audio"]} == {SAMPLING_RATE}
        assert all(-20 <= s <= -10 for s in rows["snr_db"])
    image_ids = [i for split in spoken for i in spoken[split]["image_index"]]
    assert len(image_ids) == len(set(image_ids))
    utterances = {split: set(spoken[split]["utterance"]) for split in spoken}
    assert _disjoint(utterances)
    # The 16 utterances are divided about 6 : 2 : 4, in proportion to the splits' sizes.
    assert sum(map(len, utterances.values())) <= 16
    assert len(utterances["train"]) > len(utterances["test"]) > len(utterances["validation"]) >= 1


def test_spoken_holds_out_voices_and_reads_mnist(bank_cache):
    with pytest.raises(ValueError, match="mnist has 500 images of class 0, the splits need 600"):
        _spoken(bank_cache, images="mnist", split_sizes={"train": 400, "validation": 100, "test": 100})
    # One accent, speed and pitch, four variants: four voices of one utterance each.
    data = _spoken(
        bank_cache, images="mnist", hold_out="voice", split_sizes={"train": 3, "validation": 1, "test": 2},
        accents=("en-us",), variants=("m1", "m3", "f2", "f4"), speeds=(175,), pitches=(50,),
    )  # fmt: skip
    assert _disjoint({split: {u.split()[0] for u in data[split]["utterance"]} for split in data})
    _, labels = load_mnist_5k()
    assert data["test"].features["label"].names[7] == "seven"
    assert (labels[np.asarray(data["test"]["image_index"])] == np.asarray(data["test"]["label"])).all()


def test_spoken_audio_is_the_word_in_noise(bank_cache, spoken):
    # Without noise, a clip is its bank utterance (the class's word) at the speech loudness, padded.
    quiet = _spoken(bank_cache, snr_db=(200.0, 200.0))
    bank = load_speech_bank(
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"),
        bank_utterances(**SMALL_BANK),
        bank_cache,
    )
    row = quiet["train"][0]
    said = bank.audio(row["label"], [str(u) for u in bank.utterances].index(row["utterance"]))
    clip = np.asarray(row["audio"], dtype=np.float32)
    start = int(np.flatnonzero(np.abs(clip) > 1e-6)[0])
    expected = said * SPEECH_RMS / np.sqrt(np.mean(said**2))
    assert np.abs(clip[start : start + len(said)] - expected[: len(clip) - start]).max() < 1e-4
    # Another word is a different signal; the noisy setting keeps the same pairing.
    assert row["image_index"] == spoken["train"][0]["image_index"]
    assert not np.allclose(np.asarray(spoken["train"][0]["audio"]), clip, atol=1e-3)


def test_place_in_clip_noise_level():
    rng = np.random.default_rng(0)
    speech = np.sin(np.linspace(0, 300, 4000)).astype(np.float32) * 0.3
    clip, cut = place_in_clip(speech, 16000, 0.0, rng)
    start = int(np.argmax(np.correlate(clip, speech, "valid")))
    residual = clip.copy()
    residual[start : start + len(speech)] -= speech * SPEECH_RMS / np.sqrt(np.mean(speech**2))
    assert not cut and residual.std() == pytest.approx(SPEECH_RMS, rel=0.05)  # 0 dB: noise as loud as speech
    clip, cut = place_in_clip(np.ones(20000, np.float32), 16000, 20.0, rng)
    assert cut and clip.shape == (16000,) and np.std(clip - SPEECH_RMS) == pytest.approx(SPEECH_RMS / 10, rel=0.05)


def test_spoken_seed_fixes_the_data(bank_cache, spoken):
    again = _spoken(bank_cache, seed=0)
    for split in spoken:
        for column in ("image_index", "utterance", "snr_db"):
            assert again[split][column] == spoken[split][column]
    assert np.array_equal(np.asarray(again["test"]["audio"]), np.asarray(spoken["test"]["audio"]))
    other = _spoken(bank_cache, seed=1)
    assert set(other["test"]["image_index"]) != set(spoken["test"]["image_index"])
    assert set(other["test"]["utterance"]) != set(spoken["test"]["utterance"])


def test_speech_bank_is_cached_by_its_parameters(bank_cache, tmp_path, monkeypatch):
    utterances = (Utterance("en-us+m3", 150, 40), Utterance("en-gb+f2", 200, 60))
    first = load_speech_bank(("bag", "coat"), utterances, tmp_path)
    assert len(list(tmp_path.glob("speech_bank_*.npz"))) == 1
    assert 0.1 < len(first.audio(0, 0)) / SAMPLING_RATE < 1.0 and np.abs(first.audio(1, 1)).max() > 0.1

    def no_synthesis(*args):
        raise AssertionError("the cached bank should have been read")

    monkeypatch.setattr(speech_bank, "synthesize", no_synthesis)
    cached = load_speech_bank(("bag", "coat"), utterances, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first.clips, cached.clips))
    with pytest.raises(AssertionError, match="cached bank"):  # other parameters, another bank
        load_speech_bank(("bag", "coat"), utterances[:1], tmp_path)


def test_pretrained_settings_errors_are_one_line(bank_cache, capsys, monkeypatch):
    assert set(PRETRAINED_SETTINGS) == {"emoji", "spoken"}
    with pytest.raises(ValueError, match="Setting 'emoji' has no option num_mel_bins; its options: label_level"):
        load_setting("emoji", num_mel_bins=32)
    with pytest.raises(ValueError, match="Setting 'strong' has no option label_level"):
        load_setting("strong", label_level="group")
    with pytest.raises(ValueError, match="label_level must be one of"):
        EmojiSetting(label_level="emoji")
    with pytest.raises(ValueError, match="espeak-ng has no voice 'en-us\\+zz9'"):
        _spoken(bank_cache, variants=("zz9",))
    with pytest.raises(ValueError, match="hold_out must be one of"):
        SpokenSetting(hold_out="speaker")
    # The CLI names what is missing or wrong before loading anything.
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    for argv, message in (
        ([], "--setting 'spoken' needs --encoders for ['vision', 'audio'], e.g. '{\"vision\""),
        (["--encoders", '{"vision": "a", "text": "b"}'], "--setting 'spoken' needs --encoders for ['vision', 'audio']"),
        (["--setting_kwargs", '{"snr": 3}'], "Setting 'spoken' has no option snr; its options: images"),
        (["--setting_kwargs", '{"hold_out": "speaker"}'], "hold_out must be one of"),
        (["--setting_kwargs", '{"image_noise": 0.1}'], "give the image noise as --image_noise"),
        (["--modality_columns", '{"vision": "x"}'], "--setting 'spoken' has its own columns: no --modality_columns"),
        (["--encoders", '{"vision": "a", "audio": "b"}', "--freeze", '{"text": 1}'], "--freeze names 'text'; the model's modalities are ['vision', 'audio']"),
        (["--batch_norm", "train"], "--batch_norm must be 'as_loaded', 'eval' or a momentum in [0, 1]"),
    ):
        assert main(["train", "--setting", "spoken", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"aim-hf train: error: {message}"), err
        assert len(err.splitlines()) == 2  # the message and the hint about --debug
    assert main(["train", "--setting", "strong", "--setting_kwargs", '{"a": 1}']) == 2
    assert "--setting_kwargs needs --dataset_name or --setting emoji/spoken" in capsys.readouterr().err


# ------------------------------------------------------------------ aim-hf train on the settings


@pytest.fixture(scope="module")
def tiny_setting_encoders(tmp_path_factory):
    """Tiny stand-ins for the settings' offline encoders, by modality (`tiny.save_tiny_setting_encoders`)."""
    from tiny import save_tiny_setting_encoders

    paths = save_tiny_setting_encoders(tmp_path_factory.mktemp("setting_encoders"))
    return {"vision": paths["mobilenet_v2"], "audio": paths["whisper_tiny_en"], "text": paths["minilm"]}


def _train_setting(setting, encoders, out, *options, monkeypatch):
    """`aim-hf train --setting SETTING` for a few steps; the saved metrics."""
    import json

    monkeypatch.setenv("AIM_HF_DEBUG", "1")  # a failure shows its traceback
    argv = [
        "train", "--setting", setting, "--encoders", json.dumps(encoders), "--output_dir", str(out),
        "--num_train_epochs", "1", "--max_train_samples", "16", "--max_eval_samples", "8",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--eval_strategy", "no",
        "--modulation", "none", *options,
    ]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "all_results.json").read_text())


def test_train_on_emoji(tiny_setting_encoders, tmp_path, monkeypatch):
    from aim_hf.modeling import MultimodalModel

    encoders = {m: tiny_setting_encoders[m] for m in ("vision", "text")}
    metrics = _train_setting(
        "emoji", encoders, tmp_path, "--setting_kwargs", '{"image_size": 16, "label_level": "group"}',
        "--freeze", '{"text": 1}', "--batch_norm", "eval", "--learning_rate_mapping", '{"vision": 1e-4}',
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert {"test_accuracy", "test_vision_probe_accuracy", "test_text_probe_accuracy"} <= set(metrics)
    model = MultimodalModel.from_pretrained(tmp_path)
    assert model.config.id2label[8] == "Flags" and model.config.num_labels == 9  # the setting's classes
    assert model.config.freeze == {"vision": 0, "text": 1}


def test_train_on_spoken(tiny_setting_encoders, bank_cache, tmp_path, monkeypatch):
    import json

    encoders = {m: tiny_setting_encoders[m] for m in ("vision", "audio")}
    knobs = {**SMALL_BANK, "split_sizes": {"train": 2, "validation": 1, "test": 1}, "cache": bank_cache}
    metrics = _train_setting(
        "spoken", encoders, tmp_path, "--setting_kwargs", json.dumps(knobs), "--only_modality", "audio",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert {"test_accuracy", "test_audio_probe_accuracy", "test_vision_probe_accuracy"} <= set(metrics)
    config = json.loads((tmp_path / "config.json").read_text())
    assert list(config["id2label"].values()) == FASHION_NAMES
    assert sorted(config["encoder_configs"]) == ["audio", "vision"]
