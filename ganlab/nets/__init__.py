"""Networks: the MODELS registry of model families, and the G and D wrappers around them.

A family builds a G body (latent (+ one-hot label) -> sample) and a D trunk (sample ->
features). `Generator` feeds y to the body when G is conditional; `Discriminator` runs the
trunk, the extras' feature layers (e.g. minibatch discrimination) and the label mode's head,
and returns a `DOutput`. ganlab.assemble puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.nets.dcgan import DCGANFeatures, DCGANGenerator
from ganlab.nets.mlp import MaxoutFeatures, MLPFeatures, MLPGenerator, normal_init
from ganlab.registry import Registry

__all__ = ["MODELS", "DOutput", "Discriminator", "Generator", "ModelSpec"]


class DOutput(NamedTuple):
    adv: torch.Tensor  # (N,) real/fake logits: what the GAN loss (and smoothing) sees
    cls: torch.Tensor | None  # (N, K) class logits of the label mode's head, or None
    features: torch.Tensor  # (N, A) the trunk's features (what feature matching matches)


class Generator(nn.Module):
    def __init__(self, body: nn.Module, z_dim: int, num_classes: int):
        super().__init__()
        self.body, self.z_dim, self.num_classes = body, z_dim, num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1)
        return self.body(z)


class Discriminator(nn.Module):
    def __init__(self, trunk: nn.Module, layers: dict[str, nn.Module], head: nn.Module):
        super().__init__()
        self.trunk, self.layers, self.head = trunk, nn.ModuleDict(layers), head

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOutput:
        features = self.trunk(x)
        h = features
        for layer in self.layers.values():
            h = layer(h)
        adv, cls = self.head(h, y)
        return DOutput(adv, cls, features)


@dataclass(frozen=True)
class ModelSpec:
    # (model cfg, norm cfg, sample shape, G's input size) -> (G body, D trunk); the trunk has
    # `out_features`
    bodies: Callable[..., tuple[nn.Module, nn.Module]]
    data_kind: str  # the kind of data it is built for (ganlab.data.DATASETS' kinds)
    image_sizes: tuple[int, ...] = ()  # the image sizes it supports (images only)
    # applied to the whole G and D once built (head and plug-in layers included)
    init: Callable[[nn.Module], None] | None = None
    # its nets run under torch.func.vmap with the results of a run alone, so seeds can be
    # stacked (ganlab.vectorize; tests/test_vectorize.py checks each family that says so)
    vectorizable: bool = False


MODELS: Registry[ModelSpec] = Registry("model")


def _mlp_bodies(model, norm, sample_shape, g_in: int) -> tuple[nn.Module, nn.Module]:
    (dim,) = sample_shape
    return (MLPGenerator(g_in, model.g_width, model.depth, dim, norm.g),
            MLPFeatures(dim, model.d_width, model.depth, norm.d))


def _dcgan_bodies(model, norm, sample_shape, g_in: int) -> tuple[nn.Module, nn.Module]:
    channels, size, _ = sample_shape
    return (DCGANGenerator(g_in, model.g_width, size, channels, norm.g),
            DCGANFeatures(model.d_width, size, channels, norm.d))


def _pacgan_bodies(model, norm, sample_shape, g_in: int) -> tuple[nn.Module, nn.Module]:
    (dim,) = sample_shape
    return (MLPGenerator(g_in, model.g_width, model.depth, dim, norm.g),
            MaxoutFeatures(dim, model.d_width, model.d_depth or model.depth,
                           model.maxout_pieces, norm.d))


MODELS.register("mlp")(ModelSpec(_mlp_bodies, "toy2d", vectorizable=True))
# PacGAN's 2-D architecture: ReLU MLP G, maxout D, every weight N(0, 0.02^2)
MODELS.register("pacgan_mlp")(ModelSpec(_pacgan_bodies, "toy2d", init=normal_init,
                                        vectorizable=True))
MODELS.register("dcgan")(ModelSpec(_dcgan_bodies, "image", image_sizes=(28, 32)))
