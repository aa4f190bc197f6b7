"""Checks for the GPU machine: the fp16 GradScaler path, and training speed at real sizes.

1. fp16 overflow: every modulation method trains a small model with `fp16=True`; one step's loss
   is made infinite, so its gradients overflow and the GradScaler skips it. The check asserts that
   on that step the parameters and the modulation state stay unchanged, the scale drops, the
   modulation's `on_gradients_ready` runs exactly once (as on every step), nothing is carried into the next
   step, and training goes on with finite values afterwards.
2. Speed: ViT-B/16 + AST-base shapes (built from their default configs, random weights), batch 32,
   bf16: samples per second of every method side by side, from pre-processed tensors (so the data
   pipeline is not measured).

    python benchmarks/gpu_check.py            # on a CUDA machine
    python benchmarks/gpu_check.py --tiny     # tiny sizes on CPU, as the tests run it

On CPU `fp16=True` does nothing (no autocast, no GradScaler), so with `--tiny` on CPU the overflow
check puts a CPU `GradScaler` into the accelerator by hand: the skip logic is the same; what
differs is that there is no fp16 autocast and that gradient clipping sees the scaled gradients
(accelerate unscales before clipping only under fp16).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from torch.utils.data import Dataset
from transformers import ASTConfig, AutoModel, TrainerCallback, ViTConfig

from aim_hf import MODULATIONS, AIMConfig, AIMTrainer, MultimodalModel

NUM_LABELS = 6
TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)


def encoder_configs(tiny: bool) -> dict[str, Any]:
    """ViT-B/16 and AST-base shapes (the configs' defaults), or tiny ones."""
    if tiny:
        return {
            "vision": ViTConfig(**TINY, image_size=32, patch_size=8),
            "audio": ASTConfig(**TINY, num_mel_bins=16, max_length=32, patch_size=8, frequency_stride=8, time_stride=8),
        }
    return {"vision": ViTConfig(), "audio": ASTConfig()}


class RandomInputs(Dataset):
    """Pre-processed random inputs of the encoders' shapes, with labels that depend on them a little."""

    def __init__(self, configs: dict[str, Any], size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        vision, audio = configs["vision"], configs["audio"]
        self.labels = torch.randint(NUM_LABELS, (size,), generator=g)
        self.pixels = torch.randn(size, 3, vision.image_size, vision.image_size, generator=g)
        self.spectra = torch.randn(size, audio.max_length, audio.num_mel_bins, generator=g)
        self.pixels += self.labels.view(-1, 1, 1, 1) * 0.1
        self.spectra += self.labels.view(-1, 1, 1) * 0.05

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.pixels[i], "input_values": self.spectra[i], "label": self.labels[i]}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "vision": {"pixel_values": torch.stack([e["pixel_values"] for e in examples])},
        "audio": {"input_values": torch.stack([e["input_values"] for e in examples])},
        "labels": torch.stack([e["label"] for e in examples]),
    }


