"""The comparer's statistics, in one module every view uses: intervals that cover what they
claim at the seed counts people use, a sequential design that stays valid when seeds are added
only where a verdict is open, effect sizes, power, and Holm's correction. scipy supplies the
distributions.

Intervals and tests
- `t_interval`: Student's t interval of a mean. Exact for normal data at any n (the
  bootstrap's percentile interval covers about 2/3 at n = 3; simulated in the tests).
- `bounded_interval`: the t interval kept inside the metric's feasible range; when every value
  is the same (all seeds at 8/8 modes, or the same paired difference on every seed) the t
  interval has zero width, so the interval becomes the exact one that holds for *any*
  distribution on the range: if a share q of the mass lay elsewhere, n equal draws had
  probability (1 - q)^n, so q <= 1 - (a/2)^(1/n) at level 1 - a, and the mean lies within
  q times the distance to either bound.
- `d_z`: the standardised paired effect with its exact interval (noncentral t; Steiger &
  Fouladi 1997).

The sequential design (group-sequential, alpha spending)
- A `Design` fixes in advance the looks: the numbers of paired seeds at which the data are
  analysed (`seeds_min`, then every `seeds_step`, up to `seeds_max`). A fixed sweep is a design
  with one look. At each look the paired t statistic is compared with a boundary c_k; the
  boundaries spend the error rate alpha across the looks (Lan & DeMets 1983) with the power
  family alpha(t) = alpha t^1.5, t = n_k / n_max (Kim & DeMets 1987): the chance that a
  comparison without an effect crosses any boundary, however many looks it gets, is alpha.
  The exponent 1.5 spends little at the first looks, whose t statistics have 2-4 degrees of
  freedom and catch only huge effects anyway: against Pocock-type spending, at 3-15 seeds it
  raised the power at the maximum from 0.75 to 0.82 for a 1-sd effect at the same expected
  seeds (simulated; README). The boundaries are those of the paired t statistic itself, not the z-statistic's
  converted look by look (that shortcut gave 5.5-6 % instead of 5 % at 3-25 seeds in our
  simulations): under "no effect" the sequence of t statistics has one distribution whatever
  the noise's scale, so the boundaries are computed once per design from 200,000 simulated
  null sequences with a fixed seed (deterministic; the first look's boundary is the exact t
  quantile).
- `Design.nominal(k, alpha)`: the two-sided nominal level of look k (the look's own p-value
  must be at most this). A repeated confidence interval (Jennison & Turnbull 1989) at look k
  is the look's t interval at that nominal level: it covers the true difference at every look
  at once with probability 1 - alpha, so it covers at whichever look a study stopped.
- `Design.repeated_p(pvalues)`: the smallest alpha at which some look of a comparison crosses
  its boundary. Holm's step-down on these values is the sequential Holm procedure (Maurer &
  Bretz 2013): a comparison decided at level alpha / j stays decided as alpha is passed on.

Power
- `detectable`: the smallest true mean difference a two-sided paired t-test at level alpha
  detects with the given power for n pairs and a spread sd (noncentral t, as in G*Power).
  `sd_upper` is the SD's one-sided upper confidence bound (chi-square): detectable effects and
  seed counts are stated from it, so they are not the optimistic guesses a small sample's SD
  gives (at n = 3 the sample SD is below the truth more often than not).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CI_LEVEL = 0.95
POWER = 0.8
SD_BOUND_LEVEL = 0.8  # detectable effects and seed counts use the SD's 80 % upper bound
INTERVAL = "Student t"
SPENDING = "alpha spending t^1.5 (Kim-DeMets power family)"
NULL_SEQUENCES = 200_000  # simulated null sequences behind a design's boundaries
_NULL_SEED = 20161231  # fixed: the boundaries are the same on every machine and every call


def t_interval(values, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The t interval of the mean of `values`; None below two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def tie_share(n: int, level: float) -> float:
    """The largest share of the mass that can lie away from a value all n draws took,
    at confidence `level` (two-sided): 1 - ((1 - level) / 2)^(1/n)."""
    return 1.0 - ((1.0 - level) / 2.0) ** (1.0 / n)


def bounded_interval(values, lower: float = -math.inf, upper: float = math.inf,
                     level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The interval of the mean inside [lower, upper]: the t interval clipped to the range, or,
    when every value is the same, the exact interval of a bounded mean (module docstring),
    which reaches to infinity on a side the range leaves open. None below two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    if np.ptp(x) == 0:
        c, q = float(x[0]), tie_share(len(x), level)
        return c - (c - lower) * q, c + (upper - c) * q
    lo, hi = t_interval(x, level)
    return max(lo, lower), min(hi, upper)


def tie_pvalue(value: float, n: int, lower: float, upper: float) -> float:
    """The two-sided p-value of "mean 0" when all n paired differences equal `value`, for
    differences bounded by [lower, upper]: the level at which bounded_interval first excludes
    0 (1 where the range is open on the other side of 0: nothing bounds the mean there)."""
    far = lower if value > 0 else upper  # the bound on the other side of 0
    if value == 0 or not math.isfinite(far):
        return 1.0
    return min(1.0, 2.0 * (abs(far) / (abs(value) + abs(far))) ** n)


def t_pvalue(diffs) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (scipy.stats.ttest_1samp's,
    without its per-call overhead: the comparer computes it for every look of every row)."""
    x = np.asarray(diffs, dtype=float)
    n, sd = len(x), float(x.std(ddof=1))
    if sd == 0:
        return 1.0 if x.mean() == 0 else 0.0
    return float(2 * stats.t.sf(abs(x.mean()) / (sd / math.sqrt(n)), n - 1))


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


