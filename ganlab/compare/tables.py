"""The comparer's tables: one per comparison class and metric, paired by seed.

Per variant: n, the mean with its 95 % interval (Student t, kept inside the metric's range;
exact when every seed scored the same), the median; the paired difference from the baseline
variant (Δ, Δ % of the baseline) and the standardised paired effect d_z with its exact
interval. The verdicts (better / worse / equivalent within δ / not decided, with the stage
that decided them) are ganlab.compare.verdicts', over the tables of one family: the primary
metric's tables of every class together, or one exploratory table. Metrics on a log scale
(ganlab.metrics) are compared as ratios: geometric means, Δ as a ratio, tests on log values;
a table with an exact zero is compared as differences. Diverged and failed runs are counted
in every row, never dropped.
"""

from __future__ import annotations

import difflib
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ganlab.compare.rows import (
    UNFINISHED,
    Row,
    Table,
    duplicate_lines,
    duplicate_records,
    fmt,
    unfinished_lines,
    unfinished_records,
)
from ganlab.compare.runs import ComparisonClass, class_label, group_runs, variant_settings
from ganlab.compare.stats import CI_LEVEL, Design, bounded_interval
from ganlab.compare.verdicts import decide
from ganlab.config import CONF_DIR, flatten, group_options
from ganlab.metrics import Effect, Metric, metric_info, metric_key
from ganlab.result import count_statuses

# --match: the budget runs are compared at, and the history field that measures it
HISTORY_KEY = {"g_steps": "g_updates", "images_seen": "images_seen", "wall_s": "wall_s"}
MATCHES = ("final", *HISTORY_KEY)


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
def build_tables(results: list[dict], metric: str, match: str = "final",
                 baselines: list[dict[str, str]] | None = None,
                 scales: dict[str, str] | None = None,
                 classes: list[ComparisonClass] | None = None,
                 design: Design | None = None, effects: dict[str, Effect] | None = None,
                 family: str = "primary", details: bool = True,
                 pending: list[str] | None = None) -> list[Table]:
    """One table per comparison class for `metric`, in the order of `classes` (by default
    `group_runs(results)`), with their verdicts decided as one family (Holm across all of
    them). `scales` overrides ganlab.metrics' scale per metric key (`{"eval/fid": "log"}`);
    `design` the sequential design the records carry (default: `study_design(results)`);
    `effects` override the smallest effects of interest the study and the registry give;
    `details=False` leaves out d_z's interval (the one slow number, which no verdict uses).
    `pending`: cells the sweep planned that have no record yet (default: `results.pending`
    for a primary family read by load_results). Each counts as one more comparison in Holm's
    family, so a look mid-sweep is held to the level of the family the sweep planned, not
    of the rows that happen to have ended runs (a pending baseline is over-counted:
    conservative)."""
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
    effect = {**study_effects(results), **(effects or {})}.get(metric, info.effect())
    design = design or study_design(results)
    tables = [_table(c, classes, info, match, baselines) for c in classes]
    if pending is None:
        pending = list(getattr(results, "pending", [])) if family == "primary" else []
    for t in tables:
        t.design, t.effect, t.family, t.pending = design, effect, family, list(pending)
    decide(tables, details)
    return tables


def study_design(results: list[dict]) -> Design | None:
    """The sequential design the records carry (`study.design`, written by a sweep with
    `fanout.seeds=auto`), or None for a sweep of fixed seeds. Records that disagree are an
    error: the design must be fixed before the first look."""
    found = {json.dumps(r["study"]["design"], sort_keys=True) for r in results
             if (r.get("study") or {}).get("design")}
    if not found:
        return None
    if len(found) > 1:
        raise CompareError("the runs carry different sequential designs (fanout.seeds_min/"
                           "step/max changed between launches); give the one the study "
                           "planned with --seeds-min/--seeds-step/--seeds-max")
    d = next(r["study"]["design"] for r in results if (r.get("study") or {}).get("design"))
    return Design.sequential(int(d["min"]), int(d["step"]), int(d["max"]))


def study_effects(results: list[dict]) -> dict[str, Effect]:
    """The smallest effects of interest a study preset declares (`study.smallest_effect`)."""
    out: dict[str, Effect] = {}
    for r in results:
        for name, text in ((r.get("study") or {}).get("smallest_effect") or {}).items():
            out.setdefault(metric_key(name), Effect.parse(text))
    return out


def _table(group: ComparisonClass, classes: list[ComparisonClass], metric: Metric, match: str,
           baselines: list[dict[str, str]] | None) -> Table:
    rows = [Row(v.label, v.settings, v.runs, v.detail, duplicates=v.duplicates)
            for v in group.variants]
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
    raw = [_scored(row, metric.name, match, budget) for row in rows]
    values = [v for scored in raw for v in scored.values()]
    note = ""
    if metric.scale == "log" and any(v <= 0 for v in values):
        # a ratio needs positive values: an exact zero (or KID's unbiased estimate <= 0)
        metric = replace(metric, scale="linear")
        note = ("compared as differences, not ratios: some values are exactly 0 (or below), "
                "which have no ratio")
    bounds = metric.bounds(group.comparability)
    for row, scored in zip(rows, raw, strict=True):
        _fill(row, scored, metric, bounds)
    _check_budget(rows, group, metric.name, match, budget)
    return Table(group.comparability, metric, match, budget,
                 chosen or {"(the defaults)": base.label}, rows, group.varying, group.study,
                 class_label=group.label, scale_note=note,
                 all_zero=bool(values) and all(v == 0 for v in values))


