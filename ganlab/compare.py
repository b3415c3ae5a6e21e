"""The comparer: like with like, paired by seed, with intervals.

    python -m ganlab.compare DIR... [--baseline KEY=VALUE ...] [--metric NAME]
                             [--match final|g_steps|images_seen|wall_s] [--out DIR]

Every result.json under the dirs is read. Runs are grouped into comparison classes by their
`comparability` dict (label use, data, resolution, model family, evaluation protocol) and a
class is never mixed with another. Within a class, a variant is a run's trick toggles and
hyper-parameters (everything but the seed); runs are paired with the baseline variant by
seed. Per variant: n, mean with a 95 % bootstrap CI (scipy, seeded), median; the paired
difference from the baseline with its bootstrap CI; a paired t-test (scipy.stats.ttest_rel)
with Holm's correction across the variants of a table, and the verdict in the metric's own
direction (lower FID is better). With fewer than 3 paired seeds the table says the evidence
is too thin instead of giving a p-value.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from ganlab.summary import aligned, load_results, variant_settings

# +1: higher is better; -1: lower is better
DIRECTIONS = {"fid": -1, "kid": -1, "is": 1, "precision": 1, "recall": 1,
              "modes_covered": 1, "hq_pct": 1, "reverse_kl": -1, "coupling": -1}
MATCHES = ("final", "g_steps", "images_seen", "wall_s")
HISTORY_KEY = {"g_steps": "step", "images_seen": "images_seen", "wall_s": "wall_s"}
MIN_PAIRS = 3  # fewer paired seeds than this: no p-value
CI_LEVEL = 0.95
# keys that name a run, not a variant
NOT_VARIANT = ("seed",)


class CompareError(ValueError):
    """A comparison that must not be made; the message says why."""


def _key(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def metric_key(name: str) -> str:
    return name if "/" in name else f"eval/{name}"


def direction(name: str) -> int:
    """+1 when higher is better: eval/fid -> -1, eval/fid_class/3 -> -1, eval/is_std -> +1."""
    parts = name.split("/")
    base = parts[1] if parts[0] == "eval" and len(parts) > 1 else parts[-1]
    return DIRECTIONS.get(base.removesuffix("_std").removesuffix("_class"), 1)


def parse_baseline(tokens: list[str]) -> dict[str, str]:
    spec = {}
    for token in ",".join(tokens).split(","):
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise CompareError(f"--baseline {token!r} is not KEY=VALUE")
        spec[key.strip()] = value.strip()
    return spec


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
    return all(k in settings and _same(settings[k], v) for k, v in spec.items())


# -- statistics ---------------------------------------------------------------------------
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


# -- budgets ------------------------------------------------------------------------------
def value_at(run: dict, metric: str, match: str, budget: float | None):
    """The metric of a run at the matched budget: its last evaluation within the budget."""
    if match == "final":
        return run["metrics"].get(metric)
    key = HISTORY_KEY[match]
    within = [h for h in run["history"] if h[key] <= budget + 1e-9 and metric in h["metrics"]]
    return within[-1]["metrics"][metric] if within else None


def common_budget(runs: list[dict], match: str) -> float | None:
    """The largest budget every run reached: the point where all can be compared."""
    if match == "final":
        return None
    key = HISTORY_KEY[match]
    # failed and diverged runs are counted, not waited for: they must not shrink the budget
    reached = [max((h[key] for h in r["history"]), default=0) for r in runs
               if r["status"] == "completed"]
    return min(reached) if reached else None


# -- tables -------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    settings: dict
    runs: list[dict]
    n: int = 0
    mean: float | None = None
    ci: tuple[float, float] | None = None
    median: float | None = None
    values: dict[int, float] = field(default_factory=dict)  # seed -> value
    diverged: int = 0
    failed: int = 0
    is_baseline: bool = False
    pairs: int = 0
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    p: float | None = None
    p_holm: float | None = None
    verdict: str = ""


@dataclass
class Table:
    comparability: dict
    metric: str
    match: str
    budget: float | None
    baseline: dict
    rows: list[Row]
    varying: list[str]
    study: dict


def _label(settings: dict, varying: list[str]) -> str:
    if settings.get("study.variant"):
        return str(settings["study.variant"])
    # the last part of each key, where that is unambiguous (real_target=0.9, d_steps=2)
    short = [k.split(".")[-1] for k in varying]
    names = short if len(set(short)) == len(short) else varying
    return ", ".join(f"{n}={settings.get(k)}" for n, k in zip(names, varying, strict=True)) \
        or "(one variant)"


def _class_label(comparability: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in comparability.items() if k != "eval")


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


def build_tables(results: list[dict], metric: str, match: str = "final",
                 baselines: list[dict[str, str]] | None = None) -> list[Table]:
    if match not in MATCHES:
        raise CompareError(f"--match {match!r} is not allowed; choose one of: "
                           f"{', '.join(MATCHES)}")
    metric = metric_key(metric)
    classes: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        classes[_key(r["comparability"])].append(r)
    explicit = baselines is not None
    tables = []
    for runs in classes.values():
        comp = runs[0]["comparability"]
        settings = [{k: v for k, v in variant_settings(r).items() if k not in NOT_VARIANT}
                    for r in runs]
        keys = sorted({k for s in settings for k in s})
        varying = [k for k in keys if len({_key({"v": s.get(k)}) for s in settings}) > 1]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(settings):
            groups[_key({k: s.get(k) for k in varying})].append(i)
        rows = [Row(_label(settings[idx[0]], varying), settings[idx[0]],
                    [runs[i] for i in idx]) for idx in groups.values()]
        rows.sort(key=lambda row: row.label)

        specs = baselines if explicit else [parse_baseline([b]) for b in
                                            runs[0].get("study", {}).get("baselines", [])]
        chosen = next((spec for spec in specs if any(matches(r.settings, spec) for r in rows)),
                      None)
        if chosen is None and explicit:
            _cross_class_error(comp, classes, specs)
        base_rows = [r for r in rows if chosen and matches(r.settings, chosen)]
        if len(base_rows) > 1:
            raise CompareError(f"baseline {chosen} matches {len(base_rows)} variants of class "
                               f"{_class_label(comp)}: "
                               f"{'; '.join(r.label for r in base_rows)}; add keys to it")
        base = base_rows[0] if base_rows else rows[0]  # default: the first variant
        base.is_baseline = True
        budget = common_budget(runs, match)
        for row in rows:
            _fill(row, metric, match, budget)
        _compare(rows, base, metric)
        tables.append(Table(comp, metric, match, budget,
                            chosen or {"(first variant)": base.label}, rows, varying,
                            runs[0].get("study", {})))
    tables.sort(key=lambda t: _class_label(t.comparability))
    return tables


def _cross_class_error(comp: dict, classes: dict, specs: list[dict]) -> None:
    for other in classes.values():
        o_comp = other[0]["comparability"]
        for spec in specs:
            if any(matches(variant_settings(r), spec) for r in other):
                differ = "; ".join(_diff_keys(o_comp, comp))
                raise CompareError(
                    f"baseline {','.join(f'{k}={v}' for k, v in spec.items())} belongs to "
                    f"another comparison class than runs of [{_class_label(comp)}]; they "
                    f"differ in {differ}. Runs are compared only within a class: give one "
                    "baseline per class (repeat --baseline).")
    wanted = " or ".join(",".join(f"{k}={v}" for k, v in s.items()) for s in specs)
    raise CompareError(f"no run matches the baseline {wanted} in class [{_class_label(comp)}]")


def _fill(row: Row, metric: str, match: str, budget: float | None) -> None:
    row.diverged = sum(r["status"] == "diverged" for r in row.runs)
    row.failed = sum(r["status"] == "failed" for r in row.runs)
    for r in row.runs:
        if r["status"] != "completed":
            continue
        v = value_at(r, metric, match, budget)
        if v is not None and np.isfinite(v):
            row.values[r["seed"]] = float(v)
    vals = list(row.values.values())
    row.n = len(vals)
    if vals:
        row.mean, row.median = float(np.mean(vals)), float(np.median(vals))
        row.ci = bootstrap_ci(vals)


def _compare(rows: list[Row], base: Row, metric: str) -> None:
    sign = direction(metric)
    pvals = []
    for row in rows:
        if row is base:
            pvals.append(None)
            continue
        seeds = sorted(set(row.values) & set(base.values))
        row.pairs = len(seeds)
        diffs = [row.values[s] - base.values[s] for s in seeds]
        if diffs:
            row.diff = float(np.mean(diffs))
            row.diff_ci = bootstrap_ci(diffs)
        if row.pairs >= MIN_PAIRS and np.ptp(diffs) > 0:
            row.p = float(stats.ttest_rel([row.values[s] for s in seeds],
                                          [base.values[s] for s in seeds]).pvalue)
        pvals.append(row.p)  # identical differences on every seed: no variance, no test
    for row, p in zip(rows, holm(pvals), strict=True):
        row.p_holm = p
        if row is base:
            row.verdict = "baseline"
        elif row.pairs < MIN_PAIRS:
            row.verdict = f"too thin ({row.pairs} paired seeds; need {MIN_PAIRS})"
        elif row.p is None:
            row.verdict = ("same on every seed" if not row.diff else
                           f"{'better' if sign * row.diff > 0 else 'worse'} by the same amount "
                           "on every seed (no variance: no test)")
        elif p is not None and p < 0.05:
            row.verdict = "better" if sign * row.diff > 0 else "worse"
        else:
            row.verdict = "no clear difference"


# -- text -----------------------------------------------------------------------------------
def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def table_lines(t: Table) -> list[list[str]]:
    head = ["variant", "n", "div", "fail", "mean", "95% CI", "median", "Δ vs baseline",
            "Δ 95% CI", "p (paired t)", "p Holm", "verdict"]
    lines = [head]
    for r in t.rows:
        lines.append([r.label + (" *" if r.is_baseline else ""), str(r.n), str(r.diverged),
                      str(r.failed), _fmt(r.mean),
                      "—" if r.ci is None else f"[{_fmt(r.ci[0])}, {_fmt(r.ci[1])}]",
                      _fmt(r.median), "" if r.is_baseline else _fmt(r.diff),
                      "" if r.is_baseline or r.diff_ci is None else
                      f"[{_fmt(r.diff_ci[0])}, {_fmt(r.diff_ci[1])}]",
                      "" if r.p is None else f"{r.p:.3g}",
                      "" if r.p_holm is None else f"{r.p_holm:.3g}", r.verdict])
    return lines


def describe(t: Table) -> str:
    where = "final scores" if t.match == "final" else f"matched at {t.match} = {_fmt(t.budget)}"
    better = "higher" if direction(t.metric) > 0 else "lower"
    return (f"class [{_class_label(t.comparability)}]: {t.metric} ({better} is better), "
            f"{where}; baseline {', '.join(f'{k}={v}' for k, v in t.baseline.items())} (*)")


def format_text(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out += [describe(t), *aligned(table_lines(t)), ""]
    return "\n".join(out)


def default_metric(results: list[dict]) -> str:
    names = {k for r in results for k in r["metrics"]}
    for name in ("eval/fid", "eval/modes_covered"):
        if name in names:
            return name
    raise CompareError("no run has eval/fid or eval/modes_covered; name one with --metric")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--baseline", nargs="+", action="append", metavar="KEY=VALUE",
                        help="the baseline variant (repeat the flag for one per class)")
    parser.add_argument("--metric", default=None,
                        help="e.g. fid, is, kid, modes_covered, hq_pct (default: fid, else "
                             "modes_covered); several report tables use all eval metrics")
    parser.add_argument("--match", default="final", choices=MATCHES)
    parser.add_argument("--out", type=Path, default=None,
                        help="where report.md/report.html go (default: the first DIR)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    args = parser.parse_args(argv)
    try:
        missing = [str(d) for d in args.dirs if not d.is_dir()]
        if missing:
            raise CompareError(f"no such directory: {', '.join(missing)}")
        results = load_results(args.dirs)
        if not results:
            raise CompareError(f"no result.json under {', '.join(map(str, args.dirs))}")
        baselines = ([parse_baseline(b) for b in args.baseline] if args.baseline else None)
        metric = metric_key(args.metric) if args.metric else default_metric(results)
        tables = build_tables(results, metric, args.match, baselines)
    except CompareError as e:
        print(f"ganlab.compare: {e}", file=sys.stderr)
        return 2
    print(format_text(tables))
    from ganlab.report import write_report

    out = args.out or args.dirs[0]
    paths = write_report(results, tables, out, baselines, args.match,
                         log_wandb=not args.no_wandb)
    print(f"report: {paths['html']}  (and {paths['md']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