def sd_upper(sd: float, n: int, level: float = SD_BOUND_LEVEL) -> float:
    """The one-sided upper confidence bound of a normal SD from a sample SD of n values."""
    return float(sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - level, n - 1)))


def detectable(sd: float, n: int, alpha: float, target: float = POWER) -> float | None:
    """The smallest |true mean difference| detected with power `target` (None below two
    pairs; 0 when the differences do not vary)."""
    if n < 2:
        return None
    if sd == 0:
        return 0.0
    return _standard_detectable(n, _round(alpha), target) * sd


@functools.lru_cache(maxsize=8192)
def _standard_detectable(n: int, alpha: float, target: float) -> float:
    """The smallest standardised effect (delta / sd) detected with power `target`."""
    hi = 1.0
    while power(hi, n, alpha) < target and hi < 1e4:  # a bracket the noncentral t can take
        hi *= 2
    return float(optimize.brentq(lambda e: power(e, n, alpha) - target, 1e-9, hi))


def seeds_for(delta: float, sd: float, alpha: float, target: float = POWER,
              most: int = 10_000) -> int | None:
    """The fewest paired seeds that detect |delta| with power `target` (None: > most)."""
    if sd == 0:
        return 2
    effect = abs(delta) / sd
    if effect == 0:
        return None
    alpha = _round(alpha)

    def enough(n: int) -> bool:
        return _standard_detectable(n, alpha, target) <= effect

    lo, hi = 2, 2
    while not enough(hi):  # doubling, then bisection: O(log n) cached look-ups
        if hi >= most:
            return None
        lo, hi = hi, min(2 * hi, most)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not enough(mid) else (lo, mid)
    return lo


def holm(pvalues: list[float | None], m: int | None = None) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries are skipped) for a family of `m`
    hypotheses (default: the p-values given; more when some are not tested yet)."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed) if m is None else m
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


# -- the sequential design ---------------------------------------------------------------------
RHO = 1.5  # the power family's exponent


def spent(fraction: float) -> float:
    """The share of alpha spent by information fraction t: t^1.5 (Kim & DeMets 1987)."""
    return min(max(fraction, 0.0), 1.0) ** RHO


