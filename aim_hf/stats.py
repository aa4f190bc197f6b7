"""Statistics of a comparison over paired seeds: mean ± std, paired differences with their 95%
t-interval, and the checkpoint (or method) chosen on validation.

Every method of a comparison trains on the same seeds, so two methods' accuracies are paired by seed:
a difference is judged on the per-seed differences, whose seed-to-seed noise is smaller than that of
either method alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def t_quantile(dof: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided `confidence` quantile of Student's t with `dof` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, dof))


def paired_interval(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """The mean of the paired differences `a - b` and its t-interval over the pairs: (mean, low, high);
    low and high are NaN with fewer than two pairs (no spread to estimate)."""
    if len(a) != len(b):
        raise ValueError(f"Paired values need equal lengths, got {len(a)} and {len(b)}.")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(diffs) - 1, confidence) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def best_on_validation(log_history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The test metrics (`test_curve_*`) logged at the evaluation with the highest validation fused
    accuracy (the first such), keyed like the final test metrics (`test_*`). The Trainer logs the
    validation and the test evaluation of one step as two entries: they are joined by step."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "step" in entry and any(k.startswith(("eval_", "test_curve_")) for k in entry):
            by_step.setdefault(entry["step"], {}).update(entry)
    evaluations = [e for _, e in sorted(by_step.items()) if "eval_accuracy" in e and "test_curve_accuracy" in e]
    if not evaluations:
        return {}
    best = max(evaluations, key=lambda e: e["eval_accuracy"])  # max keeps the first of equals
    return {k.replace("test_curve_", "test_", 1): v for k, v in best.items() if k.startswith("test_curve_")}


def best_by_mean(values: Mapping[str, Sequence[float]]) -> str:
    """The name whose values have the highest mean (the first of equals): e.g. the method best on
    validation, whose test accuracy is then reported."""
    return max(values, key=lambda name: statistics.fmean(values[name]))
