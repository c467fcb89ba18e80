"""Small building blocks shared by the GHN networks (state-dict names follow the published files)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class MLP(nn.Module):
    """Linear layers with ReLU between them, stored as ``fc.0, fc.1, ...`` like the published MLP."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], last_activation: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for j, width in enumerate(hidden):
            layers.append(nn.Linear(in_features if j == 0 else hidden[j - 1], width))
            is_last = j == len(hidden) - 1
            layers.append(nn.ReLU() if (not is_last or last_activation) else nn.Identity())
        self.fc = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def maybe_squeeze_conv1x1(weight: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    """ppuda stores decoder layers as 1x1 convolutions; we use the equivalent linear layers."""
    if target is not None and weight.dim() == 4 and target.dim() == 2 and weight.shape[2:] == (1, 1):
        return weight.flatten(1)
    return weight