@dataclass(frozen=True)
class Design:
    """The looks of a study: paired seeds at each analysis, fixed before the first one."""

    looks: tuple[int, ...]

    def __post_init__(self):
        if not self.looks or self.looks[0] < 2 or list(self.looks) != sorted(set(self.looks)):
            raise ValueError(f"a design's looks must rise from 2 seeds up: {self.looks}")

    @classmethod
    def sequential(cls, seeds_min: int, seeds_step: int, seeds_max: int) -> Design:
        looks = list(range(seeds_min, seeds_max + 1, seeds_step))
        if looks[-1] != seeds_max:
            looks.append(seeds_max)
        return cls(tuple(looks))

    @classmethod
    def fixed(cls, n: int) -> Design:
        return cls((max(n, 2),))

    @property
    def stages(self) -> int:
        return len(self.looks)

    @property
    def seeds_max(self) -> int:
        return self.looks[-1]

    def describe(self) -> str:
        if self.stages == 1:
            return f"fixed design: one analysis at {self.looks[0]} seeds"
        return (f"sequential design: analyses at {', '.join(map(str, self.looks))} paired "
                f"seeds ({SPENDING})")

    def looks_reached(self, n: int) -> list[int]:
        """The looks a comparison with n paired seeds has had (an index per look)."""
        return [k for k, look in enumerate(self.looks) if look <= n]

    def next_look(self, n: int) -> int | None:
        """The paired seeds of the next look after n, None at the last."""
        return next((look for look in self.looks if look > n), None)

    def nominal(self, k: int, alpha: float) -> float:
        """The two-sided nominal level of look k (0-based) in a design at level alpha."""
        return float(_nominal_levels(self.looks, _round(alpha))[k])

    def repeated_p(self, pvalues: list[float]) -> float:
        """The smallest design level at which one of the looks' nominal p-values (in look
        order) crosses its boundary."""
        if self.stages == 1:
            return float(min(1.0, pvalues[0]))
        alphas, table = _level_table(self.looks)
        best = 1.0
        for k, p in enumerate(pvalues):
            if p <= 0:
                return 0.0
            nominal = table[:, k]  # increasing with alpha
            if p <= nominal[-1]:
                logs = np.interp(math.log(p), np.log(nominal), np.log(alphas))
                best = min(best, float(math.exp(logs)))
        return best


def _round(alpha: float) -> float:
    return float(f"{alpha:.12g}")  # cache key: the same level however it was computed


@functools.lru_cache(maxsize=16)
def _null_abs_t(looks: tuple[int, ...]) -> np.ndarray:
    """|t| of the paired t statistic at each look of `NULL_SEQUENCES` simulated normal
    sequences without an effect (float32, one row per sequence)."""
    rng = np.random.default_rng(_NULL_SEED)
    out = np.empty((NULL_SEQUENCES, len(looks)), np.float32)
    n_max, idx = looks[-1], np.asarray(looks) - 1
    counts = np.arange(1, n_max + 1)
    for start in range(0, NULL_SEQUENCES, 25_000):
        x = rng.standard_normal((min(25_000, NULL_SEQUENCES - start), n_max))
        sums, squares = np.cumsum(x, 1)[:, idx], np.cumsum(x * x, 1)[:, idx]
        n = counts[idx]
        mean = sums / n
        var = (squares - n * mean * mean) / (n - 1)
        out[start:start + len(x)] = np.abs(mean / np.sqrt(var / n))
    return out


@functools.lru_cache(maxsize=256)
def _boundaries(looks: tuple[int, ...], alpha: float) -> np.ndarray:
    """c_k: the |t| boundaries that spend `alpha` over the looks."""
    cs = [float(stats.t.isf(alpha * spent(looks[0] / looks[-1]) / 2, looks[0] - 1))]
    if len(looks) == 1:
        return np.array(cs)
    null = _null_abs_t(looks)
    alive = null[:, 0] < cs[0]
    for k in range(1, len(looks)):
        increment = alpha * (spent(looks[k] / looks[-1]) - spent(looks[k - 1] / looks[-1]))
        crossings = int(round(increment * len(null)))
        column = null[alive, k]
        if crossings <= 0:
            c = math.inf
        elif crossings >= len(column):
            c = 0.0
        else:  # the |t| that exactly `crossings` of the sequences still running exceed
            c = float(np.partition(column, len(column) - crossings)[len(column) - crossings])
        cs.append(c)
        alive &= null[:, k] < c
    return np.array(cs)


@functools.lru_cache(maxsize=256)
def _nominal_levels(looks: tuple[int, ...], alpha: float) -> np.ndarray:
    if len(looks) == 1:
        return np.array([alpha])
    cs = _boundaries(looks, alpha)
    return np.array([2 * stats.t.sf(c, n - 1) for c, n in zip(cs, looks, strict=True)])


@functools.lru_cache(maxsize=16)
def _level_table(looks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Nominal levels of every look at a grid of design levels (for repeated p-values)."""
    alphas = np.geomspace(1e-6, 1.0, 49)
    table = np.array([_nominal_levels(looks, _round(a)) for a in alphas])
    return alphas, np.maximum.accumulate(np.maximum(table, 1e-300), axis=0)
