"""`report.json`: every number of every table of a comparison, the one source the console,
markdown, HTML and W&B views are rendered from.

The document (schema version 5; README "report.json" lists every key):

    {"schema_version", "generated", "dirs", "study": {"name", "question"},
     "settings": {"match", "alpha", "ci_level", "power", "interval", "min_pairs",
                  "primary_metric", "scales", "design", "spending", "smallest_effects",
                  "sd_bound_level"},
     "decided", "unreadable": [message, ...], "pending": [cell dir, ...],
     "classes": [{"label", "comparability", "status_counts", "seeds", "thin", "budget",
                  "unfinished_runs": [{"variant", "seed", "status", "run_dir"}, ...],
                  "duplicate_seeds": [{"variant", "seed", "run_dirs", "used"}, ...],
                  "tables": [table, ...]}]}      # the primary metric's table first

    table: {"metric", "label", "better", "scale", "scale_note", "range", "all_zero", "match",
            "budget", "baseline", "family", "tests", "pending", "alpha", "strictest_alpha",
            "design", "smallest_effect", "interval", "ci_level", "rows": [row, ...],
            "curves": [{"variant", "points": [{"step", "n", "mean", "ci"}, ...],
                        "num_samples", "last_quarter"}, ...]}   # ganlab.compare.curves
    row:   {"variant", "detail", "is_baseline", "settings", "n", "diverged", "failed",
            "unfinished", "values", "mean", "ci", "median", "at_bound", "pairs", "look",
            "stage", "delta", "delta_ci", "delta_pct", "delta_pct_ci", "diff_sd", "d_z",
            "d_z_ci", "p", "p_seq", "p_holm", "level", "effect", "within_delta", "decided",
            "verdict", "detectable", "more_seeds", "answer"}

On a log scale `mean` is the geometric mean, `delta` the ratio to the baseline (and
`delta_pct` its change in %), `detectable` and `effect` factors. `status_counts` and the rows
count one run per seed of a variant: a seed that several runs trained is one sample, the
first of `run_dirs` (by path, `used`); the others are in `duplicate_seeds` only. Unfinished
runs (running, interrupted) are counted and named, never scored.
"""

from __future__ import annotations

import math
import time
from collections import Counter

from ganlab.compare.curves import table_curves
from ganlab.compare.rows import (
    ALPHA,
    MIN_PAIRS,
    Table,
    change,
    change_ci,
    detectable_words,
    duplicate_lines,
    duplicate_records,
    fmt,
    pending_words,
    unfinished_lines,
    unfinished_records,
)
from ganlab.compare.stats import CI_LEVEL, INTERVAL, POWER, SD_BOUND_LEVEL, SPENDING
from ganlab.compare.tables import aligned
from ganlab.metrics import metric_info
from ganlab.result import STATUSES, count_statuses, launch_values

# 3: classes name their unfinished runs and duplicated seeds; 4: `wandb`; 5: tables' `curves`;
# 6: `pending` (cells the sweep planned with no record yet, counted in the family)
SCHEMA_VERSION = 6
TOP_KEYS = ("schema_version", "generated", "dirs", "study", "settings", "decided",
            "unreadable", "pending", "wandb", "classes")
SETTINGS_KEYS = ("match", "alpha", "ci_level", "power", "interval", "min_pairs",
                 "primary_metric", "scales", "design", "spending", "smallest_effects",
                 "sd_bound_level")
CLASS_KEYS = ("label", "comparability", "status_counts", "seeds", "thin", "budget",
              "unfinished_runs", "duplicate_seeds", "tables")
TABLE_KEYS = ("metric", "label", "better", "scale", "scale_note", "range", "all_zero", "match",
              "budget", "baseline", "family", "tests", "pending", "alpha", "strictest_alpha",
              "design", "smallest_effect", "interval", "ci_level", "rows", "curves")
