"""Input normalisation as the model's first layer, so noise is added in input space (DESIGN §6)."""

import torch
from torch import nn


class Normalized(nn.Module):
    """``net((x - mean) / std)``: the wrapper every benchmark model uses; policies name layers ``net.*``."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
