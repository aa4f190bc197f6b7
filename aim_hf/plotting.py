"""Plots of a run's per-modality accuracy and modulation curves, read from its `trainer_state.json`.

The figures are drawn with matplotlib's object API (`Figure` + the Agg canvas that `savefig` uses
for PNG), never through `pyplot`, so plotting changes no global backend and needs no display.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from .modulation import MODULATIONS

TRAINER_STATE_NAME = "trainer_state.json"
ACCURACY_PLOT_NAME = "accuracy.png"
MODULATION_PLOT_NAME = "modulation.png"

# Logged keys with a "/" that belong to the trainer itself; every other "<method>/<quantity>/..." key
# (aim/lambda/vision/depth_2, ogm/coeff/audio, ...) is a modulation metric.
_TRAINER_PREFIXES = ("loss/", "probe_accuracy/")

Curve = list[tuple[int, float]]

# Words for the parts of the modulation keys, for plot titles and legends (a method's own name: its
# `label`, found by its `metric_prefix`).
_QUANTITY_WORDS = {
    "lambda": "modulation strength λ",
    "mu": "strength μ (symmetric PAM)",
    "score": "score",
    "ratio": "score ratio ρ",
    "coeff": "gradient coefficient k",
    "masked_fraction": "fraction of units masked",
    "aux_loss": "auxiliary loss",
    "prototype_loss": "prototype loss",
    "loss": "loss",
}


def load_log_history(source: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `log_history` of a run: from a `trainer_state.json`, a folder holding one (a checkpoint),
    or an already loaded list of log entries."""
    if isinstance(source, (str, os.PathLike)):
        path = os.path.join(source, TRAINER_STATE_NAME) if os.path.isdir(source) else os.fspath(source)
        with open(path, encoding="utf-8") as f:
            return json.load(f)["log_history"]
    return [dict(entry) for entry in source]


def _points(log_history: Sequence[Mapping[str, Any]], key: str) -> Curve:
    return [
        (int(entry["step"]), float(entry[key]))
        for entry in log_history
        if isinstance(entry.get(key), (int, float)) and "step" in entry
    ]


def _keys(log_history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every logged key, in first-logged order."""
    return list(dict.fromkeys(key for entry in log_history for key in entry))


def accuracy_curves(log_history: Sequence[Mapping[str, Any]]) -> dict[str, Curve]:
    """Accuracy curves by label: the fused evaluation accuracy, each modality's probe accuracy on
    the evaluation set, and each probe's training accuracy (as AIMTrainer logs them)."""
    curves: dict[str, Curve] = {}
    keys = _keys(log_history)
    if "eval_accuracy" in keys:
        curves["fused (eval)"] = _points(log_history, "eval_accuracy")
    for key in keys:
        if key.startswith("eval_") and key.endswith("_probe_accuracy"):
            curves[f"{key[len('eval_'):-len('_probe_accuracy')]} probe (eval)"] = _points(log_history, key)
    for key in keys:
        if key.startswith("probe_accuracy/"):
            curves[f"{key.split('/', 1)[1]} probe (train)"] = _points(log_history, key)
    return {label: points for label, points in curves.items() if points}


def modulation_curves(log_history: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Curve]]:
    """Modulation metrics grouped into panels: a key `a/b/c` is the line `c` of panel `a/b`, so AIM's
    `aim/lambda/vision/depth_2` is the line `depth_2` of panel `aim/lambda/vision` and OGM-GE's
    `ogm/coeff/audio` the line `audio` of panel `ogm/coeff`. On/off flags (`aim/active`) that never
    change are left out: such a line says nothing a panel is worth."""
    panels: dict[str, dict[str, Curve]] = {}
    for key in _keys(log_history):
        if "/" not in key or key.startswith(_TRAINER_PREFIXES):
            continue
        points = _points(log_history, key)
        if key.endswith("/active") and len({value for _, value in points}) <= 1:
            continue
        if points:
            panel, line = key.rsplit("/", 1)
            panels.setdefault(panel, {})[line] = points
    return panels


