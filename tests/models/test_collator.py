"""The collator: each modality through its own processor, padding, masks, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aim_hf import MultimodalCollator, MultimodalProcessor
from tiny import make_rows


def test_collates_every_kind(build_processor):
    modalities = ("vision", "audio", "text", "speech")
    rows = make_rows(3, modalities)
    rows[0]["text"] = "w1 w2 w3 w4 w5 w6 w7 w8"  # longer: the others are padded
    rows[1]["speech"] = {"array": rows[1]["speech"]["array"][:1000], "sampling_rate": 16000}
    batch = MultimodalCollator(build_processor(modalities))(rows)
    assert batch["vision"]["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["audio"]["input_values"].shape == (3, 32, 16)
    text = batch["text"]
    assert text["input_ids"].shape == text["attention_mask"].shape and text["attention_mask"][1].sum() < text["attention_mask"][0].sum()
    speech = batch["speech"]
    assert speech["input_values"].shape[1] == 4000 and speech["attention_mask"][1].sum() == 1000
    assert torch.equal(batch["labels"], torch.tensor([0, 1, 2]))


def test_columns_map_modalities_to_dataset_columns(build_processor):
    rows = [{"img": r["vision"], "caption": r["text"], "y": r["label"]} for r in make_rows(2, ("vision", "text"))]
    collator = MultimodalCollator(build_processor(("vision", "text")), columns={"vision": "img", "text": "caption"}, label_column="y")
    batch = collator(rows)
    assert batch["vision"]["pixel_values"].shape[0] == 2 and batch["labels"].tolist() == [0, 1]


def test_processor_save_load(build_processor, tmp_path):
    processor = build_processor(("vision", "audio", "text"))
    processor.save_pretrained(tmp_path)
    loaded = MultimodalProcessor.from_pretrained(tmp_path)
    assert loaded.kinds == processor.kinds
    rows = make_rows(2, ("vision", "audio", "text"))
    a, b = MultimodalCollator(processor)(rows), MultimodalCollator(loaded)(rows)
    for m in ("vision", "audio", "text"):
        for k in a[m]:
            assert torch.equal(a[m][k], b[m][k])


@pytest.mark.parametrize(
    "modality, value, message",
    [
        ("text", 3, "Example 1, modality 'text': the text is not a string"),
        ("vision", {"bytes": b"not an image"}, "Example 1, modality 'vision': cannot read the image"),
        ("audio", {"array": np.array([]), "sampling_rate": 16000}, "Example 1, modality 'audio': the audio is empty"),
        ("audio", {"array": np.ones(100), "sampling_rate": 8000}, "sampled at 8000 Hz"),
        ("audio", None, "Example 1 of the batch has no 'audio' value"),
    ],
)
def test_bad_rows_name_the_row_and_modality(build_processor, modality, value, message):
    rows = make_rows(3, ("vision", "audio", "text"))
    rows[1][modality] = value
    with pytest.raises(ValueError, match=message):
        MultimodalCollator(build_processor(("vision", "audio", "text")))(rows)


def test_empty_text_is_text(build_processor):
    """A tokenizer encodes an empty string (its special tokens alone): a valid row, as in the data check."""
    rows = make_rows(2, ("vision", "text"))
    rows[1]["text"] = ""
    batch = MultimodalCollator(build_processor(("vision", "text")))(rows)
    assert batch["text"]["attention_mask"][1].sum() == 2  # [CLS] [SEP]


def test_unlabelled_rows_give_no_labels_and_mixed_rows_are_refused(build_processor):
    rows = make_rows(3, ("vision", "text"))
    collator = MultimodalCollator(build_processor(("vision", "text")))
    no_column = [{k: v for k, v in row.items() if k != "label"} for row in rows]
    assert "labels" not in collator(no_column)
    assert "labels" not in collator([{**row, "label": None} for row in rows])
    with pytest.raises(ValueError, match="Some examples of the batch have a 'label' and some have none"):
        collator([rows[0], no_column[1]])
