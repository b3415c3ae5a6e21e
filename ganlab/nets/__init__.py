"""Network assembly: `build_nets(cfg, data, ref_seed) -> (G, D)` for every model family.

G = [one-hot y concatenated to z, when the label mode conditions G] -> family body.
D = family trunk -> [minibatch discrimination] -> the label mode's head.
Either is wrapped in `ReferenceBatch` when its norm needs a reference batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.extras import MinibatchDiscrimination
from ganlab.labels import LABEL_MODES
from ganlab.nets.dcgan import DCGANFeatures, DCGANGenerator
from ganlab.nets.mlp import MLPFeatures, MLPGenerator
from ganlab.nets.norm import NEEDS_REFERENCE, ReferenceBatch


class Generator(nn.Module):
    def __init__(self, body: nn.Module, z_dim: int, num_classes: int):
        super().__init__()
        self.body, self.z_dim, self.num_classes = body, z_dim, num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1)
        return self.body(z)


class Discriminator(nn.Module):
    def __init__(self, trunk: nn.Module, head: nn.Module, mbd: nn.Module | None):
        super().__init__()
        self.trunk, self.mbd, self.head = trunk, mbd, head
        # Minibatch features must compare real with real and fake with fake.
        self.separate_real_fake = mbd is not None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        h = self.trunk(x)
        if self.mbd is not None:
            h = self.mbd(h)
        return self.head(h, y)  # (adv_logits (N,), class_logits (N, K) or None)


def _mlp_bodies(model, norm, data, g_in: int) -> tuple[nn.Module, nn.Module]:
    (dim,) = data.sample_shape
    return (MLPGenerator(g_in, model.g_width, model.depth, dim, norm.g),
            MLPFeatures(dim, model.d_width, model.depth, norm.d))


def _dcgan_bodies(model, norm, data, g_in: int) -> tuple[nn.Module, nn.Module]:
    channels, size, _ = data.sample_shape
    return (DCGANGenerator(g_in, model.g_width, size, channels, norm.g),
            DCGANFeatures(model.d_width, size, channels, norm.d))


MODEL_BUILDERS = {"mlp": _mlp_bodies, "dcgan": _dcgan_bodies}


def build_nets(cfg, data, ref_seed: int) -> tuple[nn.Module, nn.Module]:
    """Build G and D from the run config for a data source; `ref_seed` fixes the
    reference batches of reference/virtual norm."""
    mode = LABEL_MODES[cfg.labels.name]
    k = data.num_classes
    g_classes = k if mode.conditional_g else 0
    g_body, trunk = MODEL_BUILDERS[cfg.model.name](cfg.model, cfg.norm, data,
                                                   cfg.model.z_dim + g_classes)
    mb = cfg.extras.minibatch_discrimination
    mbd = MinibatchDiscrimination(trunk.out_features, mb.kernels, mb.dims) if mb.kernels else None
    head = mode.head(trunk.out_features + (mb.kernels if mbd else 0), k)
    G = Generator(g_body, cfg.model.z_dim, g_classes)
    D = Discriminator(trunk, head, mbd)
    gen = torch.Generator().manual_seed(ref_seed)
    n = cfg.norm.ref_batch_size
    if cfg.norm.g in NEEDS_REFERENCE:
        z_ref = torch.randn(n, cfg.model.z_dim, generator=gen)
        y_ref = torch.randint(k, (n,), generator=gen) if g_classes else None
        G = ReferenceBatch(G, z_ref, y_ref)
    if cfg.norm.d in NEEDS_REFERENCE:
        x_ref, y_ref = data.reference_batch(n, gen)
        D = ReferenceBatch(D, x_ref, y_ref)
    return G, D