def _off_variant(rows: list[Row], group: ComparisonClass) -> Row:
    """The variant with the swept axis "off": the one whose varying settings agree most
    with the defaults a run of this data gets (no smoothing, k = 1, ratio 1, ...)."""
    defaults = next((r["defaults"] for r in group.runs if r.get("defaults")), None)
    if defaults is None:  # records older than `defaults`: today's conf/, composed
        from ganlab.configure import compose

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


def _scored(row: Row, metric: str, match: str, budget: float | None) -> dict[int, float]:
    """seed -> the metric's finite value, for the row's completed runs."""
    out = {}
    for r in row.runs:
        if r["status"] != "completed":
            continue
        v = value_at(r, metric, match, budget)
        if v is not None and np.isfinite(v):
            out[r["seed"]] = float(v)
    return out


def _fill(row: Row, scored: dict[int, float], metric: Metric,
          bounds: tuple[float, float]) -> None:
    counts = count_statuses(row.runs)
    row.diverged, row.failed = counts["diverged"], counts["failed"]
    row.unfinished = sum(counts[s] for s in UNFINISHED)
    row.values = dict(sorted(scored.items()))
    vals = list(row.values.values())
    row.n = len(vals)
    if not vals:
        return
    on_scale = [metric.to_scale(v) for v in vals]
    row.mean, row.median = metric.from_scale(float(np.mean(on_scale))), float(np.median(vals))
    lo, hi = bounds
    if metric.scale == "log":
        lo, hi = (math.log(lo) if lo > 0 else -math.inf), (math.log(hi) if hi < math.inf
                                                          else math.inf)
    ci = bounded_interval(on_scale, lo, hi, CI_LEVEL)
    row.ci = None if ci is None else (metric.from_scale(ci[0]), metric.from_scale(ci[1]))
    if len(vals) > 1 and min(vals) == max(vals):
        row.at_bound = {bounds[0]: "minimum", bounds[1]: "maximum"}.get(vals[0])


# -- views -----------------------------------------------------------------------------------
def aligned(lines: list[list[str]]) -> list[str]:
    """A text table: columns padded to width, a rule under the header row."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def format_brief(results: list[dict], metrics: list[str] | None = None) -> str:
    """A quick look: per class, mean ± std over seeds of every eval metric per variant (on a
    log-scale metric, the geometric mean ×/÷ its geometric SD: `brief_cell`)
    (completed runs only, one per seed), with each variant's runs by status: completed,
    diverged, failed, and, where a class has any, unfinished (running or interrupted) and
    duplicates (runs of a seed another run of the variant stands for), so that the counts
    add up to the runs. Warnings name the unfinished runs and the duplicated seeds. No
    pairing, no tests. `metrics`: only these (default: every eval metric)."""
    out = []
    for group in group_runs(results):
        names = sorted({m for r in group.runs for m in r["metrics"] if m.startswith("eval/")
                        and (metrics is None or m in metrics)})
        unfinished = [e for v in group.variants for e in unfinished_records(v.label, v.runs)]
        duplicates = [e for v in group.variants
                      for e in duplicate_records(v.label, v.duplicates)]
        parts = ["done", "div", "fail", *(["unfin"] if unfinished else []),
                 *(["dup"] if duplicates else [])]
        lines = [["variant", "runs", "/".join(parts), *(m.split("/", 1)[1] for m in names)]]
        for v in group.variants:
            counts = count_statuses(v.runs)
            numbers = [counts["completed"], counts["diverged"], counts["failed"],
                       *([sum(counts[s] for s in UNFINISHED)] if unfinished else []),
                       *([v.left_out] if duplicates else [])]
            cells = [v.label, str(len(v.runs) + v.left_out), "/".join(map(str, numbers))]
            for m in names:
                cells.append(brief_cell(m, [r["metrics"][m] for r in v.runs
                                            if r["status"] == "completed"
                                            and r["metrics"].get(m) is not None]))
            lines.append(cells)
        logs = [m.split("/", 1)[1] for m in names if metric_info(m).scale == "log"]
        out += [f"class [{group.label}]", *aligned(lines), *unfinished_lines(unfinished),
                *duplicate_lines(duplicates)]
        if logs:
            out.append(f"{', '.join(logs)}: log scale, geometric mean ×/÷ geometric SD "
                       "(as the report's tables; ± where a value is 0)")
        out.append("")
    return "\n".join(out)


def brief_cell(name: str, values: list[float]) -> str:
    """One metric's seeds in a brief: mean ± SD, or on a log-scale metric (ganlab.metrics)
    the geometric mean ×/÷ the geometric SD, the centre the report's tables use (an
    arithmetic mean of KIDs spanning a decade sits far above it). A zero among the values
    falls back to the linear form, as the tables do."""
    if not values:
        return "—"
    m = metric_info(name)
    if m.scale == "log" and min(values) > 0:
        x = [m.to_scale(v) for v in values]
        factor = m.from_scale(statistics.stdev(x)) if len(x) > 1 else 1.0
        return f"{m.from_scale(statistics.fmean(x)):.3g} ×/÷ {factor:.2g}"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {sd:.2g}"


def default_metric(results: list[dict]) -> str:
    """The preset's `study.metric`, else FID, else modes covered."""
    names = {k for r in results for k in r["metrics"]}
    preset = next((r["study"].get("metric") for r in results if (r.get("study") or {}).get(
        "metric")), None)
    for name in ([metric_key(preset)] if preset else []) + ["eval/fid", "eval/modes_covered"]:
        if name in names:
            return name
    raise CompareError("no run has eval/fid or eval/modes_covered; name one with --metric")
