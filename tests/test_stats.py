"""`aim_hf.stats` against hand computations."""

from __future__ import annotations

import math

import pytest

from aim_hf.stats import best_by_mean, best_on_validation, mean_std, paired_interval, t_quantile


def test_t_quantiles_are_the_textbook_values():
    # The 0.975 quantiles of Student's t printed in every table (1, 2, 4, 9 degrees of freedom), and the normal's.
    for dof, printed in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262)):
        assert t_quantile(dof) == pytest.approx(printed, abs=5e-4)
    assert t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)
    assert t_quantile(4, confidence=0.90) == pytest.approx(2.132, abs=5e-4)


def test_mean_std_is_the_sample_standard_deviation():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    # deviations -1.5, -0.5, 0.5, 1.5: squares sum to 5, over n - 1 = 3
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([0.7]) == (0.7, 0.0)


def test_paired_interval_of_three_pairs():
    mean, low, high = paired_interval([0.80, 0.82, 0.79], [0.75, 0.78, 0.77])
    # differences 0.05, 0.04, 0.02: mean 0.036667; deviations 0.013333, 0.003333, -0.016667, squares sum
    # to 0.00046667, over 2: std 0.0152753; half width 4.302653 * 0.0152753 / sqrt(3) = 0.0379461
    assert mean == pytest.approx(0.0366667, abs=1e-7)
    assert low == pytest.approx(0.0366667 - 0.0379461, abs=1e-6)
    assert high == pytest.approx(0.0366667 + 0.0379461, abs=1e-6)


def test_paired_interval_of_two_pairs_and_of_one():
    # differences 0.1 and 0.3: mean 0.2, std 0.141421, half width 12.706205 * 0.141421 / sqrt(2) = 1.2706205
    mean, low, high = paired_interval([0.5, 0.7], [0.4, 0.4])
    assert (mean, low, high) == (pytest.approx(0.2), pytest.approx(-1.0706205, abs=1e-6), pytest.approx(1.4706205, abs=1e-6))
    # A paired difference does not depend on the level the pair shares.
    assert paired_interval([0.9, 0.3], [0.8, 0.0]) == pytest.approx((mean, low, high))
    mean, low, high = paired_interval([0.6], [0.5])
    assert mean == pytest.approx(0.1) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_interval([0.1], [0.1, 0.2])


def test_best_on_validation_joins_the_evaluations_of_a_step_and_takes_the_first_best():
    # As the Trainer logs a dict of evaluation sets: one entry per set and step.
    log = [
        {"step": 1, "eval_accuracy": 0.5}, {"step": 1, "test_curve_accuracy": 0.4},
        {"step": 2, "eval_accuracy": 0.7}, {"step": 2, "test_curve_accuracy": 0.65, "test_curve_vision_probe_accuracy": 0.3},
        {"step": 3, "loss": 1.0},
        {"step": 3, "eval_accuracy": 0.7}, {"step": 3, "test_curve_accuracy": 0.1},
    ]  # fmt: skip
    assert best_on_validation(log) == {"test_accuracy": 0.65, "test_vision_probe_accuracy": 0.3}
    assert best_on_validation([{"step": 1, "eval_accuracy": 0.5}]) == {}  # no test scored alongside


def test_best_by_mean_chooses_the_highest_mean_and_the_first_of_equals():
    assert best_by_mean({"aim": [0.5, 0.7], "ogm_ge": [0.65, 0.6], "pmr": [0.1, 0.2]}) == "ogm_ge"
    assert best_by_mean({"aim": [0.6, 0.6], "ogm_ge": [0.5, 0.7]}) == "aim"
