"""AIM's own passes through the encoders (`aim_hf.modulation.aim.auxiliary`): the Auxiliary Blocks'
pass replays the layers before its first masked group, and the model's forward carries none of it."""

from __future__ import annotations

import inspect

import torch
from tiny import make_rows

from aim_hf import MultimodalCollator, MultimodalModel
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
