"""Will it fit? The memory a run needs, estimated from its config alone, before any run dir
is written or any tensor allocated, and checked against what the machine (or its cgroup:
a container's or a SLURM job's limit) has free.

G and D are built on torch's `meta` device (shapes without storage, instantly, whatever the
widths), and one forward pass of each counts the bytes of every layer's output. A run
needs, roughly:

- `weights`: four copies of G's and D's weights (weights, gradients, Adam's two moments);
- `round`: the activations of a round (G on a batch and its reference batch, D on a real
  and a fake batch and its reference batch), times ROUND_MEMORY_FACTOR for what the
  backward pass keeps;
- `reference batches`: the fixed inputs of reference/virtual batch norm;
- `training data`: the images of the split (image data) or the fixed set of `data.train_size`;
- `evaluation`: the features and logits of every generated image (image data; samples are
  drawn and scored in chunks of EVAL_CHUNK_SAMPLES, so 2-D evaluations need one chunk).

Stacked seeds multiply everything but the data; runs at once on one machine share it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from ganlab.config import ConfigError, select
from ganlab.data import DATASETS
from ganlab.extras import Extra, build_extras
from ganlab.labels import LABEL_MODES, LabelMode
from ganlab.nets import MODELS, Discriminator, Generator
from ganlab.nets.norm import RefStatsNorm, needs_reference

# the memory of a round, as a multiple of the activations of its forward passes: kept for
# the backward pass, their gradients, and the optimiser's and the allocator's slack
ROUND_MEMORY_FACTOR = 3
# generated samples scored at a time: an evaluation never holds more of them at once
EVAL_CHUNK_SAMPLES = 65536
# an image's features and logits as the evaluator keeps them (float64), for the widest
# extractor (InceptionV3: 2048 features, 1008 logits)
FEATURE_BYTES_PER_IMAGE = 8 * (2048 + 1008)
# image splits are held as uint8 and converted to float32 on the device
IMAGE_BYTES_PER_VALUE = 1 + 4
# the largest image split (MNIST's train split) when a dataset does not say
IMAGE_SPLIT_SIZE = 60000
GIB = 2 ** 30


def sample_shape(cfg: DictConfig) -> tuple[int, ...]:
    """The shape of one data sample, from the config (no data loaded)."""
    if DATASETS.choose(cfg.data.name).kind == "toy2d":
        return (2,)
    return (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)


def bare_nets(cfg: DictConfig, shape: tuple[int, ...], num_classes: int, mode: LabelMode,
              extras: list[Extra]) -> tuple[Generator, Discriminator]:
    """G = [one-hot y with z] -> family body; D = family trunk -> plug-ins' layers -> head;
    uninitialised and without reference batches (ganlab.assemble adds both)."""
    g_classes = num_classes if mode.conditional_g else 0
    spec = MODELS.choose(cfg.model.name)
    g_body, trunk = spec.bodies(cfg.model, cfg.norm, shape, cfg.model.z_dim + g_classes)
    layers, features = {}, trunk.out_features
    for extra in extras:
        layer = extra.d_layer(features)
        if layer is not None:
            layers[extra.name], features = layer, layer.out_features
    return (Generator(g_body, cfg.model.z_dim, g_classes),
            Discriminator(trunk, layers, mode.head(features, num_classes)))


def activation_bytes(net: nn.Module, *inputs) -> int:
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


def per_sample_activations(G: nn.Module, D: nn.Module, z_dim: int, shape: tuple[int, ...],
                           device) -> tuple[float, float]:
    """(G's, D's) activation bytes per sample, from a forward pass of two samples."""
    g_classes = getattr(G, "num_classes", 0)
    z = torch.zeros(2, z_dim, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device) if g_classes else None
    x = torch.zeros(2, *shape, device=device)
    y_d = torch.zeros(2, dtype=torch.long, device=device)
    return activation_bytes(G, z, y) / 2, activation_bytes(D, x, y_d) / 2


def round_bytes(cfg: DictConfig, per_g: float, per_d: float) -> int:
    b, n = cfg.train.batch_size, cfg.norm.ref_batch_size
    ref_g = n if needs_reference(cfg.norm.g) else 0
    ref_d = n if needs_reference(cfg.norm.d) else 0
    return int(ROUND_MEMORY_FACTOR * (per_g * (b + ref_g) + per_d * (2 * b + ref_d)))


def _weights_bytes(*nets: nn.Module) -> int:
    return 4 * sum(p.numel() * p.element_size() for m in nets for p in m.parameters())


def needs(cfg: DictConfig, stack: int = 1) -> dict[str, tuple[int, str]]:
    """What a run of `cfg` needs, by part: {part: (bytes, the key that sets it)}; `stack`
    seeds trained as one stacked model."""
    shape = sample_shape(cfg)
    data_kind = DATASETS.choose(cfg.data.name).kind
    k = cfg.data.num_classes
    mode = LABEL_MODES.choose(cfg.labels.name)(cfg.labels.class_weight)
    with torch.device("meta"):
        G, D = bare_nets(cfg, shape, k, mode, build_extras(cfg.extras))
        per_g, per_d = per_sample_activations(G, D, cfg.model.z_dim, shape, "meta")
    values = math.prod(shape)
    n_ref = cfg.norm.ref_batch_size
    refs = 4 * (n_ref * cfg.model.z_dim * needs_reference(cfg.norm.g)
                + n_ref * values * needs_reference(cfg.norm.d))
    g_wider = cfg.model.g_width >= cfg.model.d_width
    parts = {
        "weights": (stack * _weights_bytes(G, D),
                    "model.g_width" if g_wider else "model.d_width"),
        "round": (stack * round_bytes(cfg, per_g, per_d),
                  "norm.ref_batch_size" if refs > 0 and n_ref > cfg.train.batch_size
                  else "train.batch_size"),
        "reference batches": (stack * refs, "norm.ref_batch_size"),
    }
    if data_kind == "toy2d":
        parts["training data"] = (4 * values * cfg.data.train_size, "data.train_size")
        parts["evaluation"] = (stack * min(cfg.eval.num_samples, EVAL_CHUNK_SAMPLES)
                               * 8 * (values + max(k, 1)), "eval.num_samples")
    else:
        parts["training data"] = (IMAGE_BYTES_PER_VALUE * values * IMAGE_SPLIT_SIZE,
                                  "data.image_size")
        n_eval = max(cfg.eval.num_samples, cfg.eval.final_num_samples)
        key = ("eval.final_num_samples" if cfg.eval.final_num_samples >= cfg.eval.num_samples
               else "eval.num_samples")
        parts["evaluation"] = (stack * n_eval * FEATURE_BYTES_PER_IMAGE
                               + FEATURE_BYTES_PER_IMAGE * cfg.eval.real_num_samples, key)
    return parts


def available_bytes(device: torch.device | str = "cpu",
                    cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Memory free for a run on `device` (None where it cannot be told): on the CPU the
    smaller of the machine's available memory and what the process's cgroup (a container's
    or a SLURM job's limit) has left."""
    device = torch.device(device)
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


