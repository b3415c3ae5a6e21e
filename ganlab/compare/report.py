"""The comparer's report: `report.json` (every number), `report.md` and a self-contained
`report.html` (pictures inlined), and the same tables in W&B, all rendered from report.json.

It opens with the study's question and its answer: one line per variant of the primary
metric (the verdict, Δ with its interval, the stage and seeds that decided it, or the seeds
an open one still needs). Then, per comparison class: the training budget, the primary
metric's table, a chart of each variant's Δ against the baseline with its interval and the
±δ band of equivalence, a chart of each variant's mean with its interval and its seeds, and
the metric over training; the other metrics follow, labelled exploratory (those exactly 0
everywhere in one line); then the latest samples of each variant side by side and, when
smoothing varies, the analytic optimal D of each variant (Eq. 15's bump where beta > 0).
W&B logging is offline unless the user is online; a W&B failure only warns.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import os
import textwrap
from pathlib import Path

import numpy as np

from ganlab.compare.curves import KNEE_PCT, knee_line
from ganlab.compare.document import (
    WANDB_COLUMNS,
    answers,
    budget_words,
    class_warnings,
    describe,
    table_lines,
    variant_details,
    wandb_rows,
    zero_tables,
)
from ganlab.compare.rows import Table, pending_words
from ganlab.metrics import Metric
from ganlab.storage import atomic_write, atomic_write_json, save_figure

log = logging.getLogger(__name__)
SKIP_METRICS = ("_std", "fid_class/")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11})
    return plt


def report_metrics(results: list[dict]) -> list[str]:
    names = {k for r in results for k in r["metrics"] if k.startswith("eval/")}
    return sorted(n for n in names if not any(s in n for s in SKIP_METRICS))


SPREAD_FOR_LOG = 10.0  # values this many times apart: a linear axis flattens the lower ones


# -- pictures ----------------------------------------------------------------------------------
def _point_chart(t: Table, path: Path) -> None:
    plt = _plt()
    m = t.metric
    rows = [r for r in t.rows if r.mean is not None]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.6), dpi=100)
    for i, r in enumerate(rows):
        lo, hi = r.ci if r.ci else (r.mean, r.mean)
        ax.errorbar(r.mean, i, xerr=[[r.mean - lo], [hi - r.mean]], fmt="o", capsize=5,
                    color="tab:red" if r.is_baseline else "tab:blue", zorder=4)
        seeds = list(r.values.values())
        ax.scatter(seeds, [i] * len(seeds), s=18, color="grey", alpha=0.7, zorder=3)
    ax.set_yticks(range(len(rows)), [r.label + (" (baseline)" if r.is_baseline else "")
                                     for r in rows])
    far = m.scale != "log" and points_on_log_axis(rows)
    if m.scale == "log" or far:
        ax.set_xscale("log")
    ax.set_title(f"{m.label}: {m.better} is better")
    axis = " (geometric, log axis)" if m.scale == "log" else " (log axis)" if far else ""
    ax.set_xlabel(f"mean and {t.level:.0%} {t.interval} interval{axis}; seeds in grey")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def far_apart(ends: list, drawn: list) -> bool:
    """Whether a linear axis would flatten the lower of these `ends` (at least SPREAD_FOR_LOG
    times apart) and a log axis can show every value `drawn` (all positive)."""
    return (len(ends) > 1 and all(v is not None and v > 0 for v in drawn)
            and max(ends) >= SPREAD_FOR_LOG * min(ends))


def points_on_log_axis(rows: list) -> bool:
    """Whether a chart of the variants' means and seeds needs a log axis on a linear metric:
    the means lie far apart and every seed's value (so every mean) is positive."""
    return far_apart([r.mean for r in rows], [v for r in rows for v in r.values.values()])


_VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue"}


def delta_linear_span(rows: list) -> float | None:
    """Where a Δ chart on a linear axis would squeeze some rows to dots: the half-width of
    the linear part of a symmetric-log axis that keeps those rows readable, else None.

    A row's reach is the larger end of its interval (or its ±δ band) from 0; when the
    widest reach is at least SPREAD_FOR_LOG times a row's, that row would be a dot (an
    ablation at +226 FID beside rows within ±5). The span is the largest such small reach,
    so every small row lies on the linear part and the wide one on the log part."""
    reaches = [max(abs(r.delta_ci[0]), abs(r.delta_ci[1]), r.effect or 0.0) for r in rows]
    if not all(math.isfinite(x) for x in reaches):  # an unbounded interval: no scale fits it
        return None
    widest = max(reaches, default=0.0)
    small = [x for x in reaches if 0 < x and x * SPREAD_FOR_LOG <= widest]
    return max(small) if small else None


