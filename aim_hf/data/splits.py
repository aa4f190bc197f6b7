"""Splits that keep near-duplicate items together: stratified by label, grouped by a key."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grouped_split(
    labels: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    weights: dict[str, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """The split (an index into `weights`) of each item: all items of a group go to one split, and
    within each label the splits get item counts close to `weights`' shares.

    Per label, the groups are shuffled and each goes to the split furthest below its target count
    (the first such split on ties), so a split gets a group as soon as it lags by one item.
    """
    shares = np.array(list(weights.values()), dtype=float)
    shares /= shares.sum()
    groups = np.asarray(groups)  # np.unique sorts the keys: the result depends on rng alone
    split_of = np.full(len(labels), -1)
    for label in np.unique(labels):
        inside = np.flatnonzero(labels == label)
        keys, sizes = np.unique(groups[inside], return_counts=True)
        counts = np.zeros(len(shares))
        for k in rng.permutation(len(keys)):
            s = int(np.argmax(shares * len(inside) - counts))
            split_of[inside[groups[inside] == keys[k]]] = s
            counts[s] += sizes[k]
    return split_of


__all__ = ["grouped_split"]
