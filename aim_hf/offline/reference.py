"""torchvision's MobileNetV2 written out in plain torch, independently of transformers: its module
names give torchvision's state dict keys. It checks the conversion without trusting its key mapping
(`aim_hf.offline.verify`, the tests)."""

from __future__ import annotations

import torch
from torch import nn

# Inverted residual stages: expansion, output channels, repeats, first stride.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(channels: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` (at least `divisor`), never more than 10% below `channels`."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        super().__init__(conv, nn.BatchNorm2d(cout), nn.ReLU6())


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        expand = [] if expansion == 1 else [_ConvBNReLU6(cin, hidden, 1)]
        self.conv = nn.Sequential(
            *expand,
            _ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class ReferenceMobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) with torchvision's layout, at width multiplier `width`."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        cin, last = _divisible(32 * width), _divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [_ConvBNReLU6(3, cin, stride=2)]
        for expansion, channels, repeats, stride in STAGES:
            cout = _divisible(channels * width)
            for i in range(repeats):
                layers.append(_InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        layers.append(_ConvBNReLU6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class logits of images normalised as for ImageNet, (batch, 3, height, width)."""
        return self.classifier(self.features(pixels).mean((2, 3)))


__all__ = ["ReferenceMobileNetV2"]
