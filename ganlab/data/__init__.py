"""Data sources: one `build_data(cfg.data, seed, device)` for every dataset name.

A source has `kind` ("toy2d" or "image"), `num_classes`, `sample_shape`,
`sample(batch_size) -> (x, y)` (y = -1 where a label is hidden), `reference_batch(n, gen)`
for reference/virtual norm, and `state_dict()` / `load_state_dict()` for exact resume.
"""

from __future__ import annotations

import torch

from ganlab.config import DataConfig, data_root
from ganlab.data.images import ImageDataset, load_cifar10, load_idx_dataset
from ganlab.data.toy import MIXTURES, GaussianMixture2D

TOY = tuple(MIXTURES)


def load_split(cfg: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, C, H, W), labels) of one split of an image dataset."""
    if cfg.name == "cifar10":
        return load_cifar10(data_root(cfg.root), split, cfg.download)
    return load_idx_dataset(cfg.name, data_root(cfg.root), split, cfg.download)


def build_data(cfg: DataConfig, seed: int, device: torch.device, label_fraction: float = 1.0):
    if cfg.name in MIXTURES:
        return GaussianMixture2D(cfg.name, seed, device, label_fraction)
    images, labels = load_split(cfg, cfg.split)
    expected = (cfg.channels, cfg.image_size, cfg.image_size)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"data={cfg.name}: images are {tuple(images.shape[1:])}, "
                         f"config says {expected}")
    return ImageDataset(images, labels, cfg.num_classes, seed, device, label_fraction)