def _symlog_axis(ax, span: float) -> None:
    """x on a symmetric-log axis, linear within ±span (shaded, wide enough to read the near
    rows), with plain-number ticks: a few inside the span, the decades beyond it."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    ax.set_xscale("symlog", linthresh=span, linscale=2.0)
    ax.axvspan(-span, span, color="grey", alpha=0.06, zorder=0)
    lo, hi = ax.get_xlim()
    inner = [x for x in MaxNLocator(5).tick_values(-span, span) if abs(x) <= span]
    decades = [10.0 ** k for k in range(math.ceil(math.log10(span)), 20)]
    outer = ([d for d in decades if d < hi and d > span]
             + [-d for d in decades if -d > lo and d > span])
    ax.set_xticks(sorted(inner + outer))
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _delta_chart(t: Table, path: Path) -> bool:
    """Each variant's Δ against the baseline with its interval, 0 and the ±δ band."""
    rows = [r for r in t.rows if not r.is_baseline and r.delta_ci is not None]
    if not rows:
        return False
    plt = _plt()
    m = t.metric
    centre = 1.0 if m.scale == "log" else 0.0
    span = None if m.scale == "log" else delta_linear_span(rows)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + (2.1 if span else 1.8)), dpi=100)
    for i, r in enumerate(rows):
        lo, hi = r.delta_ci
        ax.errorbar(r.delta, i, xerr=[[r.delta - lo], [hi - r.delta]], fmt="o", capsize=5,
                    color=_VERDICT_COLOURS.get(r.verdict, "tab:grey"), zorder=4)
        if r.effect is not None:
            band = (1 / r.effect, r.effect) if m.scale == "log" else (-r.effect, r.effect)
            ax.plot(band, [i, i], color="tab:blue", alpha=0.25, lw=10, solid_capstyle="butt")
    ax.axvline(centre, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r.label}: {r.verdict}" for r in rows])
    ax.invert_yaxis()  # the variants top to bottom, as in the table
    if m.scale == "log":
        ax.set_xscale("log")
    elif span is not None:
        _symlog_axis(ax, span)
    axis = (f"\naxis linear within ±{span:.3g} (shaded), logarithmic beyond"
            if span is not None else "")
    ax.set_title(f"{m.label}: change against the baseline ({m.better} is better)")
    ax.set_xlabel(("ratio to the baseline" if m.scale == "log" else "Δ") +
                  "; interval at the level each row was held to\nblue band: ±δ "
                  f"(equivalence){axis}")  # lines, not one: long variant names leave the axes narrow
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def curve_band(points: list[dict], bounds: tuple[float, float]) -> tuple[list, list]:
    """A curve's interval band, kept inside the metric's range (a t interval over a few
    seeds of a bounded count, e.g. modes covered, reaches past 0 or past the mode count;
    no score can lie there, so the band stops at the bound as the tables' intervals do)."""
    lo, hi = bounds
    return ([max(lo, p["ci"][0]) for p in points], [min(hi, p["ci"][1]) for p in points])


def curve_title(m: Metric, level: float, samples: set[int]) -> str:
    """A learning curve's title: what the band is and, for a metric scored on the generated
    samples, how many each point used (not for one measured otherwise, e.g. coupling)."""
    scored = (f", {'/'.join(map(str, sorted(samples)))} samples a point"
              if samples and m.from_samples else "")
    return f"{m.label} during training (mean over seeds, band: {level:.0%} t interval{scored})"


def curves_on_log_axis(record: dict, m: Metric) -> bool:
    """Whether the curves need a log axis: the metric is on one already, or its variants end
    at least SPREAD_FOR_LOG times apart (an ablation row stuck at FID 240 beside rows at 13
    leaves the rows at 13 a flat line on a linear axis) and every mean is positive."""
    if m.scale == "log":
        return True
    means = [p["mean"] for e in record["curves"] for p in e["points"]]
    return far_apart([e["points"][-1]["mean"] for e in record["curves"] if e["points"]], means)


