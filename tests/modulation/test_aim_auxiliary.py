"""AIM's own passes through the encoders (`aim_hf.modulation.aim.auxiliary`): the Auxiliary Blocks'
pass replays the layers before its first masked group, and the model's forward carries none of it."""

from __future__ import annotations

import copy
import inspect

import torch
from tiny import IMAGE_SIZE, NUM_LABELS, make_rows
from transformers import MobileNetV2Config, MobileNetV2Model

from aim_hf import MultimodalCollator, MultimodalModel
from aim_hf.batch_norm import apply_batch_norm
from aim_hf.modulation.aim.auxiliary import GroupOutputs, auxiliary_logits

THREE = ("vision", "audio", "text")


def test_auxiliary_pass_equals_full_recompute(build_model, build_processor):
    """In eval mode (no dropout) the replayed pass equals the whole model run again with the same
    units switched off by a hook; text (BERT, padded) enters unmasked."""
    model = build_model().eval()
    batch = MultimodalCollator(build_processor(THREE))(make_rows(4, THREE))
    name, module = next(iter(model.unit_modules("vision")[2].items()))
    mask = torch.ones(module.out_features)
    mask[::2] = 0
    recorder = GroupOutputs(model)
    with recorder.recording(["vision"]):
        out = model(**batch)
    inputs = {m: batch[m] for m in THREE}
    features = {m: feats[-1] for m, feats in out.depth_features.items()}
    logits = auxiliary_logits(model, inputs, features, recorder.outputs, {"vision": {name: mask}})

    handle = module.register_forward_hook(lambda mod, args, output: output * mask)
    try:
        full = model(**batch)
    finally:
        handle.remove()
    torch.testing.assert_close(logits, full.logits, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(logits, out.logits)


def test_the_model_forward_takes_no_method_arguments():
    """The pushed model's forward: labels, the modalities' inputs, and OPM/MLA's per-sample feature
    keep-mask (a plain modality dropout); nothing of AIM's auxiliary pass."""
    parameters = set(inspect.signature(MultimodalModel.forward).parameters)
    assert parameters == {"self", "labels", "feature_keep", "modality_inputs"}


def _running_statistics(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if n.rsplit(".", 1)[-1].startswith(("running_", "num_batches"))}


def test_the_auxiliary_pass_leaves_batch_norm_statistics_alone(encoder_paths, build_processor, tmp_path):
    """A BatchNorm encoder (MobileNetV2, torchvision's momentum): the masked pass normalises with its
    batch's statistics, as a training forward with the same units switched off does, but the running
    statistics the model is evaluated with stay those of the unaltered training forward."""
    torch.manual_seed(0)
    MobileNetV2Model(MobileNetV2Config(image_size=IMAGE_SIZE, depth_multiplier=0.25)).save_pretrained(tmp_path / "cnn")
    encoders = {"vision": str(tmp_path / "cnn"), "text": encoder_paths["text"]}
    model = MultimodalModel.from_encoders(encoders, num_labels=NUM_LABELS)
    apply_batch_norm(model.train(), "0.1")
    model.encoders["text"].eval()  # no dropout draw: both passes see the same text features
    text_inputs = MultimodalCollator(build_processor(("text",)))(make_rows(6, ("text",)))["text"]
    batch = {"vision": {"pixel_values": torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE)}, "text": text_inputs}
    name, module = next(iter(model.unit_modules("vision")[1].items()))
    mask = torch.ones(module.out_channels)
    mask[::2] = 0
    masked = copy.deepcopy(model)  # the same training forward, run whole with the units switched off
    masked_module = dict(masked.named_modules())[next(n for n, m in model.named_modules() if m is module)]
    masked_module.register_forward_hook(lambda mod, args, output: output * mask[:, None, None])
    with torch.no_grad():
        expected = masked(**batch).logits

        recorder = GroupOutputs(model)
        with recorder.recording(["vision"]):
            out = model(**batch)
        after_forward = _running_statistics(model)
        features = {m: feats[-1] for m, feats in out.depth_features.items()}
        logits = auxiliary_logits(model, batch, features, recorder.outputs, {"vision": {name: mask}})
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    after_pass = _running_statistics(model)
    assert after_pass and all(torch.equal(after_forward[n], after_pass[n]) for n in after_forward)
    assert model.encoders["vision"].training and all(
        m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    )
