"""The comparer's report: `report.md` and a self-contained `report.html` (pictures inlined).

For each comparison class: one table per evaluation metric (ganlab.compare.tables), a point chart of
each variant's mean with its 95 % CI, metric-vs-step curves (mean and min-max band over
seeds), the latest samples of each variant side by side, and, when smoothing varies, the
analytic optimal D of each variant (Eq. 15's bump where beta > 0). Also logged to W&B as a
table and images (offline unless the user is online); a W&B failure only warns.
"""

from __future__ import annotations

import base64
import html
import logging
import textwrap
from pathlib import Path

import numpy as np

from ganlab.compare.tables import (
    CompareError,
    Table,
    build_tables,
    describe,
    direction,
    table_lines,
)
from ganlab.dstar import GRID, P_DATA, P_MODEL, analytic_dstar, normal_pdf
from ganlab.plots import save_figure
from ganlab.result import STATUSES, count_statuses
from ganlab.storage import atomic_write

log = logging.getLogger(__name__)
SKIP_METRICS = ("_std", "fid_class/")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report_metrics(results: list[dict]) -> list[str]:
    names = {k for r in results for k in r["metrics"] if k.startswith("eval/")}
    return sorted(n for n in names if not any(s in n for s in SKIP_METRICS))


def _point_chart(t: Table, path: Path) -> None:
    plt = _plt()
    rows = [r for r in t.rows if r.mean is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4), dpi=100)
    for i, r in enumerate(rows):
        lo, hi = r.ci if r.ci else (r.mean, r.mean)
        ax.errorbar(r.mean, i, xerr=[[r.mean - lo], [hi - r.mean]], fmt="o", capsize=4,
                    color="tab:red" if r.is_baseline else "tab:blue")
        ax.scatter(list(r.values.values()), [i] * len(r.values), s=12, color="grey",
                   alpha=0.6, zorder=3)
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    better = "higher" if direction(t.metric) > 0 else "lower"
    ax.set_xlabel(f"{t.metric} ({better} is better): mean and 95 % CI; seeds in grey")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _curves(t: Table, path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    drawn = False
    for r in t.rows:
        series = {}
        for run in r.runs:
            for h in run["history"]:
                v = h["metrics"].get(t.metric)
                if v is not None and np.isfinite(v):
                    series.setdefault(h["step"], []).append(v)
        if not series:
            continue
        steps = sorted(series)
        mean = [np.mean(series[s]) for s in steps]
        ax.plot(steps, mean, marker=".", label=r.label)
        ax.fill_between(steps, [min(series[s]) for s in steps],
                        [max(series[s]) for s in steps], alpha=0.15)
        drawn = True
    if drawn:
        ax.set_xlabel("rounds (train.steps)")
        ax.set_ylabel(t.metric)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, path)
    plt.close(fig)
    return drawn


