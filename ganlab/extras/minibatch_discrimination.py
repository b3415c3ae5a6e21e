"""Minibatch discrimination (Salimans et al. 2016 §3.2; the "-MBF" row of its Table 3).

A layer on D's features appends, per kernel, how close a sample is to the other samples of
its batch, so that D can see a collapsed batch:
o(x_i)_b = sum_{j != i} exp(-||M_i,b - M_j,b||_1), with M = h T reshaped to (N, B, C).
Real and generated samples are therefore discriminated as separate batches: a real sample
must be compared with real batch-mates only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ganlab.config import ConfigError
from ganlab.extras import EXTRAS, Extra


class MinibatchDiscrimination(nn.Module):
    """(N, A) -> (N, A + kernels)."""

    def __init__(self, in_features: int, kernels: int, dims: int):
        super().__init__()
        self.kernels, self.dims = kernels, dims
        self.out_features = in_features + kernels
        self.T = nn.Parameter(torch.randn(in_features, kernels * dims) * 0.05)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        m = (h @ self.T).view(-1, self.kernels, self.dims)  # (N, B, C)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (N, N, B)
        o = torch.exp(-l1).sum(dim=1) - 1.0  # drop the sample's own exp(0)
        return torch.cat([h, o], dim=1)


@dataclass
class Options:
    kernels: int = 0  # B: minibatch features appended to D's features (0: off)
    dims: int = 5  # C: dimensions of each kernel's projection


@EXTRAS.register("minibatch_discrimination")
class MinibatchFeatures(Extra):
    Options = Options
    separate_real_fake = True

    @classmethod
    def active(cls, options: Options) -> bool:
        return options.kernels > 0

    @classmethod
    def check(cls, options: Options, key: str) -> None:
        if options.kernels < 0:
            raise ConfigError(f"{key}.kernels={options.kernels!r} is not allowed; "
                              "it must be >= 0 (0: off)")
        if options.dims < 1:
            raise ConfigError(f"{key}.dims={options.dims!r} is not allowed; it must be >= 1")

    def d_layer(self, in_features: int) -> nn.Module:
        return MinibatchDiscrimination(in_features, self.options.kernels, self.options.dims)
