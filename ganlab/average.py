"""An exponential moving average of G's weights (`eval.ema`), the generator scored in
place of G itself when the decay is above 0.

GAN training rarely settles at an equilibrium: G's last iterate can sit anywhere on a
cycle, and a single final evaluation then depends on where the cycle stopped (a 2-D grid
run that covered 19 modes for 68,000 rounds can show 4 after its last 1,000). Averaging the
iterates (Yazici et al. 2019, "The unusual effectiveness of averaging in GAN training";
Karras et al. 2018 score the average too) scores the centre of the cycle instead. The
average never feeds back into training: G, D and every random stream are exactly those of
the same run without it, so a run's raw G and its average can be told apart seed by seed.

After the n-th G update (n = 0, 1, ...) the average moves toward G's new weights with

    avg <- d_n * avg + (1 - d_n) * G,    d_n = min(decay, (1 + n) / (10 + n)),

the warm-up of TensorFlow's ExponentialMovingAverage (`num_updates`): the first updates
follow G closely, so the random initial weights leave the average within a few hundred
updates rather than after ~1 / (1 - decay) of them. Buffers (batch norm's running
statistics) are G's own, copied at each update, as in StyleGAN's and BigGAN's averages.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(decay: float, updates: int) -> float:
    """The decay of the update after `updates` earlier ones (the warm-up above)."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def move_toward(average, source, average_buffers, source_buffers, decay: float) -> None:
    """One update of an average: its parameters toward `source`'s by 1 - decay, its buffers
    set to `source_buffers` (a single run's, or a seed stack's stacked tensors)."""
    torch._foreach_lerp_(list(average), list(source), 1.0 - decay)
    for mine, theirs in zip(average_buffers, source_buffers, strict=True):
        mine.copy_(theirs)


class WeightAverage:
    """The average of a network's weights: `net` is a copy of it that holds the average
    (no gradients), `update(source)` moves it toward `source`'s weights."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"eval.ema={decay!r}: a weight average needs a decay in (0, 1)")
        self.decay, self.updates = decay, 0
        self.net = copy.deepcopy(net).requires_grad_(False)

    def update(self, source: nn.Module) -> None:
        move_toward(self.net.parameters(), [p.detach() for p in source.parameters()],
                    self.net.buffers(), source.buffers(), decay_at(self.decay, self.updates))
        self.updates += 1

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if state["decay"] != self.decay:
            raise ValueError(f"the checkpoint's weight average has decay {state['decay']}, "
                             f"not eval.ema={self.decay}")
        self.net.load_state_dict(state["net"])
        self.updates = int(state["updates"])
