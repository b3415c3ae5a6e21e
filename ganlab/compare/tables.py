"""The comparer's tables: one per comparison class and metric, paired by seed.

Per variant: n, mean with its 95 % Student-t interval, median; the paired difference from
the baseline variant (Δ, Δ % of the baseline) with its t interval, the standardised paired
effect d_z with its exact interval; a paired t-test with Holm's correction across the
variants of a table, the verdict in the metric's own direction (lower FID is better), and,
where no difference is found, the smallest one these seeds would have detected with 80 %
power at Holm's strictest level. Metrics on a log scale (ganlab.metrics) are compared as
ratios: geometric means, Δ as a ratio, tests on log values. With fewer than 3 paired seeds
a row says the evidence is too thin instead of giving a p-value. Diverged and failed runs
are counted in every row, never dropped.
"""

from __future__ import annotations

import difflib
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ganlab.compare.runs import ComparisonClass, class_label, group_runs, variant_settings
from ganlab.compare.stats import (
    CI_LEVEL,
    INTERVAL,
    POWER,
    d_z,
    d_z_interval,
    detectable,
    holm,
    paired_t,
    t_interval,
)
from ganlab.config import CONF_DIR, flatten
from ganlab.configure import compose, group_options
from ganlab.metrics import Metric, metric_info, metric_key
from ganlab.result import count_statuses

ALPHA = 0.05  # family-wise, per table (Holm)
# --match: the budget runs are compared at, and the history field that measures it
HISTORY_KEY = {"g_steps": "g_updates", "images_seen": "images_seen", "wall_s": "wall_s"}
MATCHES = ("final", *HISTORY_KEY)
MIN_PAIRS = 3  # fewer paired seeds than this: no p-value


class CompareError(ValueError):
    """A comparison that must not be made; the message says why."""


def parse_baseline(tokens: list[str]) -> dict[str, str]:
    spec = {}
    for token in ",".join(tokens).split(","):
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise CompareError(f"--baseline {token!r} is not KEY=VALUE")
        spec[key.strip()] = value.strip()
    return spec


