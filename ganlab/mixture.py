"""Where a 2-D mixture's samples fall: each sample's nearest mode and whether it is
high-quality (within `hq_std` standard deviations of it). The scorer (ganlab.evaluate.modes)
counts from these and the sample pictures (ganlab.plots) mark the modes with these, so a mode
the picture shows as held is one the scorer saw a high-quality sample in."""

from __future__ import annotations

import torch


def nearest_modes(samples: torch.Tensor, modes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest mode, distance to it) for each sample."""
    dist = torch.cdist(samples.double(), modes.double())
    d, idx = dist.min(dim=1)
    return idx, d


def mode_counts(samples: torch.Tensor, modes: torch.Tensor, std: float,
                hq_std: float = 3.0) -> dict[str, torch.Tensor | int]:
    """What mode coverage is computed from, for one chunk of samples: `n`, and per mode the
    high-quality samples (`hq_counts`) and all samples nearest to it (`counts`); non-finite
    samples count in `n` only. The counts of several chunks add up to those of all at once."""
    assert samples.ndim == 2 and samples.shape[1] == modes.shape[1], samples.shape
    m = len(modes)
    finite = torch.isfinite(samples).all(dim=1)
    idx, dist = nearest_modes(samples[finite], modes)
    hq = dist <= hq_std * std
    return {"n": len(samples), "hq_counts": torch.bincount(idx[hq], minlength=m),
            "counts": torch.bincount(idx, minlength=m)}