def _curves(record: dict, t: Table, path: Path) -> bool:
    """The metric over training: each variant's mean over seeds with its t interval (from
    report.json's `curves`: points scored on the final sample count only)."""
    if not record["curves"]:
        return False
    plt = _plt()
    m = t.metric
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=100)
    for entry in record["curves"]:
        points = entry["points"]
        steps = [p["step"] for p in points]
        line, = ax.plot(steps, [p["mean"] for p in points], marker=".",
                        label=f"{entry['variant']} ({points[-1]['n']} seeds)")
        if all(p["ci"] is not None for p in points):
            ax.fill_between(steps, *curve_band(points, t.bounds), color=line.get_color(),
                            alpha=0.15)
        q = entry["last_quarter"]
        if q is not None:
            ax.axvspan(q["from"], q["to"], color="grey", alpha=0.04)
    samples = {e["num_samples"] for e in record["curves"]} - {None}
    ax.set_title("\n".join(textwrap.wrap(curve_title(m, t.level, samples), 95)), fontsize=10)
    ax.set_xlabel("rounds (train.steps); shaded: the last quarter the knee rule reads")
    ax.set_ylabel(m.label)
    if curves_on_log_axis(record, m):
        ax.set_yscale("log")
        if m.scale != "log":
            ax.set_ylabel(f"{m.label} (log axis)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def _samples(t: Table, path: Path) -> bool:
    from PIL import Image

    plt = _plt()
    pictures = []
    for r in t.rows:
        for run in sorted(r.runs, key=lambda run: run["seed"]):
            pngs = sorted(Path(run["run_dir"], "samples").glob("step_*.png"))
            if pngs:
                title = "\n".join(textwrap.wrap(f"{r.label} (seed {run['seed']})", 44))
                pictures.append((title, pngs[-1]))
                break
    if not pictures:
        return False
    cols = min(4, len(pictures))
    rows = -(-len(pictures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.6 * rows), dpi=100,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, png) in zip(axes.flat, pictures, strict=False):
        ax.imshow(np.asarray(Image.open(png).convert("RGB")))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def _dstar(t: Table, path: Path) -> bool:
    if not any(k.startswith("smoothing.") for k in t.varying):
        return False
    from ganlab.eq15 import GRID, P_DATA, P_MODEL, analytic_dstar, normal_pdf

    plt = _plt()
    x = np.linspace(*GRID, 281)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=100)
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
    scale = 1 / float(np.maximum(pd, pm).max())
    ax.fill_between(x, 0, pd * scale, color="tab:green", alpha=0.12, label="p_data (scaled)")
    ax.fill_between(x, 0, pm * scale, color="tab:orange", alpha=0.12, label="p_model (scaled)")
    for r in t.rows:
        real, fake = r.settings.get("smoothing.real_target"), r.settings.get(
            "smoothing.fake_target")
        if real is not None and fake is not None:
            ax.plot(x, analytic_dstar(x, real, fake), label=f"D*: {r.label}")
    ax.set_title("Optimal D of each variant (Eq. 15): β > 0 lifts it where p_model ≫ p_data")
    ax.set_xlabel("x  (p_data = N(0, 1), p_model = N(2, 1); python -m ganlab.dstar fits it)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


# -- pages -------------------------------------------------------------------------------------
def _md_table(lines: list[list[str]]) -> str:
    head, *body = lines
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in body]
    return "\n".join(out)


def _html_table(lines: list[list[str]]) -> str:
    head, *body = lines
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>"
                   for line in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>"


class _Page:
    """One report, written as markdown and as HTML at once."""

    def __init__(self):
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str, strong: bool = False) -> None:
        self.md += [f"**{text}**" if strong else text, ""]
        body = html.escape(text)
        self.html.append(f"<p>{f'<b>{body}</b>' if strong else body}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md += [*(f"- {i}" for i in items), ""]
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, lines: list[list[str]]) -> None:
        self.md += [_md_table(lines), ""]
        self.html.append(_html_table(lines))

    def picture(self, path: Path, alt: str) -> None:
        self.md += [f"![{alt}](report_files/{path.name})", ""]
        self.html.append(_img(path, alt))


