"""The verdicts: better / worse / equivalent within δ / not decided, for one family of tables.

A family is the primary metric's tables of every comparison class of a study (its verdicts
are the study's answer, corrected for all of them at once), or one table of another metric
(labelled exploratory, corrected within itself). Each non-baseline row is one comparison: its
paired differences are analysed at the looks of the study's design (ganlab.compare.stats:
one look for a sweep of fixed seeds; several for `fanout.seeds=auto`), using the first n_k
paired seeds in seed order at look k, which are the seeds a staged sweep had at that stage.

- Better / worse: the comparison's repeated p-value (the smallest design level at which one
  of its looks crosses its boundary) goes through Holm's step-down over the family; a row
  rejected at level alpha / j is decided at the first look whose test passes that level.
  When every paired difference is the same, the look's test is the exact one for a bounded
  metric (ganlab.compare.stats.tie_pvalue), never a verdict without a test.
- Equivalent within δ: the look's repeated interval at level alpha / m (Bonferroni over the
  family's m comparisons, so that no error rate is lent from one kind of claim to the other)
  lies inside ±δ, δ being the metric's smallest effect of interest.
- Not decided ("no clear difference"): neither yet. The row says what its seeds could have
  detected and how many more would detect δ, both from the SD's upper confidence bound.

The interval a row reports is the repeated interval of the look that decided it (else its
latest) at the level it was held to: it contains 0 exactly when the row is not better/worse,
and it covers the true difference at least 95 % of the time whenever the study stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ganlab.compare.rows import MIN_PAIRS, Row, Table, change, change_ci, effect_words, fmt
from ganlab.compare.stats import (
    POWER,
    Design,
    bounded_interval,
    d_z,
    d_z_interval,
    detectable,
    holm,
    sd_upper,
    seeds_for,
    t_pvalue,
    tie_pvalue,
)
from ganlab.metrics import Effect, Metric, metric_info

DECIDED = ("better", "worse", "higher", "lower", "equivalent", "both exactly 0 on every seed")
OPEN = "no clear difference"


@dataclass
class _Look:
    k: int  # index in the design
    n: int  # paired seeds
    diffs: np.ndarray  # paired differences on the comparison's scale
    base_mean: float  # the baseline's mean over these seeds, in the metric's units
    p: float  # the look's own two-sided p-value
    tie: bool  # every difference is the same


@dataclass
class _Comparison:
    table: Table
    row: Row
    design: Design
    looks: list[_Look]
    bounds: tuple[float, float]  # of a paired difference on the comparison's scale
    p_seq: float | None = None
    level: float | None = None
    rejected_at: int | None = None  # index into looks
    equivalent_at: int | None = None


def _diff_bounds(t: Table) -> tuple[float, float]:
    lo, hi = t.bounds
    if t.metric.scale == "log" or not (math.isfinite(lo) and math.isfinite(hi)):
        return -math.inf, math.inf
    return lo - hi, hi - lo


def _comparison(t: Table, row: Row, base: Row) -> _Comparison:
    m = t.metric
    seeds = sorted(set(row.values) & set(base.values))
    row.pairs = len(seeds)
    design = t.design or Design.fixed(max(len(seeds), MIN_PAIRS))
    bounds = _diff_bounds(t)
    looks = []
    for k in design.looks_reached(len(seeds)):
        n = design.looks[k]
        if n < MIN_PAIRS:
            continue
        used = seeds[:n]
        diffs = np.array([m.to_scale(row.values[s]) - m.to_scale(base.values[s]) for s in used])
        tie = bool(np.ptp(diffs) == 0)
        p = tie_pvalue(float(diffs[0]), n, *bounds) if tie else t_pvalue(diffs)
        looks.append(_Look(k, n, diffs, float(np.mean([base.values[s] for s in used])), p, tie))
    return _Comparison(t, row, design, looks, bounds)


def _interval(c: _Comparison, look: _Look, level: float) -> tuple[float, float]:
    """The look's repeated interval at family-wise level `level`, on the comparison scale."""
    nominal = c.design.nominal(look.k, level)
    return bounded_interval(look.diffs, *c.bounds, level=1 - nominal)


def _effect_on_scale(effect: Effect | None, metric: Metric, base_mean: float) -> float | None:
    """δ in the units of a paired difference on the comparison's scale."""
    if effect is None:
        return None
    if metric.scale == "log":
        relative = effect.size / 100 if effect.relative else (
            effect.size / base_mean if base_mean > 0 else math.inf)
        return math.log1p(relative)
    return effect.size / 100 * abs(base_mean) if effect.relative else effect.size


