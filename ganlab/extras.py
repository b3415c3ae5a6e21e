"""The two extras of Salimans et al. 2016 that its Table 3 ablates ("-MBF", "-L+HA").

- Minibatch discrimination (§3.2): a layer on D's features that appends, per kernel, how
  close a sample is to the other samples of its batch, so D can see a collapsed batch.
- Historical averaging (§3.3): each player's cost gets weight * ||theta - mean of its past
  thetas||^2, the mean taken over all earlier steps.
"""

from __future__ import annotations

import torch
from torch import nn


class MinibatchDiscrimination(nn.Module):
    """(N, A) -> (N, A + kernels): o(x_i)_b = sum_{j != i} exp(-||M_i,b - M_j,b||_1)."""

    def __init__(self, in_features: int, kernels: int, dims: int):
        super().__init__()
        self.kernels, self.dims = kernels, dims
        self.T = nn.Parameter(torch.randn(in_features, kernels * dims) * 0.05)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        m = (h @ self.T).view(-1, self.kernels, self.dims)  # (N, B, C)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (N, N, B)
        o = torch.exp(-l1).sum(dim=1) - 1.0  # drop the sample's own exp(0)
        return torch.cat([h, o], dim=1)


class HistoricalAverage:
    """The penalty weight * sum ||theta - theta_bar||^2, theta_bar the mean of past thetas."""

    def __init__(self, module: nn.Module, weight: float):
        self.weight = weight
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.mean = [p.detach().clone() for p in self.params]
        self.count = 1  # the initial parameters are the first historical value

    def penalty(self) -> torch.Tensor:
        total = sum(((p - m) ** 2).sum() for p, m in zip(self.params, self.mean, strict=True))
        return self.weight * total

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters after an optimiser step into the running mean."""
        self.count += 1
        for p, m in zip(self.params, self.mean, strict=True):
            m.add_((p - m) / self.count)

    def state_dict(self) -> dict:
        return {"mean": [m.clone() for m in self.mean], "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        for m, saved in zip(self.mean, state["mean"], strict=True):
            m.copy_(saved)
        self.count = int(state["count"])