def panel_title(panel: str) -> str:
    """A panel's title in words: `aim/lambda/vision` -> "AIM: modulation strength λ (vision)"."""
    method, *rest = panel.split("/")
    labels = {cls.metric_prefix: cls.label for cls in MODULATIONS.values() if cls.metric_prefix}
    title = labels.get(method, method)
    if rest:
        title += ": " + _QUANTITY_WORDS.get(rest[0], rest[0].replace("_", " "))
    return title + "".join(f" ({part})" for part in rest[1:])


def _line_label(line: str) -> str:
    """A legend entry in words: `depth_2` -> "depth 2", `aux_loss` -> "auxiliary loss"."""
    return _QUANTITY_WORDS.get(line, line.replace("_", " "))


def _draw(ax: Any, curves: Mapping[str, Curve], styles: Mapping[str, dict[str, Any]] | None = None) -> None:
    for label, points in curves.items():
        steps, values = zip(*points)
        marker = "o" if len(points) < 20 else None  # a short run's few points stay visible
        ax.plot(steps, values, label=label, marker=marker, markersize=3, **(styles or {}).get(label, {}))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def plot_accuracy(source: str | os.PathLike | Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str | None:
    """Plot the fused and per-modality accuracy curves of a run to the PNG `path`; returns the path,
    or `None` (and writes nothing) when the run logged no accuracy."""
    curves = accuracy_curves(load_log_history(source))
    if not curves:
        return None
    # One colour per modality; evaluation solid, training dashed, the fused accuracy in black.
    modalities = list(dict.fromkeys(label.split(" ")[0] for label in curves if not label.startswith("fused")))
    colours = {m: f"C{i}" for i, m in enumerate(modalities)}
    styles = {
        label: {"color": "black", "linewidth": 2}
        if label.startswith("fused")
        else {"color": colours[label.split(" ")[0]], "linestyle": "--" if label.endswith("(train)") else "-"}
        for label in curves
    }
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.subplots()
    _draw(ax, curves, styles)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)  # the full range, so that runs and modalities compare at a glance
    ax.set_title("Fused and per-modality (probe) accuracy")
    figure.savefig(path, dpi=100)
    return os.fspath(path)


def plot_modulation(source: str | os.PathLike | Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str | None:
    """Plot the modulation method's logged curves (one panel per quantity and modality, e.g. AIM's
    per-depth modulation strength of each modality) to the PNG `path`; returns the path, or `None`
    (and writes nothing) when the run logged no modulation metric."""
    panels = modulation_curves(load_log_history(source))
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    width, height = 4.2 * columns, 3.2 * rows
    figure = Figure(figsize=(width, height))
    # Fixed margins in inches (cheaper than a layout engine, and enough for tick labels and titles).
    figure.subplots_adjust(
        left=0.6 / width, right=1 - 0.1 / width, bottom=0.5 / height, top=1 - 0.3 / height, wspace=0.3, hspace=0.5
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (panel, curves) in zip(axes, panels.items()):
        _draw(ax, {_line_label(line): points for line, points in curves.items()})
        ax.set_title(panel_title(panel), fontsize="medium")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.savefig(path, dpi=100)
    return os.fspath(path)


def plot_run(source: str | os.PathLike | Sequence[Mapping[str, Any]], output_dir: str | os.PathLike) -> dict[str, str]:
    """Write `accuracy.png` and `modulation.png` for a run into `output_dir`; returns the plots that
    had data to show, by kind (`"accuracy"`, `"modulation"`)."""
    log_history = load_log_history(source)
    os.makedirs(output_dir, exist_ok=True)
    written = {
        "accuracy": plot_accuracy(log_history, os.path.join(output_dir, ACCURACY_PLOT_NAME)),
        "modulation": plot_modulation(log_history, os.path.join(output_dir, MODULATION_PLOT_NAME)),
    }
    return {kind: path for kind, path in written.items() if path is not None}


__all__ = [
    "accuracy_curves",
    "load_log_history",
    "modulation_curves",
    "panel_title",
    "plot_accuracy",
    "plot_modulation",
    "plot_run",
]
