"""Historical averaging (Salimans et al. 2016 §3.3; the "-L+HA" row of its Table 3).

Each player's cost gets weight * ||theta - mean of its past thetas||^2, the mean taken over
all earlier parameter values (the initial ones included), updated after every optimiser
step of that player.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ganlab.extras import EXTRAS, Extra


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


@dataclass
class Options:
    weight: float = 0.0  # of ||theta - mean past theta||^2 in each player's cost (0: off)


@EXTRAS.register("historical_averaging")
class HistoricalAveraging(Extra):
    Options = Options

    def bind(self, G: nn.Module, D: nn.Module) -> None:
        self.averages = {"g": HistoricalAverage(G, self.options.weight),
                         "d": HistoricalAverage(D, self.options.weight)}

    def d_terms(self, step) -> dict[str, torch.Tensor]:
        return {"penalty_d_hist_avg": self.averages["d"].penalty()}

    def g_terms(self, step) -> dict[str, torch.Tensor]:
        return {"penalty_g_hist_avg": self.averages["g"].penalty()}

    def after_update(self, who: str) -> None:
        self.averages[who].update()

    def state_dict(self) -> dict:
        return {who: a.state_dict() for who, a in self.averages.items()}

    def load_state_dict(self, state: dict) -> None:
        for who, a in self.averages.items():
            a.load_state_dict(state[who])
