"""Gradient accumulation equals the big batch, and bf16 on CPU trains, for every modulation method."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

from aim_hf import MODULATIONS
from dist_train import METHODS, assert_close, make_trainer, snapshot

MICRO, K, STEPS = 2, 2, 3


@pytest.mark.parametrize("method", METHODS)
def test_accumulation_equals_big_batch(method, encoder_paths, tmp_path):
    runs = {}
    for name, batch, accumulation in (("big", MICRO * K, 1), ("accumulated", MICRO, K)):
        trainer = make_trainer(
            method,
            encoder_paths,
            tmp_path / name,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=STEPS,
        )
        trainer.train()
        runs[name] = snapshot(trainer)
    big, accumulated = runs["big"], runs["accumulated"]
    # The k micro-batches of each step hold the big batch's rows (the data loader reads one batch
    # ahead, so only the first STEPS are compared).
    micro = accumulated["batches"]
    assert [sum(micro[i : i + K], []) for i in range(0, K * STEPS, K)] == big["batches"][:STEPS]
    # The modulation runs once per optimizer step, not once per micro-batch.
    assert accumulated["modulation_steps"] == big["modulation_steps"] == STEPS
    # Its statistics (e.g. OGM-GE's scores), the loss terms and the final state match the big batch.
    assert_close(accumulated["logs"], big["logs"], f"{method} logs")
    assert_close(accumulated["modulation"], big["modulation"], f"{method} state")
    assert_close(accumulated["params"], big["params"], f"{method} params")


@pytest.mark.parametrize("method", METHODS)
def test_bf16_on_cpu_trains_without_nan(method, encoder_paths, tmp_path):
    trainer = make_trainer(method, encoder_paths, tmp_path, bf16=True, max_steps=3)
    seen = []
    layer = next(iter(trainer.model.unit_modules("vision")[0].values()))  # a Linear inside an encoder
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    handle.remove()
    assert torch.bfloat16 in seen, "bf16=True did not autocast the forward to bfloat16"
    for log in snapshot(trainer)["logs"]:
        assert all(math.isfinite(v) for v in log.values() if isinstance(v, float)), log
    for name, p in trainer.model.named_parameters():
        assert torch.isfinite(p).all(), name
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def load_gpu_check():
    """benchmarks/gpu_check.py as a module (benchmarks/ is not a package)."""
    path = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", METHODS)
def test_skipped_overflow_step_leaves_no_trace(method, tmp_path):
    """The GradScaler path of gpu_check.py, on CPU with a CPU GradScaler: a step whose gradients
    overflow is skipped and changes neither the parameters nor the modulation state, and the
    modulation's step runs once per optimizer step."""
    assert load_gpu_check().check_fp16_overflow(method, str(tmp_path)) == []


def test_gpu_check_script_runs_tiny_on_cpu(capsys):
    """benchmarks/gpu_check.py runs at tiny sizes on CPU and prints a result for every method."""
    status = load_gpu_check().main(["--tiny", "--steps", "1", "--warmup", "1"])
    out = capsys.readouterr().out
    for method in MODULATIONS:
        assert re.search(rf"^  {method} +(ok|FAILED: .+)$", out, re.M), out  # the overflow check's line
        assert re.search(rf"^  {method} +\d+\.\d+ +\d+\.\d\d$", out, re.M), out  # a row of the speed table
    assert status == int("FAILED" in out)
