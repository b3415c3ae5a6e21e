"""MLP bodies for 2-D data: G maps a latent vector to a point; D maps a point to features."""

from __future__ import annotations

import torch
from torch import nn

from ganlab.nets.norm import norm_layer


class MLPGenerator(nn.Module):
    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, norm: str):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(in_dim, width), norm_layer(norm, width, False), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPFeatures(nn.Module):
    """D's trunk; its output (N, width) feeds the label mode's head."""

    def __init__(self, in_dim: int, width: int, depth: int, norm: str):
        super().__init__()
        # No norm on the input layer: it would erase the input's scale and offset, which are
        # exactly what D must see on 2-D data.
        layers: list[nn.Module] = [nn.Linear(in_dim, width), nn.LeakyReLU(0.2)]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), norm_layer(norm, width, False), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