def resolve_baseline(spec: dict[str, str], settings_keys: set[str]) -> dict[str, str]:
    """A baseline in the train command's words: `key=value` over the settings of
    result.json, or `group=option` (e.g. `smoothing=none`: the values that option sets).
    An unknown key is an error listing the keys that exist."""
    out = {}
    for key, value in spec.items():
        option = Path(CONF_DIR) / key / f"{value}.yaml"
        if key in settings_keys or f"{key}.name" in settings_keys and not option.exists():
            out[key] = value
        elif option.exists():
            values = flatten(OmegaConf.to_container(OmegaConf.load(option)), f"{key}.")
            sets = {k: str(v) for k, v in values.items() if k in settings_keys}
            if not sets:
                raise CompareError(f"--baseline {key}={value}: that option sets nothing the "
                                   "runs record")
            out.update(sets)
        elif (Path(CONF_DIR) / key).is_dir():
            options = group_options(key)
            raise CompareError(f"--baseline {key}={value!r}: not an option of {key}; choose "
                               f"one of: {', '.join(options)}")
        else:
            close = difflib.get_close_matches(key, sorted(settings_keys), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CompareError(f"--baseline {key}=...: no run records {key}{hint}; keys: "
                               f"{', '.join(sorted(settings_keys))}, or a config group "
                               "with one of its options (e.g. smoothing=none)")
    return out


def _same(value, wanted: str) -> bool:
    if isinstance(value, bool) or value is None:
        return str(value).lower() == wanted.lower()
    if isinstance(value, (int, float)):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
        except ValueError:
            return False
    return str(value) == wanted


def matches(settings: dict, spec: dict[str, str]) -> bool:
    """Whether a variant's settings satisfy a baseline spec; a group's name stands for its
    `.name` key (`labels=none` is `labels.name=none`)."""
    def value(k: str):
        return settings[k] if k in settings else settings.get(f"{k}.name", _ABSENT)

    return all(value(k) is not _ABSENT and _same(value(k), v) for k, v in spec.items())


_ABSENT = object()


# -- budgets ------------------------------------------------------------------------------
def _history(run: dict, key: str) -> list[dict]:
    """A run's history, checked for what a matched budget reads."""
    if run.get("history_eval") not in (None, run["comparability"].get("eval")):
        raise CompareError(f"{run.get('run_dir', 'a run')} was re-scored under another "
                           "evaluation protocol than its history: compare it with --match "
                           "final")
    if any(key not in h for h in run["history"]):
        raise CompareError(f"{run.get('run_dir', 'a run')}: its history has no {key} (an older "
                           "record?); compare it with --match final")
    return run["history"]


def value_at(run: dict, metric: str, match: str, budget: float | None):
    """The metric of a run at the matched budget: its last evaluation within the budget."""
    if match == "final":
        return run["metrics"].get(metric)
    key = HISTORY_KEY[match]
    within = [h for h in _history(run, key) if h[key] <= budget + 1e-9
              and metric in h["metrics"]]
    return within[-1]["metrics"][metric] if within else None


def common_budget(runs: list[dict], match: str) -> float | None:
    """The largest budget every run reached: the point where all can be compared."""
    if match == "final":
        return None
    key = HISTORY_KEY[match]
    # failed and diverged runs are counted, not waited for: they must not shrink the budget
    reached = [max((h[key] for h in _history(r, key)), default=0) for r in runs
               if r["status"] == "completed"]
    return min(reached) if reached else None


# -- tables -------------------------------------------------------------------------------
@dataclass
class Row:
    label: str  # the preset option's name where one was used, else the varying settings
    settings: dict
    runs: list[dict]
    detail: str = ""  # the varying settings, when the label is an option's name
    n: int = 0
    values: dict[int, float] = field(default_factory=dict)  # seed -> value
    mean: float | None = None  # geometric on a log scale
    ci: tuple[float, float] | None = None
    median: float | None = None
    diverged: int = 0
    failed: int = 0
    floored: int = 0  # values at or below the log scale's floor
    is_baseline: bool = False
    pairs: int = 0
    delta: float | None = None  # mean paired difference; on a log scale the ratio
    delta_ci: tuple[float, float] | None = None
    delta_pct: float | None = None  # delta as % of the baseline mean (ratio - 1 on a log scale)
    delta_pct_ci: tuple[float, float] | None = None
    diff_sd: float | None = None  # sd of the paired differences (on the metric's scale)
    d_z: float | None = None
    d_z_ci: tuple[float, float] | None = None
    p: float | None = None
    p_holm: float | None = None
    detectable: float | None = None  # smallest |delta| these seeds detect (a ratio on log)
    verdict: str = ""
    answer: str = ""  # the row in one sentence


@dataclass
class Table:
    comparability: dict
    metric: Metric
    match: str
    budget: float | None
    baseline: dict
    rows: list[Row]
    varying: list[str]
    study: dict
    tests: int = 0  # paired tests in the table (Holm's m)
    class_label: str = ""  # the comparison class's label (ganlab.compare.runs)
    alpha: float = ALPHA
    level: float = CI_LEVEL
    interval: str = INTERVAL

    @property
    def runs(self) -> list[dict]:
        return [r for row in self.rows for r in row.runs]

    @property
    def strictest_alpha(self) -> float:
        """Holm's first step: the level the smallest p-value is held to."""
        return self.alpha / max(self.tests, 1)


def build_tables(results: list[dict], metric: str, match: str = "final",
                 baselines: list[dict[str, str]] | None = None,
                 scales: dict[str, str] | None = None,
                 classes: list[ComparisonClass] | None = None) -> list[Table]:
    """One table per comparison class for `metric`, in the order of `classes` (by default
    `group_runs(results)`); `scales` overrides ganlab.metrics' scale per metric key
    (`{"eval/fid": "log"}`)."""
    if match not in MATCHES:
        raise CompareError(f"--match {match!r} is not allowed; choose one of: "
                           f"{', '.join(MATCHES)}")
    classes = group_runs(results) if classes is None else classes
    if baselines is not None:
        keys = {k for r in results for k in variant_settings(r)}
        baselines = [resolve_baseline(b, keys) for b in baselines]
    metric = metric_key(metric)
    for c in classes:
        names = sorted({m for r in c.runs for m in r["metrics"]} |
                       {m for r in c.runs for h in r["history"] for m in h["metrics"]})
        if metric not in names and any(r["status"] == "completed" for r in c.runs):
            close = difflib.get_close_matches(metric, names, n=1)
            raise CompareError(
                f"--metric {metric}: no run of class [{c.label}] has it"
                f"{f' (did you mean {close[0]}?)' if close else ''}; its metrics: "
                f"{', '.join(n for n in names if n.startswith('eval/')) or '(none)'}")
    info = metric_info(metric, (scales or {}).get(metric))
    return [_table(c, classes, info, match, baselines) for c in classes]


def _table(group: ComparisonClass, classes: list[ComparisonClass], metric: Metric, match: str,
           baselines: list[dict[str, str]] | None) -> Table:
    rows = [Row(v.label, v.settings, v.runs, v.detail) for v in group.variants]
    explicit = baselines is not None
    keys = {k for r in group.runs for k in variant_settings(r)}
    specs = baselines if explicit else [resolve_baseline(parse_baseline([b]), keys)
                                        for b in group.study.get("baselines", [])]
    chosen = next((spec for spec in specs if any(matches(r.settings, spec) for r in rows)),
                  None)
    if chosen is None and explicit:
        _cross_class_error(group, classes, specs)
    base_rows = [r for r in rows if chosen and matches(r.settings, chosen)]
    if len(base_rows) > 1:
        raise CompareError(f"baseline {chosen} matches {len(base_rows)} variants of class "
                           f"{group.label}: "
                           f"{'; '.join(r.label for r in base_rows)}; add keys to it")
    base = base_rows[0] if base_rows else _off_variant(rows, group)
    base.is_baseline = True
    rows.sort(key=lambda r: not r.is_baseline)  # the baseline first, then the variants
    budget = common_budget(group.runs, match)
    for row in rows:
        _fill(row, metric, match, budget)
    _check_budget(rows, group, metric.name, match, budget)
    table = Table(group.comparability, metric, match, budget,
                  chosen or {"(the defaults)": base.label}, rows, group.varying, group.study,
                  class_label=group.label)
    _compare(table, base)
    return table


def _off_variant(rows: list[Row], group: ComparisonClass) -> Row:
    """The variant with the swept axis "off": the one whose varying settings agree most
    with the defaults a run of this data gets (no smoothing, k = 1, ratio 1, ...)."""
    data = group.comparability.get("data.name")
    defaults = flatten(compose([f"data={data}"] if data else []))
    def agreement(row: Row) -> int:
        return sum(_same(row.settings.get(k), str(defaults[k])) for k in group.varying
                   if k in defaults)

    return max(rows, key=agreement)  # ties: the first by label


def _check_budget(rows: list[Row], group: ComparisonClass, metric: str, match: str,
                  budget: float | None) -> None:
    """A matched budget that leaves a variant without a point is an error that says which
    comparisons would work."""
    empty = [r for r in rows if r.n == 0 and any(x["status"] == "completed" for x in r.runs)]
    if match == "final" or not empty:
        return
    works = [m for m in HISTORY_KEY if m != match and _feasible(group.runs, metric, m)]
    firsts = [min((h[HISTORY_KEY[match]] for h in x["history"] if metric in h["metrics"]),
                  default=math.inf) for r in empty for x in r.runs]
    raise CompareError(
        f"--match {match}: at the largest budget every run reached ({fmt(budget)}), "
        f"{', '.join(r.label for r in empty)} has no evaluation of {metric} (its first is at "
        f"{fmt(min(firsts))}). Try --match final"
        + (f" or --match {' or '.join(works)}" if works else "")
        + ", or evaluate more often (eval.every)")


def _feasible(runs: list[dict], metric: str, match: str) -> bool:
    done = [r for r in runs if r["status"] == "completed"]
    budget = common_budget(done, match)
    return budget is not None and all(value_at(r, metric, match, budget) is not None
                                      for r in done)


def _diff_keys(a: dict, b: dict) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = a.get(k), b.get(k)
            if isinstance(va, dict) and isinstance(vb, dict):
                out += [f"{k}.{d}" for d in _diff_keys(va, vb)]
            else:
                out.append(f"{k}: {va} vs {vb}")
    return out


def _cross_class_error(group: ComparisonClass, classes: list[ComparisonClass],
                       specs: list[dict]) -> None:
    comp = group.comparability
    for other in classes:
        for spec in specs:
            if any(matches(variant_settings(r), spec) for r in other.runs):
                differ = "; ".join(_diff_keys(other.comparability, comp))
                raise CompareError(
                    f"baseline {','.join(f'{k}={v}' for k, v in spec.items())} belongs to "
                    f"another comparison class than runs of [{class_label(comp)}]; they "
                    f"differ in {differ}. Runs are compared only within a class: give one "
                    "baseline per class (repeat --baseline).")
    wanted = " or ".join(",".join(f"{k}={v}" for k, v in s.items()) for s in specs)
    raise CompareError(f"no run matches the baseline {wanted} in class [{class_label(comp)}]")


def _fill(row: Row, metric: Metric, match: str, budget: float | None) -> None:
    counts = count_statuses(row.runs)
    row.diverged, row.failed = counts["diverged"], counts["failed"]
    for r in row.runs:
        if r["status"] != "completed":
            continue
        v = value_at(r, metric.name, match, budget)
        if v is not None and np.isfinite(v):
            row.values[r["seed"]] = float(v)
    vals = list(row.values.values())
    row.n = len(vals)
    if not vals:
        return
    on_scale = [metric.to_scale(v) for v in vals]
    row.floored = sum(metric.scale == "log" and v <= metric.floor for v in vals)
    row.mean, row.median = metric.from_scale(float(np.mean(on_scale))), float(np.median(vals))
    ci = t_interval(on_scale, CI_LEVEL)
    row.ci = None if ci is None else (metric.from_scale(ci[0]), metric.from_scale(ci[1]))


def _compare(t: Table, base: Row) -> None:
    metric = t.metric
    pvals, diffs_of = [], {}
    for row in t.rows:
        if row is base:
            pvals.append(None)
            continue
        seeds = sorted(set(row.values) & set(base.values))
        row.pairs = len(seeds)
        diffs = [metric.to_scale(row.values[s]) - metric.to_scale(base.values[s]) for s in seeds]
        diffs_of[id(row)] = diffs
        if diffs:
            _effects(row, base, diffs, metric)
        if row.pairs >= MIN_PAIRS and np.ptp(diffs) > 0:
            row.p = paired_t([metric.to_scale(row.values[s]) for s in seeds],
                             [metric.to_scale(base.values[s]) for s in seeds])
        pvals.append(row.p)  # identical differences on every seed: no variance, no test
    t.tests = sum(p is not None for p in pvals)
    for row, p in zip(t.rows, holm(pvals), strict=True):
        row.p_holm = p
        diffs = diffs_of.get(id(row), [])
        if len(diffs) >= 2:
            row.diff_sd = float(np.std(diffs, ddof=1))
        if row.pairs >= MIN_PAIRS:
            found = detectable(row.diff_sd, row.pairs, t.strictest_alpha, POWER)
            row.detectable = None if found is None else (
                metric.from_scale(found) if metric.scale == "log" else found)
        row.verdict = _verdict(row, base, p, metric, t.alpha)
        row.answer = answer(row, t)


def _effects(row: Row, base: Row, diffs: list[float], metric: Metric) -> None:
    mean = float(np.mean(diffs))
    ci = t_interval(diffs, CI_LEVEL)
    if metric.scale == "log":  # a ratio, and its change in %
        row.delta = math.exp(mean)
        row.delta_ci = None if ci is None else (math.exp(ci[0]), math.exp(ci[1]))
        row.delta_pct = 100 * (row.delta - 1)
        row.delta_pct_ci = None if ci is None else tuple(100 * (math.exp(c) - 1) for c in ci)
    else:
        row.delta, row.delta_ci = mean, ci
        paired_base = [base.values[s] for s in sorted(set(row.values) & set(base.values))]
        scale = abs(float(np.mean(paired_base)))
        if scale > 0:
            row.delta_pct = 100 * mean / scale
            row.delta_pct_ci = None if ci is None else tuple(100 * c / scale for c in ci)
    row.d_z, row.d_z_ci = d_z(diffs), d_z_interval(diffs, CI_LEVEL)


def _verdict(row: Row, base: Row, p: float | None, metric: Metric, alpha: float) -> str:
    if row is base:
        return "baseline"
    if row.pairs < MIN_PAIRS:
        return f"too thin ({row.pairs} paired seeds; need {MIN_PAIRS})"
    up = row.delta > (1.0 if metric.scale == "log" else 0.0)
    unchanged = row.delta == (1.0 if metric.scale == "log" else 0.0)
    if row.p is None:
        if unchanged:
            return "same on every seed"
        if metric.direction == 0:
            return f"{'higher' if up else 'lower'} by the same amount on every seed (no test)"
        return (f"{'better' if up == (metric.direction > 0) else 'worse'} by the same amount "
                "on every seed (no variance: no test)")
    if p is not None and p < alpha:
        if metric.direction == 0:
            return "higher" if up else "lower"
        return "better" if up == (metric.direction > 0) else "worse"
    return "no clear difference"


# -- words -----------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def change(row: Row, metric: Metric) -> str:
    """Δ in words: `+1.3 (+4.2 %)` on a linear scale, `×0.001` on a log one."""
    if row.delta is None:
        return "—"
    if metric.scale == "log":
        return f"×{row.delta:.3g}"
    pct = "" if row.delta_pct is None else f" ({row.delta_pct:+.3g} %)"
    return f"{row.delta:+{metric.fmt}}{pct}"


def change_ci(row: Row, metric: Metric) -> str:
    if row.delta_ci is None:
        return "—"
    lo, hi = row.delta_ci
    return (f"[×{lo:.3g}, ×{hi:.3g}]" if metric.scale == "log" else
            f"[{lo:+{metric.fmt}}, {hi:+{metric.fmt}}]")


def detectable_words(row: Row, metric: Metric) -> str:
    if row.detectable is None:
        return "—"
    if metric.scale == "log":
        return f"×{row.detectable:.3g}"
    return f"{row.detectable:{metric.fmt}}"


def answer(row: Row, t: Table) -> str:
    """The row in one sentence, in the metric's words."""
    m = t.metric
    if row.is_baseline:
        return (f"{row.label}: the baseline, {m.label} {m.format(row.mean)} "
                f"(n = {row.n})")
    if row.verdict.startswith("too thin"):
        return f"{row.label}: not judged: {row.verdict}"
    effect = f"{change(row, m)} {change_ci(row, m)}"
    if row.verdict in ("better", "worse", "higher", "lower"):
        return (f"{row.label}: {row.verdict}: {m.label} {effect} against the baseline "
                f"(p = {row.p_holm:.2g} after Holm, d_z = {fmt(row.d_z)})")
    if row.verdict == "no clear difference":
        seeds = f"these {row.pairs} paired seeds"
        return (f"{row.label}: no clear difference in {m.label} ({effect}); {seeds} would "
                f"detect only a change of {detectable_words(row, m)} or more with "
                f"{POWER:.0%} power")
    return f"{row.label}: {row.verdict} ({m.label} {effect})"


def aligned(lines: list[list[str]]) -> list[str]:
    """A text table: columns padded to width, a rule under the header row."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def format_brief(results: list[dict]) -> str:
    """A quick look: per class, mean ± std over seeds of every eval metric per variant
    (completed runs only), with each variant's status counts. No pairing, no tests."""
    out = []
    for group in group_runs(results):
        names = sorted({m for r in group.runs for m in r["metrics"] if m.startswith("eval/")})
        lines = [["variant", "runs", "done/div/fail", *(m.split("/", 1)[1] for m in names)]]
        for v in group.variants:
            counts = count_statuses(v.runs)
            cells = [v.label, str(len(v.runs)),
                     f"{counts['completed']}/{counts['diverged']}/{counts['failed']}"]
            for m in names:
                values = [r["metrics"][m] for r in v.runs if r["status"] == "completed"
                          and r["metrics"].get(m) is not None]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):.3g} ± {sd:.2g}" if values else "—")
            lines.append(cells)
        out += [f"class [{group.label}]", *aligned(lines), ""]
    return "\n".join(out)


def default_metric(results: list[dict]) -> str:
    """The preset's `study.metric`, else FID, else modes covered."""
    names = {k for r in results for k in r["metrics"]}
    preset = next((r["study"].get("metric") for r in results if (r.get("study") or {}).get(
        "metric")), None)
    for name in ([metric_key(preset)] if preset else []) + ["eval/fid", "eval/modes_covered"]:
        if name in names:
            return name
    raise CompareError("no run has eval/fid or eval/modes_covered; name one with --metric")
