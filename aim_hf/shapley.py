"""Shapley values of the modalities in a value of their coalitions: the one computation behind
AGM's mono-modal responses (values: logits) and `aim-hf evaluate`'s contributions (values:
accuracies)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any


def coalitions(players: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of `players`, smallest first, each a tuple in `players`' order."""
    return [c for size in range(len(players) + 1) for c in itertools.combinations(players, size)]


def shapley_values(value: Mapping[Collection[str], Any], players: Sequence[str]) -> dict[str, Any]:
    """Each player's Shapley value of `value` (every coalition of `players`, as any collection of
    names, e.g. a tuple from [`coalitions`], mapped to a number or a tensor): the average of its
    marginal contribution `value(S + m) - value(S)` over the orders of the players."""
    by_set = {frozenset(c): v for c, v in value.items()}
    num = len(players)
    result = {}
    for m in players:
        others = [o for o in players if o != m]
        total: Any = 0.0
        for size in range(num):
            weight = math.factorial(size) * math.factorial(num - size - 1) / math.factorial(num)
            for coalition in itertools.combinations(others, size):
                subset = frozenset(coalition)
                total = total + weight * (by_set[subset | {m}] - by_set[subset])
        result[m] = total
    return result
