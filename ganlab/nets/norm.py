"""Normalisation layers, chosen by name (`norm.g`, `norm.d`).

Every entry takes (num_features, spatial) and returns a module that maps a batch to a batch
of the same shape. New variants (reference, virtual) plug in here without touching the nets.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _none(num_features: int, spatial: bool) -> nn.Module:
    return nn.Identity()


def _batch(num_features: int, spatial: bool) -> nn.Module:
    # Ordinary batch norm: in train mode every sample's output depends on its batch-mates
    # (tutorial Figure 21); in eval mode it uses the running statistics.
    return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)


NORM_LAYERS: dict[str, Callable[[int, bool], nn.Module]] = {
    "none": _none,
    "batch": _batch,
}


def norm_layer(kind: str, num_features: int, spatial: bool) -> nn.Module:
    return NORM_LAYERS[kind](num_features, spatial)
