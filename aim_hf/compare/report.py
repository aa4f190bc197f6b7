"""The report of a comparison, from its record (`aim_hf.compare.record`): markdown tables (each
modality alone against its probe under `none`; each method's accuracies with paired differences), a
verdict in plain words, and the validation curves."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aim_hf.compare.record import comparisons, suppression
from aim_hf.stats import best_by_mean, mean_std

Interval = tuple[float, float, float]


def format_mean_std(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def format_points(value: Interval) -> str:
    """A paired difference in points with its interval (`+5.7 [+4.2, +7.2]`); the mean alone where
    there is no interval (one seed)."""
    mean, low, high = (x * 100 for x in value)
    return f"{mean:+.1f}" if math.isnan(low) else f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


def format_diff(value: Interval | None) -> str:
    """A table cell: [`format_points`], bold where the interval lies above 0."""
    if value is None:
        return "—"
    return f"**{format_points(value)}**" if value[1] > 0 else format_points(value)


def suppression_table(record: dict[str, Any]) -> list[str]:
    """Each modality alone, its probe under `none` and the paired gap, as a markdown table."""
    gaps = suppression(record)
    if not gaps:
        return []
    split = record.get("split", "test")
    lines = [f"Suppression gap: each modality's probe under `none` minus its accuracy alone ({split}, "
             "paired by seed, points, 95% t-interval).", "", "| modality | alone | probe under `none` | gap |",
             "|---|---|---|---|"]  # fmt: skip
    for m, g in gaps.items():
        alone, probe = (f"{x[0]:.4f} ± {x[1]:.4f}" for x in (g["alone"], g["probe"]))
        lines.append(f"| {m} | {alone} | {probe} | {format_diff(g['gap'])} |")
    return lines + [""]


def methods_table(record: dict[str, Any], modalities: Sequence[str]) -> list[str]:
    """Per method: fused accuracy (last checkpoint, and at the evaluation best on validation), each
    probe, mean ± std, and the paired differences against `none` and against the best other method."""
    methods, compared = record["methods"], comparisons(record)
    header = ["method", "fused acc", "fused acc (best val)"] + [f"{m} probe" for m in modalities]
    header += ["Δ fused vs `none`"] + [f"Δ {m} probe vs `none`" for m in modalities]
    header += ["best other (val)", "Δ fused vs it"]
    split = record.get("split", "test")
    lines = [
        f"{split.capitalize()} accuracy of the last checkpoint (and, second column, the test accuracy at the "
        "evaluation best on validation), mean ± std over seeds; Δ: paired difference in points with its 95% "
        "t-interval, bold where it lies above 0.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for m, alone in record["unimodal"].items():
        lines.append(f"| `{m}` alone | {format_mean_std(alone)} |" + " — |" * (len(header) - 2))
    for name, row in methods.items():
        c = compared[name]
        best_val = [x for x in row["fused_best_val"] if not math.isnan(x)]
        cells = [f"`{name}`", format_mean_std(row["fused"]), format_mean_std(best_val) if best_val else "—"]
        cells += [format_mean_std(row["probe"][m]) for m in modalities]
        cells.append(format_diff(c.get("fused_vs_none")))
        cells += [format_diff(c.get("probe_vs_none", {}).get(m)) for m in modalities]
        cells += [f"`{c['best_other']}`" if "best_other" in c else "—", format_diff(c.get("fused_vs_best_other"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _judge(a: str, b: str, value: Interval) -> str:
    """`a` against `b` in words, from the paired difference a - b."""
    if value[1] > 0:
        return f"`{a}` beats `{b}` by {format_points(value)}"
    if value[2] < 0:
        return f"`{a}` loses to `{b}` by {format_points(value)}"
    return f"`{a}` and `{b}` cannot be told apart ({format_points(value)})"


def verdict(record: dict[str, Any]) -> str:
    """The comparison in plain words: each method against `none`, and the method best on validation
    against the next best, each judged by whether the 95% interval of the paired difference of fused
    accuracy excludes 0; with fewer than two seeds, that the seeds are too few to decide."""
    methods, compared = record["methods"], comparisons(record)
    others = [m for m in methods if m != "none"]
    seeds = len(next(iter(methods.values()))["fused"]) if methods else 0
    split = record.get("split", "test")
    if not others or "none" not in methods:
        return "Nothing to compare: the comparison needs `none` and at least one other method."
    if seeds < 2:
        differences = ", ".join(f"`{m}` − `none` {format_points(compared[m]['fused_vs_none'])}" for m in others)
        return (f"With {seeds} seed there is no interval: the seeds are too few to decide (run at least 2 seeds, "
                f"better 5). The {split} differences in fused accuracy, in points: {differences}.")  # fmt: skip
    sentences = [_judge(m, "none", compared[m]["fused_vs_none"]) for m in others]
    if len(others) > 1:
        best = best_by_mean({m: methods[m]["val_fused"] for m in others})
        other, difference = compared[best]["best_other"], compared[best]["fused_vs_best_other"]
        sentences.append(f"the best on validation, {_judge(best, other, difference)}")
    return (f"On this data ({split} fused accuracy, points, paired 95% t-interval over {seeds} seeds): "
            + "; ".join(sentences) + ".")  # fmt: skip


def plot_accuracy(
    results: dict[str, list[dict[str, Any]]], modalities: Sequence[str], output_dir: Path, name: str
) -> list[str]:
    """`<name>_accuracy.png`: per panel (fused, each modality) the validation accuracy over training
    of every method, mean over seeds, with each modality alone dotted in its panel; and
    `<name>_<method>_modulation.png`: the logged modulation curves of each method's first seed.
    Returns the paths written."""
    from matplotlib.figure import Figure

    from aim_hf.compare.runs import safe_name
    from aim_hf.plotting import accuracy_curves, plot_modulation

    panels = {"fused": "fused (eval)", **{m: f"{m} probe (eval)" for m in modalities}}
    figure = Figure(figsize=(4.4 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (panel, key) in zip(axes, panels.items()):
        for i, (method, runs) in enumerate(results.items()):
            base = method.split(":")[0]
            if base in modalities:
                if base != panel:
                    continue
                key_, style, label = "fused (eval)", {"color": "grey", "linestyle": ":"}, f"{method} alone"
            else:
                key_, style, label = key, {"color": f"C{i}"}, method
            curves = [accuracy_curves(r["log_history"]).get(key_, []) for r in runs]
            if not curves or not all(curves):
                continue
            steps = [s for s, _ in curves[0]]
            mean = [statistics.fmean(c[j][1] for c in curves) for j in range(min(map(len, curves)))]
            ax.plot(steps[: len(mean)], mean, marker="o", markersize=3, label=label, **style)
        ax.set_title(f"{panel} (validation)" if panel == "fused" else f"{panel} probe (validation)")
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    written = [str(output_dir / f"{name}_accuracy.png")]
    figure.savefig(written[0], dpi=100)
    for method, runs in results.items():
        path = plot_modulation(runs[0]["log_history"], output_dir / f"{name}_{safe_name(method)}_modulation.png")
        if path is not None:
            written.append(path)
    return written
