"""The comparer's statistics: intervals of a mean and multiple-testing correction."""

from __future__ import annotations

import numpy as np
from scipy import stats

CI_LEVEL = 0.95


def bootstrap_ci(values, seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile-bootstrap CI of the mean (scipy.stats.bootstrap), None if n < 2."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, confidence_level=CI_LEVEL, n_resamples=9999,
                          method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_t(a, b) -> float:
    """Two-sided p-value of the paired t-test of a against b (scipy.stats.ttest_rel)."""
    return float(stats.ttest_rel(a, b).pvalue)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries are skipped)."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