def _metric_section(page: _Page, record: dict, t: Table, stem: Path, primary: bool,
                    images: dict[str, Path]) -> None:
    kind = ": the primary metric" if primary else " (exploratory)"
    page.heading(3 if primary else 4, f"{record['label']} ({record['metric']}){kind}")
    if primary:
        page.bullets([r["answer"] for r in record["rows"]])
    page.para(describe(record))
    if variant_details(record):
        page.para(variant_details(record))
    page.table(table_lines(record))
    pictures = []
    deltas = stem.with_name(stem.name + "_delta.png")
    if primary and _delta_chart(t, deltas):
        pictures.append(deltas)
    points = stem.with_name(stem.name + "_points.png")
    _point_chart(t, points)
    pictures.append(points)
    curves = stem.with_name(stem.name + "_curves.png")
    if _curves(record, t, curves):
        pictures.append(curves)
    for path in pictures:
        images[path.name] = path
        page.picture(path, record["label"])
    knees = [line for e in record["curves"]
             if (line := knee_line(e, record["label"], t.metric.format))]
    if primary and knees:
        page.para("Past the knee? (the last quarter of rounds must improve the metric by "
                  f"less than {KNEE_PCT:g} %: per seed, a line fitted through that quarter's "
                  f"evaluations; mean over seeds, {t.level:.0%} t interval)")
        page.bullets(knees)


def write_report(doc: dict, classes: list[list[Table]], out: Path,
                 log_wandb: bool = True, wandb_to: dict | None = None) -> dict:
    """report.json, report.md and report.html under `out` (figures in report_files/)."""
    out, files = Path(out), Path(out) / "report_files"
    atomic_write_json(out / "report.json", doc)
    page, images = _Page(), {}
    study = doc["study"]
    page.heading(1, f"ganlab report: {study['name']}" if study["name"] else "ganlab report")
    if study["question"]:
        page.para(f"Question: {study['question']}", strong=True)
    still = sum(not r["decided"] for c in doc["classes"] for r in c["tables"][0]["rows"])
    waits = len(doc["pending"])
    open_ = [f"{still} verdict{'s' * (still > 1)} still open"] if still else []
    open_ += [f"{waits} planned cell{'s' * (waits > 1)} with no record yet"] if waits else []
    page.heading(2, "Answer" + (f" ({'; '.join(open_)})" if open_ else ""))
    page.bullets(answers(doc))
    s = doc["settings"]
    design = s["design"]
    staged = (f"Seeds were added in stages (analyses at {', '.join(map(str, design))} paired "
              f"seeds; {s['spending']}), so every interval is a repeated interval: it covers "
              "the true difference at whichever stage the study stopped. "
              if design and len(design) > 1 else "")
    page.para(f"Variants are paired with their baseline by seed. {staged}The primary metric "
              f"({s['primary_metric']}) answers the question: its verdicts are Holm-corrected "
              f"at α = {s['alpha']} across every class; the other metrics are exploratory "
              f"(corrected within their own table). 'equivalent' means Δ's interval lies "
              f"inside ±δ, the metric's smallest effect of interest; 'detectable Δ' and the "
              f"seeds an open verdict needs use the {s['sd_bound_level']:.0%} upper bound of "
              f"the spread, for {s['power']:.0%} power. Means carry {s['ci_level']:.0%} "
              f"{s['interval']} intervals kept inside each metric's range. Classes are never "
              f"mixed; fewer than {s['min_pairs']} paired seeds give no test. Every number "
              "is in report.json.")
    if doc["unreadable"]:
        page.para(f"Skipped {len(doc['unreadable'])} unreadable result.json: "
                  + "; ".join(doc["unreadable"]), strong=True)
    if doc["pending"]:
        page.para(pending_words(doc["pending"]) + ".", strong=True)
    for ci, (record, tables) in enumerate(zip(doc["classes"], classes, strict=True)):
        left = sum(len(e["run_dirs"]) - 1 for e in record["duplicate_seeds"])
        counts = ", ".join([*(f"{v} {k}" for k, v in record["status_counts"].items()),
                            *([f"{left} duplicate{'s' * (left > 1)} of a seed"] if left else [])])
        page.heading(2, f"Class: {record['label']}")
        page.para(f"Runs: {counts}; {record['seeds']} or more ended seeds per variant; "
                  f"{budget_words(record['budget'])}.")
        for warning in class_warnings(record):
            page.para(warning, strong=True)
        if record["thin"]:
            page.para(f"The evidence is thin: with {record['seeds']} ended seed"
                      f"{'s' * (record['seeds'] != 1)} only large "
                      "differences can be told apart (see 'detectable Δ').", strong=True)
        zero = zero_tables(record)
        for ti, (table, t) in enumerate(zip(record["tables"], tables, strict=True)):
            if ti == 1:
                page.heading(3, "Other metrics (exploratory)")
                if zero:
                    page.para(f"Exactly 0 on every seed of every variant: {', '.join(zero)}.")
            if ti and table["all_zero"]:
                continue
            stem = files / f"c{ci}_{table['metric'].replace('/', '_')}"
            _metric_section(page, table, t, stem, ti == 0, images)
        main = tables[0]
        for name, maker, title in ((f"c{ci}_samples.png", _samples,
                                    "Samples (latest evaluation, first seed of each variant)"),
                                   (f"c{ci}_dstar.png", _dstar, "Optimal D of each variant")):
            if maker(main, files / name):
                images[name] = files / name
                page.heading(3, title)
                page.picture(files / name, title)
    atomic_write(out / "report.md", "\n".join(page.md).encode())
    style = ("body{font-family:sans-serif;max-width:1150px;margin:auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
             "padding:3px 6px}img{max-width:100%}li{margin:2px 0}")
    atomic_write(out / "report.html", (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ganlab report</title>"
        f"<style>{style}</style></head><body>{''.join(page.html)}</body></html>").encode())
    if log_wandb:
        _log_wandb(doc, images, out, wandb_to or {})
    return {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}


