"""Pictures of samples: a scatter over the true modes for 2-D data, a grid for images."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganlab.storage import atomic_write, save_figure

__all__ = ["image_grid", "save_figure", "save_png"]


def save_png(image: Image.Image, path: Path) -> None:
    """Write a picture atomically (a full disk leaves no half file, and says so)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())


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
    save_png(Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid), path)


def save_scatter(samples: torch.Tensor, modes: torch.Tensor, path: Path, title: str,
                 size: int = 450) -> None:
    """Generated points (blue) over the true modes (red crosses), drawn with PIL: a run
    saves one at every evaluation, and matplotlib would add a second to each."""
    from PIL import ImageDraw

    margin, top = 30, 24
    span = float(modes.abs().max()) * 1.5 + 0.5  # the axes show [-span, span]^2
    inner = size - 2 * margin

    def to_px(xy: np.ndarray) -> np.ndarray:
        px = (xy + span) / (2 * span) * inner
        return np.stack([margin + px[:, 0], size - margin - px[:, 1] + top / 2], axis=1)

    image = Image.new("RGBA", (size, size), "white")
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pts = samples[torch.isfinite(samples).all(dim=1)].double().numpy()
    for x, y in to_px(pts):
        draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(31, 119, 180, 170))
    image = Image.alpha_composite(image, layer)
    draw = ImageDraw.Draw(image)
    y0, y1 = to_px(np.array([[-span, -span], [span, span]]))[:, 1]
    draw.rectangle((margin, y1, size - margin, y0), outline="black")
    for x, y in to_px(modes.double().numpy()):
        draw.line((x - 6, y - 6, x + 6, y + 6), fill=(214, 39, 40), width=3)
        draw.line((x - 6, y + 6, x + 6, y - 6), fill=(214, 39, 40), width=3)
    draw.text((margin, 6), f"{title}   (blue: generated, red: true modes; "
                           f"axes [-{span:.3g}, {span:.3g}])", fill="black")
    save_png(image, path)


def save_samples(samples: torch.Tensor, data, path: Path, title: str, grid_size: int) -> None:
    if data.kind == "toy2d":
        save_scatter(samples, data.modes, path, title)
    else:
        save_image_grid(samples[:grid_size], path)
