"""AIMTrainer end to end on tiny encoders: every method and fusion, metrics, logs, save/load."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from aim_hf import AIMConfig, AIMTrainer, MultimodalModel
from aim_hf.metrics import macro_f1


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "film"])
@pytest.mark.parametrize("method", ["none", "ogm_ge"])
def test_train_each_method_and_fusion(build_model, build_processor, build_dataset, make_args, method, fusion):
    modalities = ("vision", "audio", "text")
    model = build_model(modalities, fusion=fusion)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = AIMTrainer(
        model=model,
        args=make_args(modulation=method),
        train_dataset=build_dataset(24, modalities),
        processing_class=build_processor(modalities),
    )
    result = trainer.train()
    assert result.global_step == 4 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("encoders.vision") for n in changed)
    assert any(n.startswith("fusion") for n in changed) and any(n.startswith("probes") for n in changed)
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs and all(f"probe_accuracy/{m}" in logs[-1] for m in modalities)
    if method == "ogm_ge":
        assert "ogm/coeff/vision" in logs[-1] and "ogm/ratio/audio" in logs[-1]


def test_evaluate_reports_fused_and_probe_metrics(build_model, build_processor, build_dataset, make_args):
    modalities = ("vision", "text")
    trainer = AIMTrainer(
        model=build_model(modalities),
        args=make_args(modulation="none"),
        train_dataset=build_dataset(12, modalities),
        eval_dataset=build_dataset(12, modalities, seed=1),
        processing_class=build_processor(modalities),
    )
    metrics = trainer.evaluate()
    for key in ("eval_accuracy", "eval_f1", "eval_vision_probe_accuracy", "eval_text_probe_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    # The eval accuracy is the accuracy of the model's own predictions, handed over by name.
    predictions = trainer.predict(build_dataset(12, modalities, seed=1))
    assert set(predictions.predictions) == {"logits", "modality_logits", "probe_logits"}
    logits, probes = predictions.predictions["logits"], predictions.predictions["probe_logits"]
    assert metrics["eval_accuracy"] == pytest.approx((logits.argmax(-1) == predictions.label_ids).mean())
    for m in modalities:
        probe_accuracy = (probes[m].argmax(-1) == predictions.label_ids).mean()
        assert metrics[f"eval_{m}_probe_accuracy"] == pytest.approx(probe_accuracy)
    # Another set of outputs handed over (modality_logits left out, depth_features in) shifts no metric.
    other = trainer.evaluate(ignore_keys=["modality_logits", "fused_loss"])
    scores = [key for key in metrics if key.endswith(("accuracy", "f1"))]
    assert len(scores) == 6 and {key: other[key] for key in scores} == {key: metrics[key] for key in scores}


@pytest.mark.parametrize("unlabelled", ["no label column", "None labels"])
@pytest.mark.parametrize("method", ["none", "mla"])
def test_predict_on_unlabelled_data(build_model, build_processor, build_dataset, make_args, unlabelled, method):
    modalities = ("vision", "text")
    trainer = AIMTrainer(
        model=build_model(modalities), args=make_args(modulation=method), processing_class=build_processor(modalities)
    )
    labelled = build_dataset(8, modalities, seed=1)
    if unlabelled == "no label column":
        rows = labelled.remove_columns("label")
    else:
        rows = labelled.map(lambda row: {"label": None})
    predicted = trainer.predict(rows)
    assert predicted.label_ids is None
    assert not any(key.endswith(("loss", "accuracy", "f1")) for key in predicted.metrics)
    # The same fused logits (MLA's entropy-weighted ones under mla) and probes as with the labels.
    reference = trainer.predict(labelled).predictions
    assert predicted.predictions["logits"].shape == (8, 3)
    np.testing.assert_allclose(predicted.predictions["logits"], reference["logits"], rtol=1e-5, atol=1e-6)
    for m in modalities:
        np.testing.assert_allclose(predicted.predictions["probe_logits"][m], reference["probe_logits"][m], rtol=1e-5)


def test_macro_f1_against_hand_count():
    import numpy as np

    predictions, labels = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp1 fp0 fn1 -> 2/3; class 2: 1.
    assert macro_f1(predictions, labels, 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_train_save_reload(build_model, build_processor, build_dataset, make_args, tmp_path):
    modalities = ("vision", "audio", "text")
    processor = build_processor(modalities)
    trainer = AIMTrainer(
        model=build_model(modalities),
        args=make_args(modulation="ogm_ge"),
        train_dataset=build_dataset(12, modalities),
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    reloaded = MultimodalModel.from_pretrained(tmp_path / "final").eval()
    from aim_hf import MultimodalCollator, MultimodalProcessor

    loaded_processor = MultimodalProcessor.from_pretrained(tmp_path / "final")
    batch = MultimodalCollator(loaded_processor)([build_dataset(4, modalities)[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trainer.model(**batch).logits)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown modulation 'ogm'"):
        AIMConfig(output_dir="x", modulation="ogm", use_cpu=True)
    with pytest.raises(TypeError, match="MultimodalModel"):
        AIMTrainer(model=torch.nn.Linear(2, 2), args=AIMConfig(output_dir="x", modulation="none", use_cpu=True))


def test_saved_weights_have_the_mode_of_the_other_files(build_model, tmp_path):
    """safetensors writes its file owner-only (600); the weights must be readable as the config is (644 under
    the usual umask 022)."""
    umask = os.umask(0o022)
    try:
        build_model(("vision", "text")).save_pretrained(tmp_path / "model")
    finally:
        os.umask(umask)
    modes = {name: os.stat(tmp_path / "model" / name).st_mode & 0o777 for name in os.listdir(tmp_path / "model")}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinned memory is right with an accelerator")
def test_no_pin_memory_warning_without_an_accelerator(build_model, build_processor, build_dataset, make_args):
    """Without a GPU (and without use_cpu=True), torch warns at every DataLoader that pin_memory is unused."""
    args = make_args(modulation="none", use_cpu=False, max_steps=1)
    assert args.dataloader_pin_memory is False
    trainer = AIMTrainer(
        model=build_model(("vision", "text")),
        args=args,
        train_dataset=build_dataset(6, ("vision", "text")),
        processing_class=build_processor(("vision", "text")),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "pin_memory" in str(w.message)]
