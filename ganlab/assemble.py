"""From a checked config to a run's parts: its data, G and D (with the label mode's head, the
plug-ins' D layers and the reference batches of reference/virtual norm), their optimisers
(Adam, with the kernel `train.optimizer_impl` picks), and the GAN that plays one round. The
loop and re-scoring both build through here.

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
from ganlab.memory import GIB, available_bytes, bare_nets, per_sample_activations, round_bytes
from ganlab.nets import MODELS
from ganlab.nets.norm import NORMS, ReferenceBatch, needs_reference
from ganlab.optim import Adam


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


def fused_adam_devices() -> tuple[str, ...]:
    """Device types with torch's fused Adam kernel."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        return tuple(_get_fused_kernels_supported_devices())
    except ImportError:  # an older torch: CUDA only
        return ("cuda",)


def resolve_optimizer_impl(impl: str, device: torch.device) -> str:
    """The Adam kernel a run uses: `auto` is fused where the device has it, else foreach
    on CUDA and the per-tensor loop elsewhere. The three agree up to the last bits."""
    fused_ok = device.type in fused_adam_devices()
    if impl == "auto":
        return "fused" if fused_ok else ("foreach" if device.type == "cuda" else "loop")
    if impl == "fused" and not fused_ok:
        raise ConfigError(f"train.optimizer_impl=fused is not available on device "
                          f"{device.type}; choose one of: auto, foreach, loop")
    return impl


def make_adam(params, impl: str, capturable: bool = False, **kwargs) -> Adam:
    """Adam with a resolved kernel choice (`resolve_optimizer_impl`); `capturable` keeps its
    step count on the device, as a CUDA graph of the step needs."""
    return Adam(params, fused=impl == "fused" or None,
                            foreach=impl == "foreach", capturable=capturable, **kwargs)


def build_nets(cfg: DictConfig, data, mode: LabelMode, extras: list[Extra],
               ref_seed: int) -> tuple[nn.Module, nn.Module]:
    """G and D (ganlab.memory.bare_nets), initialised as the model family says; either is
    wrapped in ReferenceBatch when its norm reads a reference batch, drawn from `ref_seed`."""
    k = data.num_classes
    spec = MODELS.choose(cfg.model.name)
    G, D = bare_nets(cfg, data.sample_shape, k, mode, extras)
    if spec.init is not None:
        spec.init(G)
        spec.init(D)
    gen = torch.Generator().manual_seed(ref_seed)
    n = cfg.norm.ref_batch_size
    if needs_reference(cfg.norm.g):
        z_ref = torch.randn(n, cfg.model.z_dim, generator=gen)
        y_ref = torch.randint(k, (n,), generator=gen) if G.num_classes else None
        G = ReferenceBatch(G, z_ref, y_ref)
    if needs_reference(cfg.norm.d):
        x_ref, y_ref = data.reference_batch(n, gen)
        D = ReferenceBatch(D, x_ref, y_ref)
    return G, D


def build_gan(cfg: DictConfig, device: torch.device) -> GAN:
    """The run's GAN, freshly initialised from its seed, on `device`. A config that cannot
    run here (a reference batch larger than the data, a round larger than the memory) is
    refused with the numbers."""
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    data = build_data(cfg.data, derive_seed(cfg.seed, "data"), device, cfg.labels.fraction)
    n = cfg.norm.ref_batch_size
    if needs_reference(cfg.norm.d) and hasattr(data, "__len__") and n > len(data):
        raise ConfigError(f"norm.ref_batch_size={n} is not allowed with norm.d={cfg.norm.d}: "
                          f"D's reference batch is drawn from data={cfg.data.name}'s "
                          f"{cfg.data.split} split of {len(data)} samples; it must be <= "
                          f"{len(data)}")
    mode = LABEL_MODES.choose(cfg.labels.name)(cfg.labels.class_weight)
    extras = build_extras(cfg.extras)
    G, D = build_nets(cfg, data, mode, extras, derive_seed(cfg.seed, "reference"))
    G, D = G.to(device), D.to(device)
    check_memory(cfg, G, D, data, device)
    t = cfg.train
    impl = resolve_optimizer_impl(t.optimizer_impl, device)
    graphs = bool(t.cuda_graphs) and device.type == "cuda"
    opt_g = make_adam(G.parameters(), impl, graphs, lr=t.lr_g, betas=tuple(t.betas_g))
    opt_d = make_adam(D.parameters(), impl, graphs, lr=t.lr_d, betas=tuple(t.betas_d))
    game = Game(build_loss(cfg.loss.name, cfg.smoothing.real_target, cfg.smoothing.fake_target),
                mode, extras)
    schedule = Schedule(t.batch_size, t.d_steps, t.g_steps, cfg.norm.d_batches,
                        d_couples=NORMS.choose(cfg.norm.d).batch_statistics)
    return GAN(G, D, opt_g, opt_d, game, data, schedule,
               noise_seed=derive_seed(cfg.seed, "noise"), device=device, ema=cfg.eval.ema)


# -- will it fit? ----------------------------------------------------------------------------
def round_memory_bytes(cfg: DictConfig, G: nn.Module, D: nn.Module, data,
                       device: torch.device) -> int:
    """The memory one training round of these G and D needs (ganlab.memory), weights
    included."""
    g = G.net if isinstance(G, ReferenceBatch) else G
    d = D.net if isinstance(D, ReferenceBatch) else D
    per_g, per_d = per_sample_activations(g, d, cfg.model.z_dim, data.sample_shape, device)
    weights = sum(p.numel() * p.element_size() for m in (G, D) for p in m.parameters())
    return round_bytes(cfg, per_g, per_d) + 4 * weights


def check_memory(cfg: DictConfig, G: nn.Module, D: nn.Module, data, device: torch.device,
                 available: int | None = None) -> None:
    """The built GAN's round against the device's free memory (a GPU's is only known here,
    in the process that trains; the CPU's is checked before anything is written, by
    ganlab.preflight)."""
    need = round_memory_bytes(cfg, G, D, data, device)
    available = available_bytes(device) if available is None else available
    if available is not None and need > available:
        raise ConfigError(
            f"this config needs about {need / GIB:.1f} GiB for one round (train.batch_size="
            f"{cfg.train.batch_size}, norm.ref_batch_size={cfg.norm.ref_batch_size} with "
            f"norm.g={cfg.norm.g}, norm.d={cfg.norm.d}), more than the {available / GIB:.1f} "
            f"GiB available on {device}; lower norm.ref_batch_size or train.batch_size")
