"""Train tiny multimodal models with every modulation method (and the compositions in `COMPOSITIONS`)
and save what each run ends with.

The multi-process tests launch this file (`torchrun` / `accelerate launch`); the single-process
tests import its helpers, so that both sides build exactly the same runs:

    torchrun --nproc_per_node 2 tests/dist_train.py ENCODERS_DIR OUT_DIR --batch-size 2 --steps 4

Each process writes `OUT_DIR/{method}-rank{rank}.pt`: its parameters, its modulation state, the
dataset rows of each of its micro-batches and how often the modulation's `step` ran.

Every comparison here must be exact up to float summation order, so the encoders are loaded with
dropout off (the tiny BERT has dropout 0.1 by default; dropout masks depend on how the batch is
split across processes and micro-batches).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import torch
from datasets import Dataset

from aim_hf import MODULATIONS, AIMTrainer, MultimodalCollator, MultimodalModel, MultimodalProcessor
from tiny import NUM_LABELS, make_processors, make_rows, tiny_args

MODALITIES = ("vision", "audio", "text")
# The compositions the infrastructure tests run beside every single method.
COMPOSITIONS = ("aim+unimodal_losses", "ogm_ge+unimodal_losses")
METHODS = (*MODULATIONS, *COMPOSITIONS)
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def encoder_paths(root: str | os.PathLike) -> dict[str, str]:
    """The paths `tiny.save_tiny_encoders(root)` wrote."""
    root = Path(root)
    return {**{m: str(root / m) for m in MODALITIES}, "vocab": str(root / "vocab.txt")}


def build_model(paths: dict[str, str], seed: int = 0) -> MultimodalModel:
    """The tiny vision + audio + text model with dropout off, its heads initialised from `seed`."""
    torch.manual_seed(seed)
    return MultimodalModel.from_encoders(
        {m: paths[m] for m in MODALITIES},
        num_labels=NUM_LABELS,
        encoder_kwargs={m: NO_DROPOUT for m in MODALITIES},
    )


def build_dataset(n: int, seed: int = 0) -> Dataset:
    """`n` synthetic rows, each with its row number in an `idx` column (the collator ignores it)."""
    rows = make_rows(n, MODALITIES, seed=seed)
    for i, row in enumerate(rows):
        row["idx"] = i
    return Dataset.from_list(rows)


class RecordingCollator(MultimodalCollator):
    """A `MultimodalCollator` that records the `idx` of the rows of every batch it builds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[int]] = []

    def __call__(self, examples):
        self.batches.append([int(e["idx"]) for e in examples])
        return super().__call__(examples)


class CountingTrainer(AIMTrainer):
    """An `AIMTrainer` that counts how often the modulation's `on_gradients_ready` runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modulation_steps = 0
        step = self.modulation.on_gradients_ready

        def counted_step(ctx: Any) -> None:
            self.modulation_steps += 1
            step(ctx)

        self.modulation.on_gradients_ready = counted_step


def whole_run(method: str) -> dict[str, float]:
    """The `modulation_end` of a run that tests a method's mechanics, not its schedule: past the last
    step where the method's default window ends earlier (OGM-GE, PMR), so that it modulates throughout
    the tiny run. Nothing for a composition, whose members may refuse a window (`unimodal_losses`)."""
    cls = MODULATIONS.get(method)
    return {"modulation_end": 1e9} if cls is not None and cls.default_end is not None else {}


def make_trainer(
    method: str,
    paths: dict[str, str],
    output_dir: str | os.PathLike,
    rows: int = 16,
    model: MultimodalModel | None = None,
    **overrides: Any,
) -> CountingTrainer:
    """A trainer of `model` (default: the tiny model, `build_model`) with `method`, deterministic on
    CPU; `overrides` are AIMConfig fields."""
    defaults = dict(modulation=method, modulation_start=0, per_device_train_batch_size=2, logging_steps=1)
    defaults.update(whole_run(method))
    if "aim" in method.split("+"):
        # The tiny models' depth scores sit near chance, where DAM's capacity bound leaves no
        # Auxiliary Block: uncapped, the masked auxiliary pass runs and is what these tests check.
        kwargs = dict(overrides.pop("modulation_kwargs", None) or {})
        if "+" in method:
            kwargs["aim"] = {"dam_cap": "none", **kwargs.get("aim", {})}
        else:
            kwargs = {"dam_cap": "none", **kwargs}
        defaults["modulation_kwargs"] = kwargs
    defaults.update(overrides)
    processor = MultimodalProcessor({m: p for m, p in make_processors(paths).items() if m in MODALITIES})
    return CountingTrainer(
        model=build_model(paths) if model is None else model,
        args=tiny_args(output_dir, **defaults),
        train_dataset=build_dataset(rows),
        data_collator=RecordingCollator(processor),
        processing_class=processor,
    )


def snapshot(trainer: CountingTrainer) -> dict[str, Any]:
    """What a run ends with: parameters, modulation state, batches seen, modulation steps, logs."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "params": {n: p.detach().cpu().clone() for n, p in model.named_parameters()},
        "modulation": trainer.modulation.state_dict(),
        "batches": trainer.data_collator.batches,
        "modulation_steps": trainer.modulation_steps,
        "logs": [log for log in trainer.state.log_history if "loss" in log],
    }


def assert_close(actual: Any, expected: Any, where: str = "", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Recursively compare nested dicts / lists / tensors / numbers within float tolerance."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), f"{where}: keys differ"
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}", atol, rtol)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: lengths {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{i}]", atol, rtol)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{where}: {m}")
    elif isinstance(expected, float):
        assert abs(actual - expected) <= atol + rtol * abs(expected), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoders", help="folder written by tiny.save_tiny_encoders")
    parser.add_argument("out", help="folder for the {method}-rank{rank}.pt snapshots")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    paths = encoder_paths(args.encoders)
    for method in args.methods:
        trainer = make_trainer(
            method,
            paths,
            Path(args.out) / method,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
        )
        trainer.train()
        rank = trainer.args.process_index
        torch.save(snapshot(trainer), Path(args.out) / f"{method}-rank{rank}.pt")


if __name__ == "__main__":
    main()