def _log_wandb(doc: dict, images: dict[str, Path], out: Path, given: dict) -> None:
    """The comparison as a W&B run of the sweep it compares: the project, entity and mode its
    runs logged to (`given`: the command's overrides), its group, job type `compare`, a
    config naming what was compared, the numeric table, the figures, and report.html/json
    as an artifact. The same comparison logged again updates that run (a stable id)."""
    try:
        import wandb

        found = doc.get("wandb") or {}
        group = found.get("group") or Path(doc["dirs"][0]).name
        mode = (given.get("mode") or os.environ.get("WANDB_MODE") or found.get("mode")
                or "offline")
        settings = doc["settings"]
        key = json.dumps([sorted(str(Path(d).resolve()) for d in doc["dirs"]),
                          settings["match"], settings["primary_metric"]])
        run_id = "compare-" + hashlib.sha1(key.encode()).hexdigest()[:12]
        config = {"sweep_dirs": doc["dirs"], "classes": [c["label"] for c in doc["classes"]],
                  "baselines": sorted({r["variant"] for c in doc["classes"]
                                       for t in c["tables"] for r in t["rows"]
                                       if r["is_baseline"]}),
                  "match": settings["match"], "primary_metric": settings["primary_metric"],
                  "alpha": settings["alpha"], "design": settings["design"],
                  "study": doc["study"]["name"]}
        run = wandb.init(project=given.get("project") or found.get("project") or "ganlab",
                         entity=given.get("entity") or found.get("entity") or None, mode=mode,
                         group=group, name=f"compare {group}", job_type="compare", id=run_id,
                         resume="allow", config=config, dir=str(out), reinit="create_new",
                         tags=["compare", *([f"study={doc['study']['name']}"]
                                           if doc["study"]["name"] else [])],
                         settings=wandb.Settings(silent=True, console="off"))
        run.log({"compare/table": wandb.Table(columns=list(WANDB_COLUMNS),
                                              data=wandb_rows(doc))})
        run.log({f"compare/{name}": wandb.Image(str(p)) for name, p in images.items()})
        report = wandb.Artifact(f"report-{run_id}", type="report")
        for name in ("report.html", "report.json"):
            report.add_file(str(out / name))
        run.log_artifact(report)
        run.summary.update({"question": doc["study"]["question"], "decided": doc["decided"]})
        run.finish()
        wandb.teardown()
    except Exception as e:
        log.warning("W&B logging of the report failed (%s: %s)", type(e).__name__, e)
