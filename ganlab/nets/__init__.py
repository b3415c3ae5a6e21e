"""Network builders: `build_nets(cfg, data) -> (G, D)` for every model family."""

from __future__ import annotations

from torch import nn

from ganlab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganlab.nets.mlp import MLPDiscriminator, MLPGenerator


def _mlp(model, norm, data) -> tuple[nn.Module, nn.Module]:
    (dim,) = data.sample_shape
    return (MLPGenerator(model.z_dim, model.g_width, model.depth, dim, norm.g),
            MLPDiscriminator(dim, model.d_width, model.depth, norm.d))


def _dcgan(model, norm, data) -> tuple[nn.Module, nn.Module]:
    channels, size, _ = data.sample_shape
    return (DCGANGenerator(model.z_dim, model.g_width, size, channels, norm.g),
            DCGANDiscriminator(model.d_width, size, channels, norm.d))


MODEL_BUILDERS = {"mlp": _mlp, "dcgan": _dcgan}


def build_nets(model, norm, data) -> tuple[nn.Module, nn.Module]:
    """Build G and D from the `model` and `norm` config sections for a data source."""
    return MODEL_BUILDERS[model.name](model, norm, data)