ROW_KEYS = ("variant", "detail", "is_baseline", "settings", "n", "diverged", "failed",
            "unfinished", "values", "mean", "ci", "median", "at_bound", "pairs", "look",
            "stage", "delta", "delta_ci", "delta_pct", "delta_pct_ci", "diff_sd", "d_z",
            "d_z_ci", "p", "p_seq", "p_holm", "level", "effect", "within_delta", "decided",
            "verdict", "detectable", "more_seeds", "answer")
BUDGET_KEYS = ("step", "images_seen", "g_updates", "d_updates", "wall_s")
THIN_SEEDS = 5  # fewer seeds per variant than this: the report says the evidence is thin


def _pair(v) -> list[float | None] | None:
    """An interval as JSON: an end at infinity (a side nothing bounds) is null."""
    return None if v is None else [_finite(float(v[0])), _finite(float(v[1]))]


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def table_record(t: Table) -> dict:
    m = t.metric
    return {
        "metric": m.name, "label": m.label, "better": m.better, "scale": m.scale,
        "scale_note": t.scale_note, "range": [_finite(b) for b in t.bounds],
        "all_zero": t.all_zero, "match": t.match, "budget": t.budget,
        "baseline": t.baseline, "family": t.family, "tests": t.tests,
        "pending": len(t.pending), "alpha": t.alpha,
        "strictest_alpha": t.strictest_alpha,
        "design": None if t.design is None else list(t.design.looks),
        "smallest_effect": None if t.effect is None else str(t.effect),
        "interval": t.interval, "ci_level": t.level,
        "rows": [{
            "variant": r.label, "detail": r.detail, "is_baseline": r.is_baseline,
            "settings": r.settings, "n": r.n, "diverged": r.diverged, "failed": r.failed,
            "unfinished": r.unfinished,
            "values": {str(k): v for k, v in sorted(r.values.items())}, "mean": r.mean,
            "ci": _pair(r.ci), "median": r.median, "at_bound": r.at_bound, "pairs": r.pairs,
            "look": r.look, "stage": r.stage, "delta": r.delta,
            "delta_ci": _pair(r.delta_ci), "delta_pct": r.delta_pct,
            "delta_pct_ci": _pair(r.delta_pct_ci), "diff_sd": r.diff_sd, "d_z": r.d_z,
            "d_z_ci": _pair(r.d_z_ci), "p": r.p, "p_seq": r.p_seq, "p_holm": r.p_holm,
            "level": r.level, "effect": r.effect, "within_delta": r.within_delta,
            "decided": r.decided, "verdict": r.verdict, "detectable": r.detectable,
            "more_seeds": r.more_seeds, "answer": r.answer} for r in t.rows],
        "curves": table_curves(t)}


WIDTH_KEYS = ("model.g_width", "model.d_width")


def class_budget(runs: list[dict]) -> dict:
    """What one run of the class trained for: [min, max] over its completed runs of the
    rounds, real images shown to D, G and D updates, training seconds, CPU threads and the
    networks' widths."""
    done = [r for r in runs if r["status"] == "completed"]
    # the final round from the record itself; the rest from its last evaluation
    last = [{**(r["history"][-1] if r["history"] else {}), "step": r["step"]} for r in done]
    out = {}
    for k in BUDGET_KEYS:
        values = [h[k] for h in last if h.get(k) is not None]
        out[k] = [min(values), max(values)] if values else None
    # the CPU threads each run trained with: wall time means little without them
    threads = [t for r in done if isinstance(t := (r.get("host") or {}).get("threads"), int)]
    out["threads"] = [min(threads), max(threads)] if threads else None
    # the networks' widths: a model family (`model.name`) comes in several sizes
    for key in WIDTH_KEYS:
        widths = [w for r in done if isinstance(w := (r.get("trick") or {}).get(key), int)]
        out[key] = [min(widths), max(widths)] if widths else None
    out["machines"] = machines(done)
    return out


UNNAMED = "not recorded"


def machines(runs: list[dict]) -> dict[str, int] | None:
    """How many runs trained on each processor (the GPU's name on a GPU, else the CPU model;
    "A then B" for a run resumed on another): the same seed on another CPU model gives other
    bits, so a reader should know when a table mixes them. None where no record names one
    (records written before they did)."""
    counts = Counter(" then ".join(launch_values(r, "gpu", "cpu")) or UNNAMED for r in runs)
    return None if set(counts) <= {UNNAMED} else dict(counts.most_common())


