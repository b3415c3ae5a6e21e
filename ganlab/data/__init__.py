"""Data sources: the DATASETS registry and one `build_data(cfg.data, ...)` for every name.

See ganlab.data.base for what a source provides.
"""

from __future__ import annotations

from functools import partial

import torch

from ganlab.config import ConfigError, DataConfig, data_root
from ganlab.data.base import UNLABELLED, DatasetSpec
from ganlab.data.images import IDX_DATASETS, ImageDataset, load_cifar10, load_idx_dataset
from ganlab.data.toy import MIXTURES, GaussianMixture2D
from ganlab.registry import Registry

__all__ = ["DATASETS", "UNLABELLED", "build_data", "load_split"]

DATASETS: Registry[DatasetSpec] = Registry("data")
for _name in MIXTURES:
    DATASETS.register(_name)(DatasetSpec("toy2d"))
for _name in IDX_DATASETS:
    DATASETS.register(_name)(DatasetSpec("image", partial(load_idx_dataset, _name),
                                         features="classifier",
                                         split_sizes={"train": 60000, "test": 10000}))
DATASETS.register("cifar10")(DatasetSpec("image", load_cifar10, features="inception",
                                         split_sizes={"train": 50000, "test": 10000}))


def load_split(cfg: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, C, H, W), labels) of one split of an image dataset."""
    spec = DATASETS.choose(cfg.name)
    assert spec.load_split is not None, f"data={cfg.name} has no splits"
    return spec.load_split(data_root(cfg.root), split, cfg.download)


def build_data(cfg: DataConfig, seed: int, device: torch.device, label_fraction: float = 1.0):
    if DATASETS.choose(cfg.name).kind == "toy2d":
        return GaussianMixture2D(cfg.name, seed, device, label_fraction, cfg.train_size)
    if cfg.train_size:
        raise ConfigError(f"data.train_size={cfg.train_size} is not allowed with "
                          f"data={cfg.name}; image data trains on its split (use 0)")
    images, labels = load_split(cfg, cfg.split)
    expected = (cfg.channels, cfg.image_size, cfg.image_size)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"data={cfg.name}: images are {tuple(images.shape[1:])}, "
                         f"config says {expected}")
    return ImageDataset(images, labels, cfg.num_classes, seed, device, label_fraction)
