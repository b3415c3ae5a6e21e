"""From a checked config to a run's parts: its data, G and D (with the label mode's head, the
plug-ins' D layers and the reference batches of reference/virtual norm), their optimisers,
and the GAN that plays one round. The loop and re-scoring both build through here.

Every random stream of a run has its own seed derived from `seed` (`derive_seed`): weight
init, data order, reference batches, latents, and one stream per evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from ganlab.config import ConfigError
from ganlab.data import build_data
from ganlab.extras import Extra, build_extras
from ganlab.gan import GAN, Game, Schedule
from ganlab.labels import LABEL_MODES, LabelMode
from ganlab.losses import build_loss
from ganlab.nets import MODELS, Discriminator, Generator
from ganlab.nets.norm import ReferenceBatch, needs_reference


def derive_seed(seed: int, stream: str) -> int:
    """Independent, stable seeds for each random stream of a run."""
    words = [seed] + [ord(ch) for ch in stream]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} is not available on this machine; "
                          "choose one of: auto, cpu")
    return torch.device(name)


def build_nets(cfg: DictConfig, data, mode: LabelMode, extras: list[Extra],
               ref_seed: int) -> tuple[nn.Module, nn.Module]:
    """G = [one-hot y with z] -> family body; D = family trunk -> plug-ins' layers -> head.
    Either is wrapped in ReferenceBatch when its norm reads a reference batch, drawn from
    `ref_seed`."""
    k = data.num_classes
    g_classes = k if mode.conditional_g else 0
    g_body, trunk = MODELS.choose(cfg.model.name).bodies(
        cfg.model, cfg.norm, data.sample_shape, cfg.model.z_dim + g_classes)
    layers, features = {}, trunk.out_features
    for extra in extras:
        layer = extra.d_layer(features)
        if layer is not None:
            layers[extra.name], features = layer, layer.out_features
    G = Generator(g_body, cfg.model.z_dim, g_classes)
    D = Discriminator(trunk, layers, mode.head(features, k))
    gen = torch.Generator().manual_seed(ref_seed)
    n = cfg.norm.ref_batch_size
    if needs_reference(cfg.norm.g):
        z_ref = torch.randn(n, cfg.model.z_dim, generator=gen)
        y_ref = torch.randint(k, (n,), generator=gen) if g_classes else None
        G = ReferenceBatch(G, z_ref, y_ref)
    if needs_reference(cfg.norm.d):
        x_ref, y_ref = data.reference_batch(n, gen)
        D = ReferenceBatch(D, x_ref, y_ref)
    return G, D


def build_gan(cfg: DictConfig, device: torch.device) -> GAN:
    """The run's GAN, freshly initialised from its seed, on `device`."""
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    data = build_data(cfg.data, derive_seed(cfg.seed, "data"), device, cfg.labels.fraction)
    mode = LABEL_MODES.choose(cfg.labels.name)(cfg.labels.class_weight)
    extras = build_extras(cfg.extras)
    G, D = build_nets(cfg, data, mode, extras, derive_seed(cfg.seed, "reference"))
    G, D = G.to(device), D.to(device)
    t = cfg.train
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=tuple(t.betas_g))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=tuple(t.betas_d))
    game = Game(build_loss(cfg.loss.name, cfg.smoothing.real_target, cfg.smoothing.fake_target),
                mode, extras)
    schedule = Schedule(t.batch_size, t.d_steps, t.g_steps, cfg.norm.split_real_fake)
    return GAN(G, D, opt_g, opt_d, game, data, schedule,
               noise_seed=derive_seed(cfg.seed, "noise"), device=device)