def wandb_target(results) -> dict | None:
    """Where the compared runs logged to W&B (the most common among their records): the
    comparison run goes to the same project, entity and mode, grouped with their sweep."""
    seen = Counter((w.get("project"), w.get("entity"), w.get("mode"), w.get("sweep"))
                   for r in results if isinstance(w := r.get("wandb"), dict))
    if not seen:
        return None
    (project, entity, mode, sweep), _ = seen.most_common(1)[0]
    return {"project": project, "entity": entity, "mode": mode, "group": sweep}


# the comparison as W&B's numeric table: one row per variant, metric and class
WANDB_COLUMNS = ("class", "metric", "variant", "baseline", "n", "mean", "ci_low", "ci_high",
                 "delta", "delta_ci_low", "delta_ci_high", "delta_pct", "effect_size_dz",
                 "p_holm", "verdict", "decided", "detectable_delta", "more_seeds")


def wandb_rows(doc: dict) -> list[list]:
    """The rows of WANDB_COLUMNS: numbers as numbers (None where there is none), so W&B can
    sort and chart them."""
    def num(x):
        return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None

    rows = []
    for c in doc["classes"]:
        for t in c["tables"]:
            for r in t["rows"]:
                ci, dci = r.get("ci") or (None, None), r.get("delta_ci") or (None, None)
                rows.append([c["label"], t["metric"], r["variant"], bool(r["is_baseline"]),
                             int(r["n"]), num(r.get("mean")), num(ci[0]), num(ci[1]),
                             num(r.get("delta")), num(dci[0]), num(dci[1]),
                             num(r.get("delta_pct")), num(r.get("d_z")), num(r.get("p_holm")),
                             r.get("verdict") or "", bool(r.get("decided")),
                             num(r.get("detectable")), r.get("more_seeds")])
    return rows


def build_document(results, classes: list[list[Table]], *, dirs, match: str,
                   primary: str, scales: dict[str, str]) -> dict:
    """`classes`: per comparison class, its tables with the primary metric's first."""
    study = next((r.get("study") or {} for r in results if r.get("study")), {})
    main_tables = [tables[0] for tables in classes]
    pending = main_tables[0].pending if main_tables else []
    design = next((t.design for t in main_tables if t.design is not None), None)
    doc = {"schema_version": SCHEMA_VERSION,
           "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
           "dirs": [str(d) for d in dirs],
           "study": {"name": study.get("name", ""), "question": study.get("question", "")},
           "settings": {"match": match, "alpha": ALPHA, "ci_level": CI_LEVEL, "power": POWER,
                        "interval": INTERVAL, "min_pairs": MIN_PAIRS,
                        "primary_metric": primary, "scales": dict(scales),
                        "design": None if design is None else list(design.looks),
                        "spending": SPENDING if design is not None else None,
                        "smallest_effects": {t.metric.name: str(t.effect) for tables in classes
                                             for t in tables if t.effect is not None},
                        "sd_bound_level": SD_BOUND_LEVEL},
           # a planned cell with no record yet is a verdict still to come
           "decided": all(r.decided for t in main_tables for r in t.rows) and not pending,
           "unreadable": list(getattr(results, "unreadable", [])),
           "pending": pending,
           "wandb": wandb_target(results),
           "classes": []}
    for tables in classes:
        main = tables[0]
        counts = count_statuses(main.runs)
        # a run still going (or interrupted, to resume) is no evidence yet
        seeds = min((len(r.runs) - r.unfinished for r in main.rows), default=0)
        doc["classes"].append({
            "label": main.class_label, "comparability": main.comparability,
            "status_counts": {s: counts[s] for s in STATUSES if counts[s]},
            "seeds": seeds, "thin": seeds < THIN_SEEDS, "budget": class_budget(main.runs),
            "unfinished_runs": [e for r in main.rows
                                for e in unfinished_records(r.label, r.runs)],
            "duplicate_seeds": [e for r in main.rows
                                for e in duplicate_records(r.label, r.duplicates)],
            "tables": [table_record(t) for t in tables]})
    validate_document(doc)
    return doc


