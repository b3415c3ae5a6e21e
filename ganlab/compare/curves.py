"""Learning curves across seeds, and whether a variant has trained past its knee.

A curve is the metric at each evaluation step that every scored run of a row reached, with
the mean over seeds and its t interval (on a log-scale metric: the geometric mean, the
interval taken on the logs). Only points scored on the same number of samples as the run's
final scores are used: FID and KID are biased by the sample count, so a curve that mixed
counts would bend where the count changes (set eval.num_samples = eval.final_num_samples).

The knee rule: a variant is past its knee when the last quarter of its rounds improved the
metric by less than KNEE_PCT %: per seed, a least-squares line through its evaluations from
the one nearest 3/4 of the rounds to the last (single evaluations wander by several % from
one to the next), and the line's change over that stretch relative to its start; the mean
over seeds decides, its t interval beside it.
"""

from __future__ import annotations

import math

import numpy as np

from ganlab.compare.rows import Table
from ganlab.compare.stats import t_interval
from ganlab.metrics import Metric

KNEE_PCT = 5.0  # past the knee: the last quarter of rounds improved the metric by less


def _scored_history(run: dict, metric: str) -> tuple[dict[int, float], int | None]:
    """(step -> value of the run's evaluations scored on its final sample count, that
    count)."""
    points = [h for h in run.get("history") or [] if h["metrics"].get(metric) is not None]
    if not points:
        return {}, None
    final_n = points[-1].get("num_samples")
    return {h["step"]: float(h["metrics"][metric]) for h in points
            if h.get("num_samples") == final_n and math.isfinite(h["metrics"][metric])}, final_n


def _centre(values: list[float], m: Metric) -> tuple[float, list[float] | None]:
    """The mean on the metric's scale (geometric on a log scale) and its t interval."""
    x = [m.to_scale(v) for v in values]
    ci = t_interval(x)
    return (m.from_scale(float(np.mean(x))),
            None if ci is None else [m.from_scale(ci[0]), m.from_scale(ci[1])])


def row_curve(runs: list[dict], m: Metric) -> dict | None:
    """{"points": [{"step", "n", "mean", "ci"}], "num_samples", "last_quarter"} of one row's
    completed runs, or None when they share fewer than two scored evaluations."""
    scored = [_scored_history(r, m.name) for r in runs if r["status"] == "completed"]
    scored = [(s, n) for s, n in scored if s and (m.scale != "log" or min(s.values()) > 0)]
    if not scored:
        return None
    series = [s for s, _ in scored]
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if len(steps) < 2:
        return None
    points = []
    for step in steps:
        mean, ci = _centre([s[step] for s in series], m)
        points.append({"step": step, "n": len(series), "mean": mean, "ci": ci})
    last = steps[-1]
    # the latest evaluation at or before 3/4 of the rounds; none when that would reach back
    # over more than half of them (too few points to read a last quarter from)
    start = max((s for s in steps if s <= 0.75 * last), default=None)
    quarter = None
    if start is not None and last / 2 <= start < last:
        window = [step for step in steps if step >= start]
        gains = [g for s in series
                 if (g := _gain([s[step] for step in window], window, m.direction)) is not None]
        if gains:
            ci = t_interval(gains)
            mean = float(np.mean(gains))
            quarter = {"from": start, "to": last, "n": len(gains), "improvement_pct": mean,
                       "ci": None if ci is None else [float(ci[0]), float(ci[1])],
                       "past_knee": mean < KNEE_PCT}
    return {"points": points, "num_samples": scored[0][1], "last_quarter": quarter}


def _gain(values: list[float], steps: list[int], direction: int) -> float | None:
    """% improvement (in the metric's better direction) of the least-squares line through
    (steps, values) from its first step to its last, relative to its value at the first."""
    slope, intercept = np.polyfit(np.asarray(steps, float), np.asarray(values, float), 1)
    begin, end = intercept + slope * steps[0], intercept + slope * steps[-1]
    if begin == 0:
        return None
    return float(100.0 * (1 if direction > 0 else -1) * (end - begin) / abs(begin))


def table_curves(t: Table) -> list[dict]:
    """One entry per row with a curve: {"variant", **row_curve}."""
    out = []
    for r in t.rows:
        curve = row_curve(r.runs, t.metric)
        if curve is not None:
            out.append({"variant": r.label, **curve})
    return out


def knee_line(entry: dict, label: str, fmt) -> str | None:
    """One sentence on a row's last quarter of rounds, or None without one."""
    q = entry["last_quarter"]
    if q is None:
        return None
    ci = "" if q["ci"] is None else f" [{q['ci'][0]:+.1f}, {q['ci'][1]:+.1f}]"
    if not q["past_knee"]:
        where = f"still improving (≥ {KNEE_PCT:g} %): a longer run would change it"
    elif q["ci"] is not None and q["ci"][1] < 0:
        where = "getting worse with training"
    else:
        where = f"past the knee (< {KNEE_PCT:g} %)"
    ends = {p["step"]: p["mean"] for p in entry["points"]}
    return (f"{entry['variant']}: rounds {q['from']:,} → {q['to']:,} improved {label} by "
            f"{q['improvement_pct']:+.1f} %{ci} ({fmt(ends[q['from']])} → "
            f"{fmt(ends[q['to']])}, {q['n']} seeds): {where}")
