"""FID, IS and KID (torchmetrics) and improved precision/recall, on precomputed features.

Features are extracted once per sample set (ganlab.evaluate.features) and handed to the
torchmetrics metrics through an identity "extractor", so the real side can be cached and
every metric sees the same features. Metrics that draw random subsets (IS splits, KID
subsets) run under a fixed seed in a forked RNG: seeded, and the caller's RNG untouched.

Precision/recall is Kynkäänniemi et al. 2019: each set's manifold is the union of balls
around its points with radius the distance to the k-th nearest neighbour in the same set;
precision is the share of generated points inside the real manifold, recall the share of
real points inside the generated one. torchmetrics has no implementation; this one is tested
against a brute-force count.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from ganlab.evaluate.features import single_thread


class Precomputed(nn.Module):
    """An identity 'feature extractor': the metric receives features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _quiet(metric_cls, *args, **kwargs):
    # torchmetrics warns that IS/KID keep all features in memory: that is the point here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return metric_cls(*args, **kwargs)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    # on one thread: the covariance products and eigenvalues round differently with the
    # thread count, and a score must not depend on the machine's (about 0.03 s for 10k)
    with single_thread():
        metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]))
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
        return float(metric.compute())


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0
                    ) -> tuple[float, float]:
    metric = _quiet(InceptionScore, feature=Precomputed(logits.shape[1]), splits=splits)
    metric.update(logits.double())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets."""
    size = min(subset_size, len(real), len(fake))
    metric = _quiet(KernelInceptionDistance, feature=Precomputed(real.shape[1]),
                    subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start:start + chunk], x)
        # the k+1-th smallest distance: the nearest one is the point itself (0)
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
            chunk: int) -> torch.Tensor:
    inside = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start:start + chunk], centres)
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000
                     ) -> tuple[float, float]:
    # float64: a point on a ball's edge must not flip sides through rounding
    real, fake = real.double(), fake.double()
    real_radii = _kth_neighbour_radii(real, k, chunk)
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    precision = _inside(fake, real, real_radii, chunk).float().mean()
    recall = _inside(real, fake, fake_radii, chunk).float().mean()
    return float(precision), float(recall)