def validate_document(doc: dict) -> None:
    """Raise ValueError unless `doc` has exactly the documented keys at every level."""
    def same(what: str, record: dict, keys: tuple[str, ...]) -> None:
        if tuple(record) != keys:
            missing, extra = set(keys) - set(record), set(record) - set(keys)
            raise ValueError(f"report.json {what}: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")

    same("top level", doc, TOP_KEYS)
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"report.json schema_version {doc['schema_version']!r}")
    same("settings", doc["settings"], SETTINGS_KEYS)
    for c in doc["classes"]:
        same("class", c, CLASS_KEYS)
        for t in c["tables"]:
            same("table", t, TABLE_KEYS)
            for row in t["rows"]:
                same("row", row, ROW_KEYS)


# -- views -------------------------------------------------------------------------------------
HEAD = ["variant", "n", "div", "fail", "mean", "95% CI", "Δ vs baseline", "Δ CI", "d_z",
        "p Holm", "verdict", "stage", "detectable Δ"]


def table_lines(table: dict) -> list[list[str]]:
    """A table record's cells (a header row first), for every text view; `unfin` (runs
    still running or interrupted) after `fail` where a row has any."""
    m = metric_info(table["metric"], table["scale"])
    unfin = any(r["unfinished"] for r in table["rows"])
    lines = [[*HEAD[:4], "unfin", *HEAD[4:]] if unfin else HEAD]
    for r in table["rows"]:
        row = _RowView(r)
        base = r["is_baseline"]
        mean = m.format(r["mean"]) + {"maximum": " (all at max)",
                                      "minimum": " (all at min)"}.get(r["at_bound"], "")
        lines.append([
            r["variant"] + (" *" if base else ""), str(r["n"]), str(r["diverged"]),
            str(r["failed"]), mean,
            "—" if r["ci"] is None else f"[{m.format(r['ci'][0])}, {m.format(r['ci'][1])}]",
            "" if base else change(row, m), "" if base else change_ci(row, m),
            "" if base or r["d_z"] is None else fmt(r["d_z"]),
            "" if r["p_holm"] is None else f"{r['p_holm']:.3g}", r["verdict"],
            "" if base or r["look"] is None else _stage(r, table),
            "" if base or r["decided"] else _detectable(row, m, table["range"])])
        if unfin:
            lines[-1].insert(4, str(r["unfinished"]))
    return lines


def class_warnings(c: dict) -> list[str]:
    """A class record's warnings: its unfinished runs and its duplicated seeds."""
    return [*unfinished_lines(c["unfinished_runs"]), *duplicate_lines(c["duplicate_seeds"])]


def _detectable(row: _RowView, m, bounds: list) -> str:
    lo, hi = bounds
    if (row.detectable is not None and m.scale != "log" and lo is not None
            and hi is not None and row.detectable >= hi - lo):
        return "> range"
    return detectable_words(row, m)


def _stage(r: dict, table: dict) -> str:
    if not table["design"] or len(table["design"]) == 1:
        return f"{r['look']} seeds"
    return f"{r['stage']}/{len(table['design'])} ({r['look']} seeds)"


class _RowView:
    """A row record read through the attribute names the wording helpers use."""

    def __init__(self, record: dict):
        self.delta, self.delta_pct = record["delta"], record["delta_pct"]
        ci = record["delta_ci"]  # an open end is null in JSON, infinite here
        self.delta_ci = None if ci is None else (
            -math.inf if ci[0] is None else ci[0], math.inf if ci[1] is None else ci[1])
        self.detectable = record["detectable"]


