"""Batch coupling (the tutorial's Figure 21): how much G(z_i) moves when only the other
members of its minibatch are redrawn.

Measured in train mode, the mode G trains in (in eval mode batch norm uses running
statistics and nothing couples), on the generator evaluation scores (G, or the average of
its weights with `eval.ema`); its buffers (running statistics) are restored afterwards, so
the measurement never changes the run. The value is the mean absolute change of the
fixed samples' outputs relative to their mean absolute value: ~0 when each sample is
computed on its own (none, reference, virtual norm), clearly > 0 with batch norm.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def coupled_outputs(gan, batch_size: int, generator: torch.Generator,
                    n_fixed: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """G's outputs for the same `n_fixed` latents (and labels) inside two minibatches of
    `batch_size` whose other members differ, in train mode; G's buffers are restored."""
    G = gan.scored  # the generator evaluation scores (G, or its weight average)
    n_fixed = max(1, min(n_fixed, batch_size // 2))
    n_other = batch_size - n_fixed
    buffers = [(b, b.clone()) for b in G.buffers()]
    was_training = G.training
    G.train()
    try:
        z_fixed = torch.randn(n_fixed, gan.z_dim, generator=generator)
        y_fixed = (torch.randint(gan.num_classes, (n_fixed,), generator=generator)
                   if gan.labels.conditional_g else None)
        outputs = []
        for _ in range(2):
            z = torch.cat([z_fixed, torch.randn(n_other, gan.z_dim, generator=generator)])
            y = None
            if y_fixed is not None:
                y = torch.cat([y_fixed, torch.randint(gan.num_classes, (n_other,),
                                                      generator=generator)]).to(gan.device)
            outputs.append(G(z.to(gan.device), y)[:n_fixed].float())
    finally:
        for b, saved in buffers:
            b.copy_(saved)
        G.train(was_training)
    return outputs[0], outputs[1]


def relative_change(first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean absolute change of the outputs, relative to their mean absolute value."""
    return float((first - second).abs().mean() / first.abs().mean().clamp_min(1e-12))


def batch_coupling(gan, batch_size: int, generator: torch.Generator, n_fixed: int = 8) -> float:
    return relative_change(*coupled_outputs(gan, batch_size, generator, n_fixed))
