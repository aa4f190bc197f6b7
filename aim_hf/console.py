"""One compact console line per log instead of the Trainer's dict of every logged key.

[`AIMTrainer`] logs about 30 keys per logging step (loss components, probe accuracies, the
method's per-depth scores); the Trainer's `ProgressCallback` (tqdm) and `PrinterCallback`
(`disable_tqdm=True`) print them all. [`use_compact_logs`] swaps those two for subclasses that
print the loss, the fused and probe accuracies and one number for the modulation (the one its
method declares). Only the console changes: the integrations (`report_to`) and
`trainer_state.json` still receive every key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer

from .modulation import MODULATIONS


def modulation_summary(logs: Mapping[str, Any]) -> str | None:
    """One number for the modulation, as the method that logged it declares it (`Modulation.summary`;
    AIM: the mean strength λ over depths of the modality it modulates most, OGM-GE: the coefficient k
    of the most slowed modality); `None` when no registered method's summary is in `logs`."""
    for cls in MODULATIONS.values():
        if cls.summary is None:
            continue
        means = _modality_means(logs, cls.summary.prefix)
        if means:
            modality = (max if cls.summary.pick == "max" else min)(means, key=means.get)
            return f"{cls.label} {cls.summary.symbol} {modality} {means[modality]:.3f}"
    return None


def _modality_means(logs: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Per modality `m`, the mean of the logged values under `<prefix>/<m>` and `<prefix>/<m>/...`."""
    values: dict[str, list[float]] = defaultdict(list)
    for key, value in logs.items():
        if key.startswith(prefix + "/"):
            values[key[len(prefix) + 1 :].split("/")[0]].append(float(value))
    return {m: sum(v) / len(v) for m, v in values.items()}


def format_log(logs: Mapping[str, Any], step: int) -> str:
    """The compact line of one log: a training interval, an evaluation, or the end-of-training summary."""
    if "loss" in logs:  # a training interval
        probes = {k.split("/", 1)[1]: v for k, v in logs.items() if k.startswith("probe_accuracy/")}
        parts = [f"loss {logs['loss']:.4f}"]
        if probes:
            parts.append("probe acc " + " ".join(f"{m} {v:.3f}" for m, v in probes.items()))
        summary = modulation_summary(logs)
        if summary:
            parts.append(summary)
        return f"[step {step}, epoch {logs.get('epoch', 0):.2f}] " + " | ".join(parts)
    prefix = next((k[: -len("_loss")] for k in logs if k.endswith("_loss") and not k.startswith("train")), None)
    if prefix is not None:  # an evaluation: eval_loss, eval_accuracy, eval_<modality>_probe_accuracy, ...
        parts = [f"loss {logs[f'{prefix}_loss']:.4f}"]
        if f"{prefix}_accuracy" in logs:
            parts.append(f"fused acc {logs[f'{prefix}_accuracy']:.3f}")
        start, end = f"{prefix}_", "_probe_accuracy"
        probes = {k[len(start) : -len(end)]: v for k, v in logs.items() if k.startswith(start) and k.endswith(end)}
        if probes:
            parts.append("probe acc " + " ".join(f"{m} {v:.3f}" for m, v in probes.items()))
        return f"[{prefix}, step {step}] " + " | ".join(parts)
    shown = {k: v for k, v in logs.items() if k != "total_flos"}
    return f"[step {step}] " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
    )


class CompactProgressCallback(ProgressCallback):
    """`ProgressCallback` (the tqdm bars) printing [`format_log`]'s line between the bars."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_log(logs, state.global_step))


class CompactPrinterCallback(PrinterCallback):
    """`PrinterCallback` (`disable_tqdm=True`) printing [`format_log`]'s line."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_local_process_zero and logs:
            print(format_log(logs, state.global_step))


def use_compact_logs(trainer: Trainer) -> None:
    """Replace `trainer`'s `ProgressCallback` / `PrinterCallback` with the compact ones (a notebook's
    progress callback, or none, is left as it is)."""
    for default, compact in ((ProgressCallback, CompactProgressCallback), (PrinterCallback, CompactPrinterCallback)):
        if any(type(cb) is default for cb in trainer.callback_handler.callbacks):
            trainer.pop_callback(default)
            trainer.add_callback(compact)


__all__ = ["CompactPrinterCallback", "CompactProgressCallback", "format_log", "modulation_summary", "use_compact_logs"]