def describe(table: dict) -> str:
    where = ("final scores" if table["match"] == "final" else
             f"matched at {table['match']} = {fmt(table['budget'])}")
    scale = "; log scale: ratios and geometric means" if table["scale"] == "log" else ""
    if table["scale_note"]:
        scale = f"; {table['scale_note']}"
    baseline = ", ".join(f"{k}={v}" for k, v in table["baseline"].items())
    planned = (f" ({table['pending']} of them for cells the sweep planned that have no "
               "record yet)" if table["pending"] else "")
    family = ("the primary metric: Holm over the study's "
              f"{table['tests']} comparison(s) in every class{planned}"
              if table["family"] == "primary"
              else f"exploratory: Holm over this table's {table['tests']} comparison(s) only")
    design = table["design"]
    looks = ("" if not design or len(design) == 1 else
             f"; analysed at {', '.join(map(str, design))} paired seeds (alpha spending)")
    effect = ("" if table["smallest_effect"] is None else
              f"; equivalent: interval inside ±{table['smallest_effect']}")
    return (f"{table['metric']} ({table['better']} is better), {where}; baseline {baseline} "
            f"(*){scale}; {family}{looks}{effect}; intervals are {table['interval']}, "
            f"at least {table['ci_level']:.0%}, at the level each row was held to")


def variant_details(table: dict) -> str:
    """The settings behind option-named variants ("" when the names are the settings)."""
    named = [f"{r['variant']} = {r['detail']}" for r in table["rows"] if r["detail"]]
    return f"variants: {'; '.join(named)}" if named else ""


def budget_words(budget: dict) -> str:
    """One line: what a run of the class trained for, on how many threads, at which widths."""
    names = {"step": "rounds", "images_seen": "real images seen", "g_updates": "G updates",
             "d_updates": "D updates", "wall_s": "training seconds per run",
             "threads": "CPU threads per run",
             **{k: k for k in WIDTH_KEYS}}
    parts = []
    for k, name in names.items():
        span = budget.get(k)
        if span is None:
            continue
        lo, hi = (f"{v:,.1f}" if k == "wall_s" else f"{v:,.0f}" for v in span)
        if k == "threads" and span == [1, 1]:
            name = "CPU thread per run"
        value = lo if lo == hi else f"{lo}–{hi}"
        parts.append(f"{name} {value}" if k in WIDTH_KEYS else f"{value} {name}")
    line = "budget: " + (", ".join(parts) if parts else "no completed run")
    if budget.get("machines"):
        line += "; trained on " + ", ".join(f"{name} ({n} run{'s' * (n > 1)})"
                                             for name, n in budget["machines"].items())
    return line


def answers(doc: dict) -> list[str]:
    """The study's answer: one line per variant of the primary metric, every class."""
    out = []
    for c in doc["classes"]:
        many = len(doc["classes"]) > 1
        for r in c["tables"][0]["rows"]:
            if not r["is_baseline"]:
                out.append((f"[{_short(c)}] " if many else "") + r["answer"])
    return out


def _short(c: dict) -> str:
    comp = c["comparability"]
    return ", ".join(f"{k}={comp[k]}" for k in ("labels", "data.name", "model.name")
                     if k in comp)


def zero_tables(c: dict) -> list[str]:
    """Labels of the class's exploratory metrics that are exactly 0 everywhere."""
    return [t["label"] for t in c["tables"][1:] if t["all_zero"]]


def format_text(doc: dict) -> str:
    """The console view: the answer first, then per class the primary metric's table."""
    out = []
    if doc["study"]["question"]:
        out += [f"Question: {doc['study']['question']}"]
    out += ["Answer:", *(f"  {line}" for line in answers(doc)), ""]
    if doc["pending"]:
        out += [pending_words(doc["pending"]), ""]
    for c in doc["classes"]:
        table = c["tables"][0]
        details = variant_details(table)
        out += [f"class [{c['label']}]", budget_words(c["budget"]), describe(table),
                *([details] if details else []), *aligned(table_lines(table)),
                *class_warnings(c), ""]
        if c["thin"]:
            out.append(f"  (as few as {c['seeds']} ended seed{'s' * (c['seeds'] != 1)} in a "
                       "variant: the evidence is thin; only large differences can be detected)")
            out.append("")
    return "\n".join(out)
