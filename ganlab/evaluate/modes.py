"""Mode coverage on 2-D mixtures (the VEEGAN / PacGAN protocol).

A generated sample is *high-quality* when it lies within `hq_std` standard deviations of its
nearest mode; a mode is *covered* when at least `min_count` high-quality samples have it as
their nearest mode. The reverse KL, KL(q || p), compares the histogram q of nearest modes
over all (finite) samples with the true uniform p over modes; missing modes add nothing to it, so a
collapsed G scores log(M/m) for m equally filled modes.
"""

from __future__ import annotations

import torch


def nearest_modes(samples: torch.Tensor, modes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest mode, distance to it) for each sample."""
    dist = torch.cdist(samples.double(), modes.double())
    d, idx = dist.min(dim=1)
    return idx, d


def mode_metrics(samples: torch.Tensor, modes: torch.Tensor, std: float,
                 hq_std: float = 3.0, min_count: int = 1) -> dict[str, float | int | None]:
    assert samples.ndim == 2 and samples.shape[1] == modes.shape[1], samples.shape
    n, m = len(samples), len(modes)
    finite = torch.isfinite(samples).all(dim=1)
    idx, dist = nearest_modes(samples[finite], modes)
    hq = dist <= hq_std * std
    hq_counts = torch.bincount(idx[hq], minlength=m)
    counts = torch.bincount(idx, minlength=m).double()
    reverse_kl = None  # undefined when no sample is finite
    if counts.sum() > 0:
        q = counts / counts.sum()
        nz = q > 0
        reverse_kl = float((q[nz] * (q[nz] * m).log()).sum())
    return {
        "modes_covered": int((hq_counts >= min_count).sum()),
        "hq_pct": 100.0 * float(hq.sum()) / max(n, 1),
        "reverse_kl": reverse_kl,
    }
