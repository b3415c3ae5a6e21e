"""`report.json`: every number of every table of a comparison, the one source the console,
markdown, HTML and W&B views are rendered from.

The document (schema version 1; README "report.json" lists every key):

    {"schema_version", "generated", "dirs", "study": {"name", "question"},
     "settings": {"match", "alpha", "ci_level", "power", "interval", "min_pairs",
                  "primary_metric", "scales"},
     "unreadable": [message, ...],
     "classes": [{"label", "comparability", "status_counts", "seeds", "thin",
                  "tables": [table, ...]}]}      # the primary metric's table first

    table: {"metric", "label", "better", "scale", "floor", "floored", "match", "budget",
            "baseline", "tests", "alpha", "strictest_alpha", "interval", "ci_level",
            "rows": [row, ...]}
    row:   {"variant", "detail", "is_baseline", "settings", "n", "diverged", "failed",
            "values", "mean", "ci", "median", "pairs", "delta", "delta_ci", "delta_pct",
            "delta_pct_ci", "diff_sd", "d_z", "d_z_ci", "p", "p_holm", "verdict",
            "detectable", "answer"}

On a log scale `mean` is the geometric mean, `delta` the ratio to the baseline (and
`delta_pct` its change in %), `detectable` the smallest ratio (factor) these seeds detect.
"""

from __future__ import annotations

import time

from ganlab.compare.stats import CI_LEVEL, INTERVAL, POWER
from ganlab.compare.tables import (
    ALPHA,
    MIN_PAIRS,
    Table,
    aligned,
    change,
    change_ci,
    detectable_words,
    fmt,
)
from ganlab.metrics import metric_info
from ganlab.result import STATUSES, count_statuses

SCHEMA_VERSION = 1
TOP_KEYS = ("schema_version", "generated", "dirs", "study", "settings", "unreadable",
            "classes")
SETTINGS_KEYS = ("match", "alpha", "ci_level", "power", "interval", "min_pairs",
                 "primary_metric", "scales")
CLASS_KEYS = ("label", "comparability", "status_counts", "seeds", "thin", "tables")
TABLE_KEYS = ("metric", "label", "better", "scale", "floor", "floored", "match", "budget",
              "baseline", "tests", "alpha", "strictest_alpha", "interval", "ci_level", "rows")
ROW_KEYS = ("variant", "detail", "is_baseline", "settings", "n", "diverged", "failed",
            "values", "mean", "ci", "median", "pairs", "delta", "delta_ci", "delta_pct",
            "delta_pct_ci", "diff_sd", "d_z", "d_z_ci", "p", "p_holm", "verdict", "detectable",
            "answer")
THIN_SEEDS = 5  # fewer seeds per variant than this: the report says the evidence is thin


def _pair(v) -> list[float] | None:
    return None if v is None else [float(v[0]), float(v[1])]


def table_record(t: Table) -> dict:
    m = t.metric
    return {
        "metric": m.name, "label": m.label, "better": m.better, "scale": m.scale,
        "floor": m.floor if m.scale == "log" else None,
        "floored": sum(r.floored for r in t.rows), "match": t.match, "budget": t.budget,
        "baseline": t.baseline, "tests": t.tests, "alpha": t.alpha,
        "strictest_alpha": t.strictest_alpha, "interval": t.interval, "ci_level": t.level,
        "rows": [{
            "variant": r.label, "detail": r.detail, "is_baseline": r.is_baseline,
            "settings": r.settings, "n": r.n, "diverged": r.diverged, "failed": r.failed,
            "values": {str(k): v for k, v in sorted(r.values.items())}, "mean": r.mean,
            "ci": _pair(r.ci), "median": r.median, "pairs": r.pairs, "delta": r.delta,
            "delta_ci": _pair(r.delta_ci), "delta_pct": r.delta_pct,
            "delta_pct_ci": _pair(r.delta_pct_ci), "diff_sd": r.diff_sd, "d_z": r.d_z,
            "d_z_ci": _pair(r.d_z_ci),
            "p": r.p, "p_holm": r.p_holm, "verdict": r.verdict, "detectable": r.detectable,
            "answer": r.answer} for r in t.rows]}