def _rejects(c: _Comparison, level: float) -> int | None:
    """The first look whose test passes the design's boundary at `level`."""
    return next((i for i, look in enumerate(c.looks)
                 if look.p <= c.design.nominal(look.k, level)), None)


def _equivalent(c: _Comparison, level: float) -> int | None:
    """The first look whose repeated interval at `level` lies inside ±δ."""
    for i, look in enumerate(c.looks):
        delta = _effect_on_scale(c.table.effect, c.table.metric, look.base_mean)
        if delta is None or delta <= 0:
            return None
        lo, hi = _interval(c, look, level)
        if -delta < lo and hi < delta:
            return i
    return None


def _all_zero(t: Table, row: Row, base: Row) -> bool:
    """Both sides exactly 0 on every paired seed, for a metric that is a ratio at heart
    (batch coupling without batch norm): a zero there is structural, not a score at the
    bottom of a range (a mode count of 0 is just the lowest count, and ties as any other)."""
    if metric_info(t.metric.name).scale != "log":
        return False
    seeds = set(row.values) & set(base.values)
    return bool(seeds) and all(row.values[s] == 0 and base.values[s] == 0 for s in seeds)


def decide(tables: list[Table], details: bool = True) -> None:
    """Fill every row's comparison and verdict; `tables` are one family (`details`: also
    d_z's exact interval)."""
    comparisons: list[_Comparison] = []
    for t in tables:
        base = next(r for r in t.rows if r.is_baseline)
        base.verdict, base.decided = "baseline", True
        base.answer = (f"{base.label}: the baseline, {t.metric.label} "
                       f"{t.metric.format(base.mean)} (n = {base.n}{_at_bound(base)})")
        for row in t.rows:
            if row is base:
                continue
            c = _comparison(t, row, base)
            if _all_zero(t, row, base):
                row.verdict, row.decided = "both exactly 0 on every seed", True
            else:
                comparisons.append(c)
            if c.looks:
                c.p_seq = c.design.repeated_p([look.p for look in c.looks])
    # cells the sweep planned that have not ended a run yet are comparisons still to come
    m = len(comparisons) + (len(tables[0].pending) if tables else 0)
    for t in tables:
        t.tests = m
    alpha = tables[0].alpha if tables else 0.05
    # Holm's step-down, in the order of the repeated p-values; each step checked exactly
    adjusted = holm([c.p_seq for c in comparisons], m)
    rejected = 0
    for c in sorted((c for c in comparisons if c.p_seq is not None), key=lambda c: c.p_seq):
        found = _rejects(c, alpha / (m - rejected))
        if found is None:
            break
        c.level, c.rejected_at = alpha / (m - rejected), found
        rejected += 1
    for c, p_holm in zip(comparisons, adjusted, strict=True):
        c.row.p_seq, c.row.p_holm = c.p_seq, p_holm
        if c.level is None:
            c.level = alpha / (m - rejected)
        c.equivalent_at = _equivalent(c, alpha / m)
        _conclude(c, alpha / m, details)
    for t in tables:
        for row in t.rows:
            if not row.is_baseline:
                row.answer = answer(row, t)


def _conclude(c: _Comparison, equivalence_level: float, details: bool) -> None:
    row, t, m = c.row, c.table, c.table.metric
    row.level = c.level
    if not c.looks:
        first = c.design.looks[0] if t.design else MIN_PAIRS
        row.verdict = f"too thin ({row.pairs} paired seeds; the first analysis needs {first})"
        return
    at, level = len(c.looks) - 1, c.level
    if c.rejected_at is not None and (c.equivalent_at is None
                                      or c.rejected_at <= c.equivalent_at):
        at = c.rejected_at
        up = float(np.mean(c.looks[at].diffs)) > 0
        row.verdict = (("higher" if up else "lower") if m.direction == 0 else
                       "better" if up == (m.direction > 0) else "worse")
    elif c.equivalent_at is not None:
        at, level = c.equivalent_at, equivalence_level
        row.verdict = "equivalent"
    else:
        row.verdict = OPEN
    row.decided = row.verdict != OPEN
    look = c.looks[at]
    row.look, row.stage, row.p = look.n, look.k + 1, look.p
    ci = _interval(c, look, level)
    _effects(row, look, m, ci, details)
    delta = _effect_on_scale(t.effect, m, look.base_mean)
    row.effect = None if delta is None else m.from_scale(delta)
    if delta is not None:
        row.within_delta = -delta < ci[0] and ci[1] < delta
    nominal = c.design.nominal(look.k, level)
    if look.tie:  # what a constant difference must reach for the exact test to pass
        far = c.bounds[0] if float(look.diffs[0]) >= 0 else c.bounds[1]
        size = abs(far) * ((nominal / 2) ** (-1 / look.n) - 1) if math.isfinite(far) else None
    else:
        size = detectable(sd_upper(float(np.std(look.diffs, ddof=1)), look.n), look.n, nominal)
    row.detectable = None if size is None else m.from_scale(size) if m.scale == "log" else size
    if row.verdict == OPEN and delta:
        row.more_seeds = _more_seeds(c, look, delta)


