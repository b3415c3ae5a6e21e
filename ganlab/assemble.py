"""From a checked config to a run's parts: its data, G and D (with the label mode's head, the
plug-ins' D layers and the reference batches of reference/virtual norm), their optimisers
(Adam, with the kernel `train.optimizer_impl` picks), and the GAN that plays one round. The
loop and re-scoring both build through here.

Every random stream of a run has its own seed derived from `seed` (`derive_seed`): weight
init, data order, reference batches, latents, and one stream per evaluation.
"""

from __future__ import annotations

from pathlib import Path

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
from ganlab.nets.norm import ReferenceBatch, RefStatsNorm, needs_reference
from ganlab.optim import Adam

# the memory of a round, as a multiple of the activations of its forward passes: kept for
# the backward pass, their gradients, and the optimiser's and the allocator's slack
ROUND_MEMORY_FACTOR = 3


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
    """G = [one-hot y with z] -> family body; D = family trunk -> plug-ins' layers -> head.
    Either is wrapped in ReferenceBatch when its norm reads a reference batch, drawn from
    `ref_seed`."""
    k = data.num_classes
    g_classes = k if mode.conditional_g else 0
    spec = MODELS.choose(cfg.model.name)
    g_body, trunk = spec.bodies(cfg.model, cfg.norm, data.sample_shape,
                                cfg.model.z_dim + g_classes)
    layers, features = {}, trunk.out_features
    for extra in extras:
        layer = extra.d_layer(features)
        if layer is not None:
            layers[extra.name], features = layer, layer.out_features
    G = Generator(g_body, cfg.model.z_dim, g_classes)
    D = Discriminator(trunk, layers, mode.head(features, k))
    if spec.init is not None:
        spec.init(G)
        spec.init(D)
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
    schedule = Schedule(t.batch_size, t.d_steps, t.g_steps, cfg.norm.split_real_fake)
    return GAN(G, D, opt_g, opt_d, game, data, schedule,
               noise_seed=derive_seed(cfg.seed, "noise"), device=device)


# -- will it fit? ----------------------------------------------------------------------------
def _activation_bytes(net: nn.Module, *inputs) -> int:
    """Bytes of every leaf module's output for `inputs`, in eval mode without gradients;
    reference/virtual norms take their statistics from the inputs themselves."""
    total = 0

    def count(module, args, output):
        nonlocal total
        for t in output if isinstance(output, tuple) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    norms = [m for m in net.modules() if isinstance(m, RefStatsNorm)]
    was_training = net.training
    net.eval()
    try:
        for m in norms:
            m.collecting = True
        with torch.no_grad():
            net(*inputs)
    finally:
        for m in norms:
            m.collecting, m.ref_mean, m.ref_var = False, None, None
        for h in handles:
            h.remove()
        net.train(was_training)
    return total


def round_memory_bytes(cfg: DictConfig, G: nn.Module, D: nn.Module, data,
                       device: torch.device) -> int:
    """A rough estimate of the memory one training round needs: the activations of G on a
    batch (and its reference batch) and of D on a real and a fake batch (and its reference
    batch), times ROUND_MEMORY_FACTOR, plus four copies of the weights (weights, gradients,
    Adam's two moments)."""
    g = G.net if isinstance(G, ReferenceBatch) else G
    d = D.net if isinstance(D, ReferenceBatch) else D
    z = torch.zeros(2, cfg.model.z_dim, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device) if g.num_classes else None
    per_g = _activation_bytes(g, z, y) / 2
    x = torch.zeros(2, *data.sample_shape, device=device)
    y_d = torch.zeros(2, dtype=torch.long, device=device)
    per_d = _activation_bytes(d, x, y_d) / 2
    b, n = cfg.train.batch_size, cfg.norm.ref_batch_size
    ref_g = n if needs_reference(cfg.norm.g) else 0
    ref_d = n if needs_reference(cfg.norm.d) else 0
    weights = sum(p.numel() * p.element_size() for m in (G, D) for p in m.parameters())
    return int(ROUND_MEMORY_FACTOR * (per_g * (b + ref_g) + per_d * (2 * b + ref_d))
               + 4 * weights)


def available_memory_bytes(device: torch.device,
                           cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Memory free for a run on `device` (None where it cannot be told): on the CPU the
    smaller of the machine's available memory and what the process's cgroup (a container's
    or a SLURM job's limit) has left."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = []
    try:
        with open("/proc/meminfo") as f:
            free += [int(line.split()[1]) * 1024 for line in f
                     if line.startswith("MemAvailable:")]
    except OSError:
        pass
    try:  # cgroup v2
        limit = Path(cgroup, "memory.max").read_text().strip()
        if limit != "max":
            free.append(int(limit) - int(Path(cgroup, "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(min(free), 0) if free else None


def check_memory(cfg: DictConfig, G: nn.Module, D: nn.Module, data, device: torch.device,
                 available: int | None = None) -> None:
    need = round_memory_bytes(cfg, G, D, data, device)
    available = available_memory_bytes(device) if available is None else available
    if available is not None and need > available:
        gib = 2 ** 30
        raise ConfigError(
            f"this config needs about {need / gib:.1f} GiB for one round (train.batch_size="
            f"{cfg.train.batch_size}, norm.ref_batch_size={cfg.norm.ref_batch_size} with "
            f"norm.g={cfg.norm.g}, norm.d={cfg.norm.d}), more than the {available / gib:.1f} "
            f"GiB available on {device}; lower norm.ref_batch_size or train.batch_size")
