"""Pictures of samples: a scatter over the true modes for 2-D data, a grid for images."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganlab.mixture import mode_counts
from ganlab.storage import atomic_write, save_figure

__all__ = ["image_grid", "save_figure", "save_png", "scatter_frame"]

_MARGIN, _TOP = 30, 24  # a scatter's side margins, and the two title lines above its box


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
                 std: float | None = None, hq_std: float = 3.0, size: int = 450
                 ) -> list[bool]:
    """Generated points (blue) drawn over the true modes, with PIL: a run saves one at every
    evaluation, and matplotlib would add a second to each. Each mode is a ring of radius
    hq_std * std (eval.hq_std, the high-quality radius of ganlab.evaluate.modes), grey where a
    shown sample lies inside it, red with a cross where none does, so a mode G dropped is
    seen at a glance even when every sample sits on a mode; the samples go on top, so none
    hides under a marker. Returns which modes hold a shown sample (all, without `std`): a
    high-quality sample by the scorer's own test (ganlab.mixture.mode_counts)."""
    from PIL import ImageDraw

    left, _, right, bottom = scatter_frame(size)
    span = float(modes.abs().max()) * 1.5 + 0.5  # the axes show [-span, span]^2
    scale = (right - left) / (2 * span)  # pixels per data unit

    def to_px(xy: np.ndarray) -> np.ndarray:
        px = (xy + span) * scale
        return np.stack([left + px[:, 0], bottom - px[:, 1]], axis=1)

    pts = samples[torch.isfinite(samples).all(dim=1)].double()
    centres = modes.double()
    if std is not None and len(pts):
        held = (mode_counts(pts, centres, std, hq_std)["hq_counts"] > 0).tolist()
    else:
        held = [True] * len(centres)
    image = Image.new("RGBA", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle(scatter_frame(size), outline="black")
    ring = max(5.0, hq_std * std * scale) if std is not None else 6.0
    for (x, y), ok in zip(to_px(centres.numpy()), held, strict=True):
        colour = (150, 150, 150) if ok else (214, 39, 40)
        draw.ellipse((x - ring, y - ring, x + ring, y + ring), outline=colour,
                     width=1 if ok else 2)
        if not ok:
            draw.line((x - 4, y - 4, x + 4, y + 4), fill=colour, width=2)
            draw.line((x - 4, y + 4, x + 4, y - 4), fill=colour, width=2)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    dots = ImageDraw.Draw(layer)
    for x, y in to_px(pts.numpy()):
        dots.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(31, 119, 180, 170))
    image = Image.alpha_composite(image, layer)
    draw = ImageDraw.Draw(image)
    count = f"{sum(held)}/{len(held)} modes hold a sample; " if std is not None else ""
    draw.text((left, 2), f"{title}   (axes [-{span:.3g}, {span:.3g}])", fill="black")
    draw.text((left, 13), f"{count}blue: generated, ring: a true mode's {hq_std:g} std"
                            f"{', red: none there' if std is not None else ''}", fill="black")
    save_png(image, path)
    return held


def scatter_frame(size: int = 450) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of the box `save_scatter` draws at `size`: its axes
    [-span, span]^2 without the title lines, which is what a picture of many runs shows of
    each (`python -m ganlab.compare.seeds`)."""
    shift = _TOP // 2  # the box sits half the title lines' height below the centre
    return _MARGIN, _MARGIN + shift, size - _MARGIN, size - _MARGIN + shift


def save_samples(samples: torch.Tensor, data, path: Path, title: str, grid_size: int,
                 hq_std: float = 3.0) -> None:
    if data.kind == "toy2d":
        save_scatter(samples, data.modes, path, title, getattr(data, "std", None), hq_std)
    else:
        save_image_grid(samples[:grid_size], path)
