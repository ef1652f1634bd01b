# The model the README's TrainScript names (CDResNet(64)) but does not show: a small CNN giving
# one probability per image, as nn.BCELoss expects.
import torch
import torch.nn as nn


class CDResNet(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(x).flatten(1))).flatten()
