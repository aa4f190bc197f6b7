"""Bad input and faults fail clearly through `AIMTrainer.train`: each error names the example, the
key or the file, and says what to do; an interrupted checkpoint save leaves the previous one usable."""

from __future__ import annotations

import io
import os

import pytest
import torch
from datasets import Dataset
from transformers import Trainer

from aim_hf import AIMTrainer, MultimodalModel
from tiny import make_rows

MODALITIES = ("vision", "audio", "text")


@pytest.fixture
def train_rows(build_model, build_processor, make_args):
    """train_rows(rows, resume_from=None, **args) trains 2 steps of batch 4 on `rows` (a
    datasets.Dataset is built from them)."""

    def train(rows, resume_from=None, **overrides):
        trainer = AIMTrainer(
            model=build_model(MODALITIES),
            args=make_args(**{"modulation": "none", "per_device_train_batch_size": 4, "max_steps": 2, **overrides}),
            train_dataset=Dataset.from_list(rows),
            processing_class=build_processor(MODALITIES),
        )
        trainer.train(resume_from_checkpoint=resume_from)
        return trainer

    return train


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_truncated_image_file(train_rows, tmp_path):
    rows = make_rows(8, MODALITIES)
    for i, row in enumerate(rows):
        path = tmp_path / f"image{i}.png"
        path.write_bytes(png_bytes(row["vision"]))
        row["vision"] = str(path)  # a column of file paths, decoded by the collator
    broken = tmp_path / "image2.png"
    broken.write_bytes(broken.read_bytes()[:60])
    message = r"Example \d, modality 'vision': cannot read the image file '.*image2\.png'.*Fix or drop this row"
    with pytest.raises(ValueError, match=message):
        train_rows(rows)


def test_corrupt_audio(train_rows):
    rows = make_rows(8, MODALITIES)
    rows[1]["audio"] = {"array": rows[1]["audio"]["array"][:0], "sampling_rate": 16000}  # truncated to nothing
    with pytest.raises(ValueError, match=r"Example \d, modality 'audio': the audio is empty.*Fix or drop this row"):
        train_rows(rows)
    rows = make_rows(8, MODALITIES)
    rows[3]["audio"]["array"][10] = float("nan")
    with pytest.raises(ValueError, match=r"Example \d, modality 'audio'.*NaN"):
        train_rows(rows)


def test_empty_text_trains(train_rows):
    """An empty or blank text is text (the tokenizer encodes its special tokens alone), not a bad row;
    a missing one is (test_missing_modality_key, tests/test_data_checks.py)."""
    rows = make_rows(8, MODALITIES)
    rows[2]["text"], rows[5]["text"] = "", "  "
    assert train_rows(rows).state.global_step == 2


def test_label_outside_num_labels(train_rows):
    rows = make_rows(8, MODALITIES)
    rows[1]["label"] = 7
    with pytest.raises(ValueError, match=r"num_labels=3.*got 7 at batch position\(s\) \[\d\].*num_labels"):
        train_rows(rows)


def test_missing_modality_key(train_rows):
    rows = [{k: v for k, v in row.items() if k != "audio"} for row in make_rows(8, MODALITIES)]
    with pytest.raises(ValueError, match=r"Example 0 of the batch has no 'audio' value for modality 'audio'"):
        train_rows(rows)


def test_encoder_checkpoint_loaded_as_multimodal_model(encoder_paths):
    with pytest.raises(ValueError, match=r"Cannot load a MultimodalModel from '.*text'.*from_encoders"):
        MultimodalModel.from_pretrained(encoder_paths["text"])


def test_resume_with_another_method_or_model(train_rows, build_model, build_processor, make_args):
    trainer = train_rows(make_rows(8, MODALITIES), save_strategy="steps", save_steps=2)
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-2")
    dataset = Dataset.from_list(make_rows(8, MODALITIES))
    other_method = AIMTrainer(
        model=build_model(MODALITIES),
        args=make_args(modulation="ogm_ge", max_steps=3),
        train_dataset=dataset,
        processing_class=build_processor(MODALITIES),
    )
    with pytest.raises(ValueError, match=r"checkpoint-2 was trained with modulation='none'.*same method"):
        other_method.train(resume_from_checkpoint=True)
    other_model = AIMTrainer(
        model=build_model(("vision", "text")),
        args=make_args(modulation="none", max_steps=3),
        train_dataset=dataset,
        processing_class=build_processor(("vision", "text")),
    )
    with pytest.raises(ValueError, match=r"checkpoint-2 holds another model.*new output_dir"):
        other_model.train(resume_from_checkpoint=checkpoint)


def test_interrupted_save_leaves_previous_checkpoint(train_rows, monkeypatch, make_args):
    save_optimizer = Trainer._save_optimizer_and_scheduler

    def crash_at_step_4(self, output_dir):
        if self.state.global_step == 4:  # the model file of checkpoint-4 is written already
            raise OSError("disk full")
        save_optimizer(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", crash_at_step_4)
    with pytest.raises(OSError, match="disk full"):
        train_rows(make_rows(8, MODALITIES), max_steps=4, save_strategy="steps", save_steps=2)
    output_dir = make_args().output_dir
    broken = os.path.join(output_dir, "checkpoint-4")
    assert any(name.endswith(".safetensors") for name in os.listdir(broken))
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save_optimizer)

    # Naming the broken checkpoint fails clearly; `True` resumes from checkpoint-2 and finishes.
    with pytest.raises(ValueError, match=r"checkpoint-4 is not a complete checkpoint.*earlier checkpoint"):
        train_rows(make_rows(8, MODALITIES), max_steps=4, resume_from=broken)
    loaded = []
    load = AIMTrainer._load_modulation_state
    spy = lambda self, path: (loaded.append(path), load(self, path))[1]  # noqa: E731
    monkeypatch.setattr(AIMTrainer, "_load_modulation_state", spy)
    trainer = train_rows(make_rows(8, MODALITIES), max_steps=4, resume_from=True)
    assert trainer.state.global_step == 4
    assert [os.path.basename(path) for path in loaded] == ["checkpoint-2"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
