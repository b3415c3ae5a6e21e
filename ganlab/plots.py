"""Pictures of samples: a scatter over the true modes for 2-D data, a grid for images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (rows*H, cols*W, C) uint8, near-square, padded."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid


def save_image_grid(images: torch.Tensor, path: Path) -> None:
    grid = image_grid(images)
    Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(path)


def _pyplot():
    # imported on first use: matplotlib adds start-up time to every run otherwise
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_scatter(samples: torch.Tensor, modes: torch.Tensor, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    pts = samples[torch.isfinite(samples).all(dim=1)].numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.35, color="tab:blue", label="generated")
    ax.scatter(modes[:, 0], modes[:, 1], s=60, marker="x", color="tab:red", label="true modes")
    span = float(modes.abs().max()) * 1.5 + 0.5
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_samples(samples: torch.Tensor, data, path: Path, title: str, grid_size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data.kind == "toy2d":
        save_scatter(samples, data.modes, path, title)
    else:
        save_image_grid(samples[:grid_size], path)
