"""DCGAN-style generator and discriminator for 28x28 and 32x32 images.

G projects z to a small feature map (7x7 for 28, 4x4 for 32) and doubles its size with
stride-2 transposed convolutions; D mirrors it. Widths are the channels next to the image:
G's last hidden layer has `g_width` channels, D's first has `d_width`; each layer away from
the image doubles them, so `d_width / g_width` is the capacity ratio at every depth.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.nets.norm import RefStatsNorm, norm_layer


def resolution_plan(image_size: int) -> tuple[int, int]:
    """(number of 2x up/down-samplings, smallest feature-map size) for an image size."""
    size, n = image_size, 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        n += 1
    assert n >= 1, f"image size {image_size} has no DCGAN plan"
    return n, size


def dcgan_init(module: nn.Module) -> None:
    # Radford et al.: weights from N(0, 0.02); BN scale from N(1, 0.02).
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, RefStatsNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, in_dim: int, width: int, image_size: int, channels: int, norm: str):
        super().__init__()
        n_up, base = resolution_plan(image_size)
        top = width * 2 ** (n_up - 1)
        self.project = nn.Linear(in_dim, top * base * base)
        self.top_shape = (top, base, base)
        layers: list[nn.Module] = [norm_layer(norm, top, True), nn.ReLU()]
        c = top
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1),
                       norm_layer(norm, c // 2, True), nn.ReLU()]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, *self.top_shape))


class DCGANFeatures(nn.Module):
    """D's trunk; its flattened output feeds the label mode's head."""

    def __init__(self, width: int, image_size: int, channels: int, norm: str):
        super().__init__()
        n_down, base = resolution_plan(image_size)
        # No norm on the first layer (DCGAN): it would normalise away the input image.
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), norm_layer(norm, c * 2, True),
                       nn.LeakyReLU(0.2)]
            c *= 2
        self.net = nn.Sequential(*layers)
        self.out_features = c * base * base
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)
