"""The comparer's rows and tables, and how their numbers read in words: the record every view
(console, report.json, markdown, HTML, W&B) and the verdicts (ganlab.compare.verdicts) share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ganlab.compare.stats import CI_LEVEL, INTERVAL, Design
from ganlab.metrics import Effect, Metric

ALPHA = 0.05  # family-wise: the primary metric across every class, else per table (Holm)
MIN_PAIRS = 3  # fewer paired seeds than this: no p-value
FAMILIES = ("primary", "exploratory")
UNFINISHED = ("running", "interrupted")  # counted in every view, scored in none


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
    at_bound: str | None = None  # "maximum" / "minimum": every seed scored that bound
    diverged: int = 0
    failed: int = 0
    unfinished: int = 0  # runs still running or interrupted: counted, not scored
    duplicates: list = field(default_factory=list)  # runs.Duplicate: seeds of several runs
    is_baseline: bool = False
    pairs: int = 0
    # the comparison with the baseline, at the look that decided it (else the latest look)
    look: int | None = None  # paired seeds at that look
    stage: int | None = None  # 1-based index of that look in the design
    delta: float | None = None  # mean paired difference; on a log scale the ratio
    delta_ci: tuple[float, float] | None = None  # the repeated interval at the row's level
    delta_pct: float | None = None  # delta as % of the baseline mean (ratio - 1 on a log scale)
    delta_pct_ci: tuple[float, float] | None = None
    diff_sd: float | None = None  # sd of the paired differences (on the metric's scale)
    d_z: float | None = None
    d_z_ci: tuple[float, float] | None = None
    p: float | None = None  # the look's own two-sided p-value
    p_seq: float | None = None  # repeated p-value: the design level its boundary is crossed at
    p_holm: float | None = None
    level: float | None = None  # the family-wise level the row was held to (Holm)
    effect: float | None = None  # δ, the smallest effect of interest, in Δ's units
    within_delta: bool | None = None  # the interval lies inside ±δ
    decided: bool = False
    detectable: float | None = None  # smallest |delta| these seeds detect (a ratio on log)
    more_seeds: int | None = None  # paired seeds beyond these that would detect δ
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
    tests: int = 0  # comparisons in the row's family (Holm's m), `pending` included
    pending: list[str] = field(default_factory=list)  # planned cells with no record yet
    class_label: str = ""  # the comparison class's label (ganlab.compare.runs)
    alpha: float = ALPHA
    level: float = CI_LEVEL
    interval: str = INTERVAL
    family: str = "primary"  # "primary" (one family over every class) or "exploratory"
    design: Design | None = None  # None: each comparison is one look at its paired seeds
    effect: Effect | None = None  # the smallest effect of interest
    scale_note: str = ""  # why the table is not on the metric's own scale
    all_zero: bool = False  # every value of every row is exactly 0

    @property
    def runs(self) -> list[dict]:
        return [r for row in self.rows for r in row.runs]

    @property
    def bounds(self) -> tuple[float, float]:
        return self.metric.bounds(self.comparability)

    @property
    def strictest_alpha(self) -> float:
        """Holm's first step: the level the smallest p-value is held to."""
        return self.alpha / max(self.tests, 1)


# -- words -------------------------------------------------------------------------------------
def pending_words(pending: list[str]) -> str:
    """What a look mid-sweep says about the cells that have not ended a run yet."""
    return (f"{len(pending)} cell(s) the sweep planned have no record yet: "
            f"{'; '.join(pending)}. Each is counted as a comparison in the primary metric's "
            "Holm family, so the verdicts here are held to the level of the family the sweep "
            "planned; look again once their runs have ended")


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def change(row: Row, metric: Metric) -> str:
    """Δ in words: `+1.3 (+4.2 %)` on a linear scale, `×0.001` on a log one."""
    if row.delta is None:
        return "—"
    if metric.scale == "log":
        return f"×{row.delta:.3g}"
    pct = "" if row.delta_pct is None else f" ({percent(row.delta_pct)} %)"
    return f"{row.delta:+{metric.fmt}}{pct}"


def percent(value: float) -> str:
    """A signed percentage to 3 significant digits, whole numbers from 1,000 on (+1,737,
    not +1.74e+03)."""
    return f"{value:+,.0f}" if abs(value) >= 1000 else f"{value:+.3g}"


def change_ci(row: Row, metric: Metric) -> str:
    if row.delta_ci is None:
        return "—"
    lo, hi = row.delta_ci
    if metric.scale == "log":
        return f"[×{_end(lo, '.3g', '0')}, ×{_end(hi, '.3g', '∞')}]"
    return f"[{_end(lo, '+' + metric.fmt, '−∞')}, {_end(hi, '+' + metric.fmt, '+∞')}]"


def _end(value: float, spec: str, infinite: str) -> str:
    """An interval's end; one that nothing bounds is written as infinite."""
    return format(value, spec) if math.isfinite(value) else infinite


def detectable_words(row: Row, metric: Metric) -> str:
    return effect_words(row.detectable, metric)


def effect_words(size: float | None, metric: Metric) -> str:
    """A size of change in Δ's units: `1.2` on a linear scale, `×1.25` on a log one."""
    if size is None:
        return "—"
    if metric.scale == "log":
        return f"×{size:.3g}"
    return f"{size:{metric.fmt}}"


def unfinished_records(label: str, runs: list[dict]) -> list[dict]:
    """A variant's runs that have not ended (running, or interrupted to be resumed), as
    report.json lists them."""
    return [{"variant": label, "seed": r["seed"], "status": r["status"],
             "run_dir": r.get("run_dir")} for r in runs if r["status"] in UNFINISHED]


def duplicate_records(label: str, duplicates: list) -> list[dict]:
    """A variant's seeds that several runs trained (runs.Duplicate), as report.json lists
    them: every run dir, the one used first."""
    return [{"variant": label, "seed": d.seed, "run_dirs": d.run_dirs,
             "used": d.used.get("run_dir")} for d in duplicates]


def unfinished_lines(records: list[dict]) -> list[str]:
    """One warning per variant naming its unfinished runs (records: unfinished_records)."""
    by_variant: dict[str, list[dict]] = {}
    for e in records:
        by_variant.setdefault(e["variant"], []).append(e)
    return [f"warning: {variant}: {len(runs)} unfinished run{'s' * (len(runs) > 1)} "
            "(running or interrupted), counted but in no statistic: "
            + "; ".join(f"seed {e['seed']} {e['status']} ({e['run_dir'] or 'no run dir'})"
                        for e in runs)
            for variant, runs in by_variant.items()]


def duplicate_lines(records: list[dict]) -> list[str]:
    """One warning per duplicated seed (records: duplicate_records)."""
    out = []
    for e in records:
        dirs = [d or "no run dir" for d in e["run_dirs"]]
        others = len(dirs) - 1
        out.append(f"warning: {e['variant']}: seed {e['seed']} was trained by {len(dirs)} runs "
                   f"with the same settings ({'; '.join(dirs)}); they are not independent "
                   f"samples, so only the first by run dir is used ({dirs[0]}) and the "
                   f"other{'s are' if others > 1 else ' is'} in no statistic")
    return out
