"""Normalisation layers, chosen by name (`norm.g`, `norm.d`; tutorial §4.3).

- `none`: identity.
- `batch`: ordinary batch norm. In train mode every sample's output depends on the other
  members of its minibatch (the tutorial's Figure 21); in eval mode it uses running
  statistics.
- `reference`: normalises with the statistics of a fixed reference batch only, recomputed
  with the current weights at every forward pass.
- `virtual`: normalises each sample with statistics of the reference batch *plus that
  sample*: mu_i = mu_x_i/(N+1) + N mu_ref/(N+1), and the same for E[x^2] (Salimans et al.
  2016). mu_x_i is the sample's own mean over its spatial positions (its value for a dense
  layer).

With reference and virtual norm a sample's output never depends on its batch-mates, and
train and eval mode compute the same thing (there are no running statistics): the reference
statistics always come from the current weights. The reference inputs are held by
`ReferenceBatch`, which wraps a whole network; gradients flow through the reference
statistics, as in Salimans et al.'s implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ganlab.registry import Registry


class RefStatsNorm(nn.Module):
    """Base for norms fed by a reference pass: collect statistics, then apply them."""

    def __init__(self, num_features: int, spatial: bool, eps: float = 1e-5):
        super().__init__()
        self.spatial, self.eps = spatial, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.collecting = False
        self.ref_size = 0  # N, set by ReferenceBatch
        self.ref_mean: torch.Tensor | None = None
        self.ref_var: torch.Tensor | None = None

    def _shape(self, v: torch.Tensor) -> torch.Tensor:  # (C,) or (N, C) -> broadcastable
        return v.view(*v.shape, 1, 1) if self.spatial else v

    def _dims(self) -> tuple[int, ...]:
        return (0, 2, 3) if self.spatial else (0,)

    def _affine(self, x_hat: torch.Tensor) -> torch.Tensor:
        return x_hat * self._shape(self.weight) + self._shape(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collecting:  # the reference pass: normalise the reference batch by itself
            self.ref_mean = x.mean(dim=self._dims())
            # two-pass variance: E[x^2] - mu^2 cancels catastrophically for large, tight values
            self.ref_var = ((x - self._shape(self.ref_mean)) ** 2).mean(dim=self._dims())
            mean, var = self.ref_mean, self.ref_var
        elif self.ref_mean is None:
            raise RuntimeError(f"{type(self).__name__} needs a reference pass first; "
                               "wrap the network in ReferenceBatch")
        else:
            mean, var = self.sample_stats(x)
        return self._affine((x - self._shape(mean)) * self._shape(torch.rsqrt(var + self.eps)))

    def sample_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) to normalise x with: (C,) or per sample (N, C)."""
        raise NotImplementedError


class ReferenceNorm(RefStatsNorm):
    def sample_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ref_mean, self.ref_var


class VirtualNorm(RefStatsNorm):
    def sample_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own_mean = x.mean(dim=(2, 3)) if self.spatial else x  # (N, C)
        own_var = x.var(dim=(2, 3), unbiased=False) if self.spatial else torch.zeros_like(x)
        w_ref = self.ref_size / (self.ref_size + 1)  # the reference batch's share, N/(N+1)
        w_own = 1 - w_ref
        mean = w_own * own_mean + w_ref * self.ref_mean
        # the pooled variance of {reference batch, sample}: the same as
        # E[x^2] - mu^2 with E[x^2] mixed like mu, without its cancellation
        var = (w_ref * self.ref_var + w_own * own_var
               + w_ref * w_own * (own_mean - self.ref_mean) ** 2)
        return mean, var


@dataclass(frozen=True)
class NormSpec:
    make: Callable[[int, bool], nn.Module]  # (num_features, spatial) -> layer
    reference: bool = False  # reads a fixed reference batch (ReferenceBatch wraps the net)
    batch_statistics: bool = False  # normalises with its own minibatch's statistics


NORMS: Registry[NormSpec] = Registry("norm")
NORMS.register("none")(NormSpec(lambda num_features, spatial: nn.Identity()))
NORMS.register("batch")(NormSpec(
    lambda num_features, spatial: (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(num_features),
    batch_statistics=True))
NORMS.register("reference")(NormSpec(ReferenceNorm, reference=True))
NORMS.register("virtual")(NormSpec(VirtualNorm, reference=True))


def norm_layer(kind: str, num_features: int, spatial: bool) -> nn.Module:
    return NORMS.choose(kind).make(num_features, spatial)


def needs_reference(kind: str) -> bool:
    """Whether a norm reads a fixed reference batch (ReferenceBatch must wrap the net)."""
    return NORMS.choose(kind).reference


class ReferenceBatch(nn.Module):
    """Runs a fixed reference batch through `net` before every forward pass.

    The reference inputs are buffers, so they are saved with the network's state (and in
    every checkpoint): a resumed run normalises with exactly the same reference batch.
    """

    def __init__(self, net: nn.Module, ref_inputs: torch.Tensor,
                 ref_labels: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("ref_inputs", ref_inputs.clone())
        self.register_buffer("ref_labels", None if ref_labels is None else ref_labels.clone())
        self.norms = [m for m in net.modules() if isinstance(m, RefStatsNorm)]
        assert self.norms, "ReferenceBatch wraps a network without reference/virtual norms"
        for m in self.norms:
            m.ref_size = len(ref_inputs)

    @contextmanager
    def _collecting(self):
        for m in self.norms:
            m.collecting = True
        try:
            yield
        finally:
            for m in self.norms:
                m.collecting = False

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        with self._collecting():
            self.net(self.ref_inputs, self.ref_labels)
        try:
            return self.net(x, y)
        finally:
            for m in self.norms:  # drop the graph of the reference pass
                m.ref_mean = m.ref_var = None

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)
