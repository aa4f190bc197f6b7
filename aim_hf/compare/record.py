"""The per-seed record of a comparison (the benchmark's JSON schema) and what is computed from it.

`record["unimodal"][modality]`: per seed, the accuracy of the modality trained alone;
`record["methods"][name]`: `seeds`, `fused`, `probe[modality]` (the last checkpoint's accuracies),
`fused_best_val` (the test accuracy at the evaluation best on validation), `val_fused` and
`val_probe` (the validation values); `record["runs"]`: every run's metrics and log history. All lists
are in seed order, so two methods' values are paired by position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from aim_hf.stats import best_by_mean, best_on_validation, mean_std, paired_interval


def collect(
    results: dict[str, list[dict[str, Any]]], modalities: Sequence[str], **header: Any
) -> dict[str, Any]:
    """The record of `results` (run name -> its runs in seed order, each with `seed`, `metrics` and
    `log_history`): a name in `modalities` is that modality trained alone. The accuracies are the test
    split's where the data has one, else the validation split's (`record["split"]`). `header` (e.g.
    `setting`, `optimizer`, `command`, `train_options`) is stored first."""
    any_run = next((r for runs in results.values() for r in runs), {"metrics": {}})
    split, prefix = ("test", "test") if "test_accuracy" in any_run["metrics"] else ("validation", "eval")
    record: dict[str, Any] = {**header, "split": split, "unimodal": {}, "methods": {}, "unimodal_val": {}}
    for name, runs in results.items():
        metrics = [r["metrics"] for r in runs]
        if name in modalities:
            record["unimodal"][name] = [m[f"{prefix}_accuracy"] for m in metrics]
            record["unimodal_val"][name] = [m["eval_accuracy"] for m in metrics]
            continue
        best = [best_on_validation(r["log_history"]) for r in runs]
        record["methods"][name] = {
            "seeds": [r["seed"] for r in runs],
            "fused": [m[f"{prefix}_accuracy"] for m in metrics],
            "probe": {mod: [m[f"{prefix}_{mod}_probe_accuracy"] for m in metrics] for mod in modalities},
            "fused_best_val": [b.get("test_accuracy", math.nan) for b in best],
            "val_fused": [m["eval_accuracy"] for m in metrics],
            "val_probe": {mod: [m[f"eval_{mod}_probe_accuracy"] for m in metrics] for mod in modalities},
        }
    record["runs"] = results
    return record


def suppression(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per modality trained alone: its accuracy alone and its probe under `none` (mean, std), and the
    paired gap probe - alone (mean, low, high); empty without `none`."""
    if "none" not in record["methods"]:
        return {}
    none = record["methods"]["none"]
    return {
        m: {"alone": mean_std(alone), "probe": mean_std(none["probe"][m]),
            "gap": paired_interval(none["probe"][m], alone)}  # fmt: skip
        for m, alone in record["unimodal"].items()
    }


def comparisons(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: paired differences (mean, low, high) of the fused and probe accuracies against
    `none`, and of the fused accuracy against the best other method (the highest mean validation
    fused accuracy, `none` excluded)."""
    methods = record["methods"]
    out: dict[str, dict[str, Any]] = {}
    for name, row in methods.items():
        entry: dict[str, Any] = {}
        if name != "none" and "none" in methods:
            none = methods["none"]
            entry["fused_vs_none"] = paired_interval(row["fused"], none["fused"])
            entry["probe_vs_none"] = {m: paired_interval(row["probe"][m], none["probe"][m]) for m in row["probe"]}
        others = {o: methods[o]["val_fused"] for o in methods if o not in (name, "none")}
        if others:
            best = best_by_mean(others)
            entry["best_other"] = best
            entry["fused_vs_best_other"] = paired_interval(row["fused"], methods[best]["fused"])
        out[name] = entry
    return out