def check_fits(cfg: DictConfig, device: torch.device | str = "cpu", stack: int = 1,
               at_once: int = 1, available: int | None = None) -> None:
    """Refuse (ConfigError, one line: the estimate, the limit, the key to lower) a config
    whose `at_once` runs of `stack` seeds each need more memory than is free."""
    parts = needs(cfg, stack)
    need = at_once * sum(b for b, _ in parts.values())
    available = available_bytes(device) if available is None else available
    if available is None or need <= available:
        return
    part, (biggest, key) = max(parts.items(), key=lambda item: item[1][0])
    value = select(cfg, key)
    runs = f" for {at_once} runs at once" if at_once > 1 else ""
    stacked = f" ({stack} seeds stacked: fanout.vectorize_seeds)" if stack > 1 else ""
    raise ConfigError(
        f"this config needs about {need / GIB:.1f} GiB{runs}{stacked}, more than the "
        f"{available / GIB:.1f} GiB free on {torch.device(device).type}; most of it "
        f"({at_once * biggest / GIB:.1f} GiB) is the {part}: lower {key} (now {value})")


def refuse_oversized_reference(cfg: DictConfig) -> None:
    """D's reference batch is drawn from the training data: it cannot be larger."""
    if not needs_reference(cfg.norm.d):
        return
    n = cfg.norm.ref_batch_size
    spec = DATASETS.choose(cfg.data.name)
    size = cfg.data.train_size if spec.kind == "toy2d" else spec.split_sizes.get(cfg.data.split)
    if size and n > size:
        where = (f"data.train_size={size}" if spec.kind == "toy2d"
                 else f"data={cfg.data.name}'s {cfg.data.split} split of {size} samples")
        raise ConfigError(f"norm.ref_batch_size={n} is not allowed with norm.d={cfg.norm.d}: "
                          f"D's reference batch is drawn from {where}; it must be <= {size}")