def build_document(results, classes: list[list[Table]], *, dirs, match: str,
                   primary: str, scales: dict[str, str]) -> dict:
    """`classes`: per comparison class, its tables with the primary metric's first."""
    study = next((r.get("study") or {} for r in results if r.get("study")), {})
    doc = {"schema_version": SCHEMA_VERSION,
           "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
           "dirs": [str(d) for d in dirs],
           "study": {"name": study.get("name", ""), "question": study.get("question", "")},
           "settings": {"match": match, "alpha": ALPHA, "ci_level": CI_LEVEL, "power": POWER,
                        "interval": INTERVAL, "min_pairs": MIN_PAIRS,
                        "primary_metric": primary, "scales": dict(scales)},
           "unreadable": list(getattr(results, "unreadable", [])),
           "classes": []}
    for tables in classes:
        main = tables[0]
        counts = count_statuses(main.runs)
        seeds = min((len(r.runs) for r in main.rows), default=0)
        doc["classes"].append({
            "label": main.class_label, "comparability": main.comparability,
            "status_counts": {s: counts[s] for s in STATUSES if counts[s]},
            "seeds": seeds, "thin": seeds < THIN_SEEDS,
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
HEAD = ["variant", "n", "div", "fail", "mean", "95% CI", "Δ vs baseline", "Δ 95% CI", "d_z",
        "p Holm", "verdict", "detectable Δ"]


def table_lines(table: dict) -> list[list[str]]:
    """A table record's cells (a header row first), for every text view."""
    m = metric_info(table["metric"], table["scale"])
    lines = [HEAD]
    for r in table["rows"]:
        row = _RowView(r)
        base = r["is_baseline"]
        lines.append([
            r["variant"] + (" *" if base else ""), str(r["n"]), str(r["diverged"]),
            str(r["failed"]), m.format(r["mean"]),
            "—" if r["ci"] is None else f"[{m.format(r['ci'][0])}, {m.format(r['ci'][1])}]",
            "" if base else change(row, m), "" if base else change_ci(row, m),
            "" if base or r["d_z"] is None else fmt(r["d_z"]),
            "" if r["p_holm"] is None else f"{r['p_holm']:.3g}", r["verdict"],
            "" if base else detectable_words(row, m)])
    return lines


class _RowView:
    """A row record read through the attribute names the wording helpers use."""

    def __init__(self, record: dict):
        self.delta, self.delta_pct = record["delta"], record["delta_pct"]
        self.delta_ci = record["delta_ci"]
        self.detectable = record["detectable"]


def describe(table: dict) -> str:
    where = ("final scores" if table["match"] == "final" else
             f"matched at {table['match']} = {fmt(table['budget'])}")
    scale = ""
    if table["scale"] == "log":
        floor = table["floor"]
        floored = f"; {table['floored']} did" if table["floored"] else ""
        scale = (f"; log scale: ratios and geometric means (values ≤ {floor:g} count as "
                 f"{floor:g}{floored})")
    baseline = ", ".join(f"{k}={v}" for k, v in table["baseline"].items())
    return (f"{table['metric']} ({table['better']} is better), {where}; baseline {baseline} "
            f"(*){scale}; {table['interval']} {table['ci_level']:.0%} intervals; Holm over "
            f"{table['tests']} test(s); detectable Δ: {POWER:.0%} power at "
            f"α = {table['strictest_alpha']:.3g}")


def variant_details(table: dict) -> str:
    """The settings behind option-named variants ("" when the names are the settings)."""
    named = [f"{r['variant']} = {r['detail']}" for r in table["rows"] if r["detail"]]
    return f"variants: {'; '.join(named)}" if named else ""


def format_text(doc: dict) -> str:
    """The console view: per class, the primary metric's table and its one-line answers."""
    out = []
    if doc["study"]["question"]:
        out += [f"Question: {doc['study']['question']}", ""]
    for c in doc["classes"]:
        table = c["tables"][0]
        details = variant_details(table)
        out += [f"class [{c['label']}]", describe(table), *([details] if details else []),
                *aligned(table_lines(table)), ""]
        out += [f"  {r['answer']}" for r in table["rows"]]
        if c["thin"]:
            out.append(f"  ({c['seeds']} seeds per variant: the evidence is thin; only large "
                       "differences can be detected)")
        out.append("")
    return "\n".join(out)