def _samples(t: Table, path: Path) -> bool:
    from PIL import Image

    plt = _plt()
    pictures = []
    for r in t.rows:
        for run in sorted(r.runs, key=lambda run: run["seed"]):
            pngs = sorted(Path(run["run_dir"], "samples").glob("step_*.png"))
            if pngs:
                title = "\n".join(textwrap.wrap(f"{r.label} (seed {run['seed']})", 40))
                pictures.append((title, pngs[-1]))
                break
    if not pictures:
        return False
    cols = min(4, len(pictures))
    rows = -(-len(pictures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), dpi=100,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, png) in zip(axes.flat, pictures, strict=False):
        ax.imshow(np.asarray(Image.open(png).convert("RGB")))
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def _dstar(t: Table, path: Path) -> bool:
    import torch

    if not any(k.startswith("smoothing.") for k in t.varying):
        return False
    plt = _plt()
    x = torch.linspace(*GRID, 281)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
    scale = 1 / float(torch.maximum(pd, pm).max())
    ax.fill_between(x, 0, pd * scale, color="tab:green", alpha=0.12, label="p_data (scaled)")
    ax.fill_between(x, 0, pm * scale, color="tab:orange", alpha=0.12, label="p_model (scaled)")
    for r in t.rows:
        real, fake = r.settings.get("smoothing.real_target"), r.settings.get(
            "smoothing.fake_target")
        if real is not None and fake is not None:
            ax.plot(x, analytic_dstar(x, real, fake), label=f"D*: {r.label}")
    ax.set_title("optimal D of each variant (Eq. 15); beta > 0 lifts it where p_model >> "
                 "p_data  (see python -m ganlab.dstar)", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


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


def write_report(results: list[dict], tables: list[Table], out: Path,
                 baselines: list[dict] | None, match: str, log_wandb: bool = True) -> dict:
    out = Path(out)
    files = out / "report_files"
    md = ["# ganlab comparison report", "",
          f"{len(results)} runs; variants paired with their baseline by seed; 95 % "
          "bootstrap CIs; paired t-test, Holm-corrected across the variants of a table. "
          "Classes are never mixed.", ""]
    body = [f"<h1>ganlab comparison report</h1><p>{html.escape(md[2])}</p>"]
    skipped = getattr(results, "unreadable", [])
    if skipped:
        note = f"Skipped {len(skipped)} unreadable result.json: " + "; ".join(skipped)
        md += [note, ""]
        body.append(f"<p><b>{html.escape(note)}</b></p>")
    images: dict[str, Path] = {}
    for ci, main in enumerate(tables):
        heading = describe(main).split(":")[0]
        counts = count_statuses(main.runs)
        status = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        md += [f"## {heading}", "", f"Runs: {status}.", ""]
        body.append(f"<h2>{html.escape(heading)}</h2><p>Runs: {html.escape(status)}.</p>")
        class_results = main.runs
        for metric in report_metrics(class_results) or [main.metric]:
            try:
                t = next(iter(build_tables(class_results, metric, match, baselines)), None)
            except CompareError as e:  # e.g. no common budget for this metric
                md += [f"### {metric}", "", f"Not compared: {e}", ""]
                body.append(f"<h3>{html.escape(metric)}</h3><p>Not compared: "
                            f"{html.escape(str(e))}</p>")
                continue
            if t is None or all(r.mean is None for r in t.rows):
                continue
            stem = f"c{ci}_{metric.replace('/', '_')}"
            md += [f"### {metric}", "", describe(t), "", _md_table(table_lines(t)), ""]
            body.append(f"<h3>{html.escape(metric)}</h3><p>{html.escape(describe(t))}</p>"
                        + _html_table(table_lines(t)))
            pictures = []
            _point_chart(t, files / f"{stem}_points.png")
            pictures.append(f"{stem}_points.png")
            if _curves(t, files / f"{stem}_curves.png"):
                pictures.append(f"{stem}_curves.png")
            for name in pictures:
                images[name] = files / name
                md.append(f"![{metric}](report_files/{name})")
                body.append(_img(files / name, metric))
            md.append("")
        for name, maker, title in ((f"c{ci}_samples.png", _samples, "Samples (latest "
                                    "evaluation, first seed of each variant)"),
                                   (f"c{ci}_dstar.png", _dstar, "Optimal D per variant")):
            if maker(main, files / name):
                images[name] = files / name
                md += [f"### {title}", "", f"![{title}](report_files/{name})", ""]
                body.append(f"<h3>{html.escape(title)}</h3>" + _img(files / name, title))
    atomic_write(out / "report.md", "\n".join(md).encode())
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
             "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%}")
    atomic_write(out / "report.html", (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ganlab report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>").encode())
    if log_wandb:
        _log_wandb(tables, images, out)
    return {"md": out / "report.md", "html": out / "report.html"}


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>"


def _log_wandb(tables: list[Table], images: dict[str, Path], out: Path) -> None:
    import os

    try:
        import wandb

        run = wandb.init(project="ganlab", job_type="compare", dir=str(out),
                         mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off"))
        for i, t in enumerate(tables):
            head, *body = table_lines(t)
            run.log({f"compare/class{i}/{t.metric}": wandb.Table(columns=head, data=body)})
        run.log({f"compare/{name}": wandb.Image(str(p)) for name, p in images.items()})
        run.finish()
    except Exception as e:
        log.warning("W&B logging of the report failed (%s: %s)", type(e).__name__, e)
