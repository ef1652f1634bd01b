"""The project's models. ``CatDogNet`` is a small CNN for the cat/dog images (any image size)."""

from __future__ import annotations

import torch
from torch import nn


class CatDogNet(nn.Module):
    """Three conv blocks, global average pooling and a linear head giving 2 class scores."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        c = width
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = nn.Linear(2 * c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
