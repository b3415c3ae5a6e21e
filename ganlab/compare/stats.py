"""The comparer's statistics: intervals that cover what they claim at the seed counts people
use, effect sizes, power, and Holm's correction.

- `t_interval`: Student's t interval of a mean, mean ± t(1 - a/2, n - 1) s / sqrt(n). Exact
  for normal data at any n; the bootstrap's percentile interval at n = 3 is the range of the
  three values and covers about 2/3 of the time (checked by simulation in the tests).
- `d_z`: the standardised paired effect, mean(d) / sd(d) (Cohen 1988, "d_z"), with the exact
  interval from inverting the noncentral t distribution of t = d_z sqrt(n) (Steiger &
  Fouladi 1997; Cumming & Finch 2001).
- `detectable`: the smallest true mean difference a two-sided paired t-test at level alpha
  detects with the given power for n pairs and a spread sd (the noncentral t power of a
  one-sample t-test, as in G*Power); `seeds_for` inverts it for n.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

CI_LEVEL = 0.95
POWER = 0.8
INTERVAL = "Student t"


def t_interval(values, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The t interval of the mean of `values`; None below two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def paired_t(a, b) -> float:
    """Two-sided p-value of the paired t-test of a against b (scipy.stats.ttest_rel)."""
    return float(stats.ttest_rel(a, b).pvalue)


def d_z(diffs) -> float | None:
    x = np.asarray(diffs, dtype=float)
    if len(x) < 2 or x.std(ddof=1) == 0:
        return None
    return float(x.mean() / x.std(ddof=1))


def _nct_cdf(t: float, df: int, ncp: float) -> float:
    return float(np.nan_to_num(stats.nct.cdf(t, df, ncp), nan=0.0 if ncp > t else 1.0))


def d_z_interval(diffs, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The exact interval of d_z: the noncentrality parameters that put the observed t at
    the (1 +- level)/2 quantiles of the noncentral t, divided by sqrt(n)."""
    d = d_z(diffs)
    if d is None:
        return None
    n = len(diffs)
    t_obs, df = d * math.sqrt(n), n - 1

    def ncp_for(p: float) -> float:  # the ncp whose cdf at t_obs is p (decreasing in ncp)
        lo, hi = t_obs - 10, t_obs + 10
        while _nct_cdf(t_obs, df, lo) < p:
            lo -= 10 + abs(lo)
        while _nct_cdf(t_obs, df, hi) > p:
            hi += 10 + abs(hi)
        return optimize.brentq(lambda c: _nct_cdf(t_obs, df, c) - p, lo, hi, xtol=1e-10)

    alpha = 1 - level
    return ncp_for(1 - alpha / 2) / math.sqrt(n), ncp_for(alpha / 2) / math.sqrt(n)


def power(effect: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test for a standardised true effect (delta / sd)."""
    df, ncp = n - 1, effect * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(np.nan_to_num(stats.nct.sf(crit, df, ncp))
                 + np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))


def detectable(sd: float, n: int, alpha: float, target: float = POWER) -> float | None:
    """The smallest |true mean difference| detected with power `target` (None below two
    pairs; 0 when the differences do not vary)."""
    if n < 2:
        return None
    if sd == 0:
        return 0.0
    effect = optimize.brentq(lambda e: power(e, n, alpha) - target, 1e-9, 1e4)
    return float(effect * sd)


def seeds_for(delta: float, sd: float, alpha: float, target: float = POWER,
              most: int = 10_000) -> int | None:
    """The fewest paired seeds that detect |delta| with power `target` (None: > most)."""
    if sd == 0:
        return 2
    effect = abs(delta) / sd
    for n in range(2, most + 1):
        if power(effect, n, alpha) >= target:
            return n
    return None


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
