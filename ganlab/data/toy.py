"""2-D Gaussian mixtures used to measure mode coverage (PacGAN's definitions).

ring8: 8 modes at (cos 2*pi*i/8, sin 2*pi*i/8), std 0.01.
grid25: 25 modes at {-4,-2,0,2,4}^2, std 0.05.
Each sample's label is the index of the mode it was drawn from. Samples are fresh on every
draw, or (`data.train_size=N`) come from a fixed training set of N, in shuffled epochs.
Everything is drawn on the training device from the sampler's own generator (a CUDA run
draws other numbers than a CPU run with the same seed; each is reproducible and resumable).
"""

from __future__ import annotations

import math

import torch

from ganlab.data.base import UNLABELLED, restore_stream, stream_state


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
        self.modes = make_modes().to(device)
        self.num_classes = len(self.modes)
        self.sample_shape = (2,)
        self.device = device
        self.label_fraction = label_fraction
        # Own generator: the data stream is reproducible and resumable on its own.
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # train_size > 0: a fixed training set, drawn once from the same generator, visited
        # in shuffled epochs (the order and the position are part of the state)
        self.fixed = self._draw(train_size, self.generator) if train_size else None
        self.order = self._shuffled(train_size) if train_size else None
        self.position = 0

    def _shuffled(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator, device=self.device)

    def _next_indices(self, n: int) -> torch.Tensor:
        taken = []
        while n > 0:
            if self.position == len(self.order):  # a new epoch
                self.order = self._shuffled(len(self.order))
                self.position = 0
            part = self.order[self.position:self.position + n]
            self.position += len(part)
            n -= len(part)
            taken.append(part)
        return torch.cat(taken)

    def _draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their modes, drawn from `gen` on its device."""
        modes = self.modes if gen.device == self.modes.device else self.modes.to(gen.device)
        labels = torch.randint(self.num_classes, (n,), generator=gen, device=gen.device)
        noise = torch.randn(n, 2, generator=gen, device=gen.device)
        return modes[labels] + self.std * noise, labels

    def sample(self, batch_size: int, labels: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch and its labels (None when `labels` is false), on the training device."""
        if self.fixed is None:
            x, y = self._draw(batch_size, self.generator)
        else:
            index = self._next_indices(batch_size)
            x, y = self.fixed[0][index], (self.fixed[1][index] if labels else None)
        if labels and self.label_fraction < 1:  # hide each label with prob 1 - fraction
            hidden = torch.rand(batch_size, generator=self.generator,
                                device=self.device) >= self.label_fraction
            y = y.masked_fill(hidden, UNLABELLED)
        return x, (y if labels else None)

    def reference_batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch for reference/virtual norm, drawn from `gen` (the stream untouched)."""
        return self._draw(n, gen)

    def state_dict(self) -> dict:
        state = {"generator": stream_state(self.generator)}
        if self.fixed is not None:  # the set itself is redrawn from the seed
            state.update(order=self.order.clone(), position=self.position)
        return state

    def load_state_dict(self, state: dict) -> None:
        restore_stream(self.generator, state["generator"])
        if self.fixed is not None:
            self.order = state["order"].to(self.device, copy=True)
            self.position = int(state["position"])