def _more_seeds(c: _Comparison, look: _Look, delta: float) -> int | None:
    """Paired seeds beyond this look that would detect a change of δ with 80 % power, at the
    nominal level of the design's last look (None: more than 10,000)."""
    nominal = c.design.nominal(c.design.stages - 1, c.level)
    if look.tie:
        far = c.bounds[0] if float(look.diffs[0]) >= 0 else c.bounds[1]
        if not math.isfinite(far):
            return None  # no spread yet and no bound: nothing says how many seeds
        needed = math.ceil(math.log(nominal / 2) / math.log(abs(far) / (abs(far) + delta)))
    else:
        needed = seeds_for(delta, sd_upper(float(np.std(look.diffs, ddof=1)), look.n), nominal)
        if needed is None:
            return None
    return max(needed - look.n, 1)


def _effects(row: Row, look: _Look, metric: Metric, ci: tuple[float, float],
             details: bool) -> None:
    diffs = look.diffs
    mean = float(np.mean(diffs))
    row.diff_sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None
    if metric.scale == "log":  # a ratio, and its change in %
        row.delta = math.exp(mean)
        row.delta_ci = (math.exp(ci[0]), math.exp(ci[1]))
        row.delta_pct = 100 * (row.delta - 1)
        row.delta_pct_ci = (100 * (row.delta_ci[0] - 1), 100 * (row.delta_ci[1] - 1))
    else:
        row.delta, row.delta_ci = mean, ci
        if look.base_mean != 0:
            scale = abs(look.base_mean)
            row.delta_pct = 100 * mean / scale
            row.delta_pct_ci = (100 * ci[0] / scale, 100 * ci[1] / scale)
    row.d_z, row.d_z_ci = d_z(diffs), d_z_interval(diffs) if details else None


# -- words -------------------------------------------------------------------------------------
def _at_bound(row: Row) -> str:
    return f"; all {row.n} seeds at the {row.at_bound}" if row.at_bound else ""


def _detectable_words(row: Row, t: Table) -> str:
    """The smallest change these seeds detect, or that none within the range is."""
    lo, hi = t.bounds
    if row.detectable is not None and t.metric.scale != "log" and row.detectable >= hi - lo:
        return f"no change within the metric's whole range ({t.metric.format(hi - lo)})"
    return f"only a change of {effect_words(row.detectable, t.metric)} or more"


def delta_words(row: Row, t: Table) -> str:
    """δ as the reader knows it: `1 mode`-like units, `5 % (1.6)` for a relative one."""
    if row.effect is None or t.effect is None:
        return "—"
    if t.effect.relative and t.metric.scale != "log":
        return f"{t.effect} ({effect_words(row.effect, t.metric)})"
    return effect_words(row.effect, t.metric)


def _when(row: Row, t: Table) -> str:
    if t.design is None or t.design.stages == 1:
        return f"{row.look} paired seeds"
    return f"stage {row.stage} of {t.design.stages}, {row.look} paired seeds"


def answer(row: Row, t: Table) -> str:
    """The row in one sentence, in the metric's words."""
    m = t.metric
    if row.verdict.startswith("too thin"):
        return f"{row.label}: not judged: {row.verdict}"
    if row.verdict == "both exactly 0 on every seed":
        return f"{row.label}: {m.label} is exactly 0 on every seed, as is the baseline's"
    effect = f"{change(row, m)} {change_ci(row, m)}"
    if row.verdict in ("better", "worse", "higher", "lower"):
        small = (f"; smaller than δ = {delta_words(row, t)}, the smallest effect of interest"
                 if row.within_delta else "")
        return (f"{row.label}: {row.verdict}: {m.label} {effect} against the baseline "
                f"({_when(row, t)}; p = {row.p_holm:.2g} after Holm over {t.tests}, "
                f"d_z = {fmt(row.d_z)}){small}")
    if row.verdict == "equivalent":
        return (f"{row.label}: equivalent within δ = {delta_words(row, t)}: {m.label} "
                f"{effect} ({_when(row, t)})")
    more = ("" if row.more_seeds is None else
            f"; about {row.more_seeds} more paired seeds would detect δ = {delta_words(row, t)}")
    return (f"{row.label}: not decided: no clear difference in {m.label} ({effect}) after "
            f"{_when(row, t)}{_at_bound(row)}; these would detect {_detectable_words(row, t)} "
            f"with {POWER:.0%} power{more}")