def build_model(configs: dict[str, Any], seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    encoders = {m: AutoModel.from_config(c) for m, c in configs.items()}
    return MultimodalModel.from_encoders(encoders, num_labels=NUM_LABELS)


def make_trainer(
    method: str,
    configs: dict[str, Any],
    batch: int,
    steps: int,
    output_dir: str,
    trainer_class: type[AIMTrainer] = AIMTrainer,
    **args: Any,
) -> AIMTrainer:
    config = AIMConfig(
        output_dir=output_dir,
        modulation=method,
        modulation_start=0,
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=1e-4,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        **args,
    )
    dataset = RandomInputs(configs, batch * (steps + 1))
    return trainer_class(model=build_model(configs), args=config, train_dataset=dataset, data_collator=collate)


# ---------------------------------------------------------------------------- 1. fp16 overflow
class OverflowTrainer(AIMTrainer):
    """Makes the loss of optimizer step `overflow_step` (0-based) infinite, so its gradients overflow."""

    overflow_step = 2

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training and self.state.global_step == self.overflow_step:
            result = (result[0] * float("inf"), result[1]) if return_outputs else result * float("inf")
        return result


class WatchOverflowStep(TrainerCallback):
    """Records the parameters, the modulation state and the loss scale around the overflow step,
    and how often the modulation's `on_gradients_ready` ran during each optimizer step."""

    def __init__(self, trainer: AIMTrainer) -> None:
        self.trainer = trainer
        self.calls: list[int] = []
        self.before = self.after = None
        step = trainer.modulation.on_gradients_ready

        def counted_step(ctx: Any) -> None:
            self.calls[-1] += 1
            step(ctx)

        trainer.modulation.on_gradients_ready = counted_step

    def _record(self) -> dict[str, Any]:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return {
            "params": {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()},
            "modulation": copy.deepcopy(self.trainer.modulation.state_dict()),
            "scale": self.trainer.accelerator.scaler.get_scale(),
        }

    def on_step_begin(self, args, state, control, **kwargs):
        self.calls.append(0)
        if state.global_step == OverflowTrainer.overflow_step:
            self.before = self._record()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == OverflowTrainer.overflow_step + 1:
            self.after = self._record()


def same(a: Any, b: Any) -> bool:
    """Exact equality of nested dicts / lists / tensors / numbers."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


def check_fp16_overflow(method: str, output_dir: str, steps: int = 4) -> list[str]:
    """Train `method` with an overflow at step `OverflowTrainer.overflow_step`; returns the failures."""
    configs = encoder_configs(tiny=True)
    cuda = torch.cuda.is_available()
    trainer = make_trainer(method, configs, 4, steps, output_dir, trainer_class=OverflowTrainer, fp16=cuda)
    if not cuda:  # fp16 is a no-op on CPU: put a GradScaler in by hand (before train() prepares the optimizer).
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu")
    watch = WatchOverflowStep(trainer)
    trainer.add_callback(watch)
    trainer.train()
    failures = []
    before, after = watch.before, watch.after
    if after["scale"] >= before["scale"]:
        failures.append(f"the loss scale did not drop on the overflow step ({before['scale']} -> {after['scale']})")
    if not same(before["params"], after["params"]):
        failures.append("the parameters changed on the skipped step")
    if not same(before["modulation"], after["modulation"]):
        changed = [k for k in before["modulation"] if not same(before["modulation"][k], after["modulation"].get(k))]
        failures.append(f"the modulation state changed on the skipped step: {changed}")
    if watch.calls != [1] * steps:
        failures.append(f"on_gradients_ready ran {watch.calls} times per optimizer step (expected once each)")
    final = {n: p.detach().float().cpu() for n, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}
    if not all(torch.isfinite(p).all() for p in final.values()):
        failures.append("non-finite parameters after training")
    if same(after["params"], final):
        failures.append("the parameters did not change after the skipped step")
    return failures


# -------------------------------------------------------------------------------------- 2. speed
class StepTimer(TrainerCallback):
    """Wall-clock time of the optimizer steps after `warmup`."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = None

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = self._now()
        self.end = self._now()


def measure_speed(method: str, tiny: bool, batch: int, steps: int, warmup: int, output_dir: str) -> float:
    """Training samples per second of `method` (bf16) over the steps after the warm-up."""
    trainer = make_trainer(method, encoder_configs(tiny), batch, warmup + steps, output_dir, bf16=True)
    timer = StepTimer(warmup)
    trainer.add_callback(timer)
    trainer.train()
    return batch * steps / (timer.end - timer.start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny encoders (runs on CPU in seconds)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32, or 4 with --tiny")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20, or 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5, or 1 with --tiny)")
    args = parser.parse_args(argv)
    batch = args.batch_size or (4 if args.tiny else 32)
    steps = args.steps or (2 if args.tiny else 20)
    warmup = args.warmup or (1 if args.tiny else 5)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; torch {torch.__version__}")

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        scaler = "" if torch.cuda.is_available() else " (CPU GradScaler)"
        print(f"\n1. fp16 GradScaler: a step whose gradients overflow{scaler}")
        for method in MODULATIONS:
            failures = check_fp16_overflow(method, os.path.join(tmp, f"fp16-{method}"))
            failed |= bool(failures)
            print(f"  {method:8s} " + ("ok" if not failures else "FAILED: " + "; ".join(failures)))

        shapes = "tiny ViT + AST" if args.tiny else "ViT-B/16 + AST-base"
        print(f"\n2. training speed, {shapes}, batch {batch}, bf16, {steps} steps after {warmup} warm-up")
        print(f"  {'method':8s} {'samples/s':>10s} {'vs none':>8s}")
        speeds = {
            m: measure_speed(m, args.tiny, batch, steps, warmup, os.path.join(tmp, f"speed-{m}")) for m in MODULATIONS
        }
        for method, speed in speeds.items():
            print(f"  {method:8s} {speed:10.1f} {speed / speeds['none']:8.2f}")
    return int(failed)


if __name__ == "__main__":
    raise SystemExit(main())
