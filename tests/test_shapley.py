"""`aim_hf.shapley`: the Shapley values of a coalition value, against hand computations on numbers
(`aim-hf evaluate`'s accuracies) and on tensors (AGM's logits)."""

from __future__ import annotations

import pytest
import torch

from aim_hf.shapley import coalitions, shapley_values


def test_coalitions_are_every_subset_smallest_first_in_order():
    assert coalitions(["v", "a", "t"]) == [
        (), ("v",), ("a",), ("t",), ("v", "a"), ("v", "t"), ("a", "t"), ("v", "a", "t"),
    ]  # fmt: skip


def test_weights_with_three_players():
    acc = {
        (): 0.0, ("v",): 0.3, ("a",): 0.1, ("t",): 0.0,
        ("v", "a"): 0.5, ("v", "t"): 0.3, ("a", "t"): 0.2, ("v", "a", "t"): 0.6,
    }  # fmt: skip
    values = shapley_values(acc, ["v", "a", "t"])
    # Weights 1/3 (no other), 1/6 (one other), 1/3 (both others).
    assert values["v"] == pytest.approx(0.3 / 3 + (0.5 - 0.1) / 6 + (0.3 - 0.0) / 6 + (0.6 - 0.2) / 3)
    assert sum(values.values()) == pytest.approx(acc[("v", "a", "t")] - acc[()])


def test_tensor_values_share_an_interaction_equally():
    # f = a + 2b + abc, a player left out entering as 0: the interaction is shared equally by the three.
    x = {"a": torch.tensor([[2.0]]), "b": torch.tensor([[3.0]]), "c": torch.tensor([[5.0]])}

    def f(present):
        v = {m: x[m] if m in present else torch.zeros(1, 1) for m in x}
        return v["a"] + 2 * v["b"] + v["a"] * v["b"] * v["c"]

    values = shapley_values({c: f(c) for c in coalitions(["a", "b", "c"])}, ["a", "b", "c"])
    assert values["a"].item() == pytest.approx(2 + 30 / 3)
    assert values["b"].item() == pytest.approx(6 + 30 / 3)
    assert values["c"].item() == pytest.approx(30 / 3)


def test_a_missing_coalition_is_a_key_error():
    with pytest.raises(KeyError):
        shapley_values({(): 0.0, ("a",): 1.0}, ["a", "b"])
