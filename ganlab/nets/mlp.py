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


class Maxout(nn.Module):
    """`units` maxout units of `pieces` linear pieces each (Goodfellow et al. 2013)."""

    def __init__(self, in_dim: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_dim, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(-1, self.units, self.pieces).amax(dim=2)


class MaxoutFeatures(nn.Module):
    """PacGAN's 2-D D trunk: `depth` maxout layers (with D's norm after all but the first)."""

    def __init__(self, in_dim: int, width: int, depth: int, pieces: int, norm: str):
        super().__init__()
        layers: list[nn.Module] = [Maxout(in_dim, width, pieces)]
        for _ in range(depth - 1):
            layers += [norm_layer(norm, width, False), Maxout(width, width, pieces)]
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def normal_init(module: nn.Module, std: float = 0.02) -> None:
    """Weights N(0, std^2), biases 0, for every linear layer (PacGAN's and DCGAN's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
