"""2-D Gaussian mixtures used to measure mode coverage (PacGAN's definitions).

ring8: 8 modes at (cos 2*pi*i/8, sin 2*pi*i/8), std 0.01.
grid25: 25 modes at {-4,-2,0,2,4}^2, std 0.05.
Each sample's label is the index of the mode it was drawn from. Samples are fresh on every
draw, or (`data.train_size=N`) come from a fixed training set of N, in shuffled epochs.
"""

from __future__ import annotations

import math

import torch

from ganlab.data.base import UNLABELLED


def ring_modes(n: int = 8, radius: float = 1.0) -> torch.Tensor:
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_modes(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    xs, ys = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


# name -> (mode centres, per-mode std)
MIXTURES = {
    "ring8": (ring_modes, 0.01),
    "grid25": (grid_modes, 0.05),
}


class GaussianMixture2D:
    """An endless sampler of a uniform mixture of isotropic 2-D Gaussians."""

    kind = "toy2d"

    def __init__(self, name: str, seed: int, device: torch.device, label_fraction: float = 1.0,
                 train_size: int = 0):
        make_modes, self.std = MIXTURES[name]
        self.name = name
        self.modes = make_modes()
        self.num_classes = len(self.modes)
        self.sample_shape = (2,)
        self.device = device
        self.label_fraction = label_fraction
        # Own generator: the data stream is reproducible and resumable on its own.
        self.generator = torch.Generator().manual_seed(seed)
        # train_size > 0: a fixed training set, drawn once from the same generator, visited
        # in shuffled epochs (the order and the position are part of the state)
        self.fixed = self._draw(train_size, self.generator) if train_size else None
        self.order = torch.randperm(train_size, generator=self.generator) if train_size else None
        self.position = 0

    def _next_indices(self, n: int) -> torch.Tensor:
        taken = []
        while n > 0:
            if self.position == len(self.order):  # a new epoch
                self.order = torch.randperm(len(self.order), generator=self.generator)
                self.position = 0
            part = self.order[self.position:self.position + n]
            self.position += len(part)
            n -= len(part)
            taken.append(part)
        return torch.cat(taken)

    def _draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(self.num_classes, (n,), generator=gen)
        return self.modes[labels] + self.std * torch.randn(n, 2, generator=gen), labels

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed is None:
            x, labels = self._draw(batch_size, self.generator)
        else:
            index = self._next_indices(batch_size)
            x, labels = self.fixed[0][index], self.fixed[1][index]
        if self.label_fraction < 1:  # semi-supervised: hide each label with prob 1 - fraction
            hidden = torch.rand(batch_size, generator=self.generator) >= self.label_fraction
            labels = labels.masked_fill(hidden, UNLABELLED)
        return x.to(self.device), labels.to(self.device)

    def reference_batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch for reference/virtual norm, drawn from `gen` (the stream untouched)."""
        return self._draw(n, gen)

    def state_dict(self) -> dict:
        state = {"generator": self.generator.get_state()}
        if self.fixed is not None:  # the set itself is redrawn from the seed
            state.update(order=self.order.clone(), position=self.position)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.fixed is not None:
            self.order, self.position = state["order"].clone(), int(state["position"])
