"""Mode coverage on 2-D mixtures (the VEEGAN / PacGAN protocol, with a chance floor).

A generated sample is *high-quality* when it lies within `hq_std` standard deviations of its
nearest mode.

- `modes_covered`: the modes whose high-quality samples exceed what a uniform cloud of the
  same size would put there by chance. The cloud covers the modes' bounding box, widened on
  every side by half the smallest distance between two modes (grid25: [-5, 5]^2; ring8:
  [-1.38, 1.38]^2); a mode's disc of radius hq_std * std catches each of its n points with
  probability p = disc area / box area, so its count is Binomial(n, p). A mode is covered
  when its count is above the level that such a cloud exceeds at any of the K modes with
  probability at most `chance` (0.05, Bonferroni over the modes): uniform noise covers no
  mode 95 % of the time. PacGAN's rule (at least one high-quality sample) lets 2,500 uniform
  points "cover" about 21 of grid25's 25 modes.
- `modes_pacgan`: PacGAN's count, kept beside it: modes with at least `min_count` (1)
  high-quality samples.
- `hq_pct`: the share of high-quality samples, in %.
- `reverse_kl`: KL(q || p) of the histogram q of nearest modes over all finite samples against
  the uniform p over modes; missing modes add nothing to it, so a collapsed G scores log(M/m)
  for m equally filled modes.
"""

from __future__ import annotations

import functools
import math

import torch
from scipy import stats

from ganlab.mixture import mode_counts, nearest_modes

__all__ = ["CHANCE", "add_counts", "chance_count", "metrics_from_counts", "mode_counts",
           "mode_metrics", "nearest_modes", "uniform_box"]

CHANCE = 0.05  # a uniform cloud "covers" any mode with at most this probability


def uniform_box(modes: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(low corner, high corner) of the uniform cloud's box (module docstring)."""
    gaps = torch.cdist(modes.double(), modes.double())
    gaps.fill_diagonal_(math.inf)
    margin = max(float(gaps.min()) / 2 if len(modes) > 1 else 1.0, radius)
    return modes.double().min(0).values - margin, modes.double().max(0).values + margin


@functools.lru_cache(maxsize=64)
def _threshold(n: int, p: float, k: int, chance: float) -> int:
    return int(stats.binom.ppf(1 - chance / k, n, p))


def chance_count(n: int, modes: torch.Tensor, std: float, hq_std: float = 3.0,
                 chance: float = CHANCE) -> int:
    """The high-quality count a mode must exceed: what n uniform points put in one mode's
    disc at most, at any of the modes, with probability 1 - `chance`."""
    radius = hq_std * std
    lo, hi = uniform_box(modes, radius)
    p = min(1.0, math.pi * radius ** 2 / float((hi - lo).prod()))
    return _threshold(n, p, len(modes), chance)


def add_counts(a: dict | None, b: dict) -> dict:
    return b if a is None else {k: a[k] + b[k] for k in b}


def metrics_from_counts(counts: dict, modes: torch.Tensor, std: float, hq_std: float = 3.0,
                        min_count: int = 1, chance: float = CHANCE
                        ) -> dict[str, float | int | None]:
    n, m = counts["n"], len(modes)
    hq_counts, nearest = counts["hq_counts"], counts["counts"].double()
    reverse_kl = None  # undefined when no sample is finite
    if nearest.sum() > 0:
        q = nearest / nearest.sum()
        nz = q > 0
        reverse_kl = float((q[nz] * (q[nz] * m).log()).sum())
    above = max(chance_count(n, modes, std, hq_std, chance), min_count - 1)
    return {
        "modes_covered": int((hq_counts > above).sum()),
        "modes_pacgan": int((hq_counts >= min_count).sum()),
        "hq_pct": 100.0 * float(hq_counts.sum()) / max(n, 1),
        "reverse_kl": reverse_kl,
    }


def mode_metrics(samples: torch.Tensor, modes: torch.Tensor, std: float,
                 hq_std: float = 3.0, min_count: int = 1,
                 chance: float = CHANCE) -> dict[str, float | int | None]:
    return metrics_from_counts(mode_counts(samples, modes, std, hq_std), modes, std, hq_std,
                               min_count, chance)
