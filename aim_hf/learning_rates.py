"""Per-module learning rates: `AIMConfig.learning_rate_mapping` resolved against a model's parameters.

A key is either a modality name (all of that modality's encoder, `encoders.<m>.*`) or a regular
expression that must match a whole parameter name (`model.named_parameters()`, e.g.
`encoders.text.encoder.layer.0.attention.self.query.weight`, `fusion.classifier.weight`). A
parameter takes the learning rate of the first key, in the mapping's order, that matches it, and
`learning_rate` when none does; so a narrow key placed before a broad one overrides it there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn


def check_learning_rate_mapping(mapping: Any) -> dict[str, float]:
    """The mapping with float values, or a one-line ValueError for a key that is not a regular
    expression or a value that is not a learning rate >= 0."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"learning_rate_mapping must be a JSON object / mapping, got {mapping!r}.")
    checked = {}
    for key, lr in mapping.items():
        try:
            re.compile(key)
        except (re.error, TypeError) as err:
            raise ValueError(f"learning_rate_mapping key {key!r} is not a regular expression: {err}.") from None
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr < 0:
            raise ValueError(f"learning_rate_mapping[{key!r}] must be a learning rate >= 0, got {lr!r}.")
        checked[key] = float(lr)
    return checked


def mapped_learning_rates(
    model: nn.Module, modalities: list[str], mapping: Mapping[str, float]
) -> dict[str, float]:
    """Trainable parameter name -> its learning rate under `mapping`, for the parameters a key takes
    (the others keep the default). Raises a ValueError for a key that takes no trainable parameter:
    it matches none, or only frozen ones, or only ones an earlier key already takes."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    patterns = {key: re.compile(rf"encoders\.{re.escape(key)}\..*" if key in modalities else key) for key in mapping}
    rates: dict[str, float] = {}
    for key, pattern in patterns.items():
        taken = [name for name in names if name not in rates and pattern.fullmatch(name)]
        if not taken:
            raise ValueError(
                f"learning_rate_mapping key {key!r} takes no trainable parameter (a key is a modality of "
                f"{modalities} or a regex over whole parameter names such as {next(iter(names), '')!r}; "
                "a parameter goes to the first key that matches it)."
            )
        rates.update(dict.fromkeys(taken, mapping[key]))
    return rates
