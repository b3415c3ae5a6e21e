"""Every seed's final samples of a 2-D sweep side by side: one row per variant, one column
per seed, so that which seeds dropped modes, and which modes, can be seen at once.

    python -m ganlab.compare.seeds SWEEP_DIR --out FILE.png [--key KEY] [--order A,B,...]

Each completed run is re-scored (`ganlab.evaluate`) in a scratch copy of its dir, so the
sweep is left as it is: the picture is of the generator its record scored (the average of
G's weights where `eval.ema` is set), from its last checkpoint and the final evaluation's
own latents, drawn by today's ganlab.plots (a ring at each mode, red where no sample is).
A run whose re-scored metrics differ from its record is refused: the picture would not be
of the run the table reports. `--key` names the setting that labels the rows (default:
the keys the cells' folder names differ in); `--order` lists the row labels in the order the
rows take, comma-separated, or semicolon-separated where labels hold commas (default: sorted).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ganlab.evaluate.__main__ import rescore  # noqa: E402
from ganlab.plots import scatter_frame  # noqa: E402
from ganlab.result import RecordError, read_result  # noqa: E402

SHOWN = ("eval/modes_covered", "eval/hq_pct")


def cell_settings(cell: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in cell.split(","))


def row_labels(cells: list[str], key: str | None = None) -> tuple[str, dict[str, str]]:
    """(what the rows are, each cell's row label): the value of `key`, or of the one key the
    cells' folder names differ in, or, where they differ in several (balance: k and the width
    ratio), each of those as `name=value` by the key's last part (`d_steps=5,
    width_ratio=1.0`)."""
    settings = {c: cell_settings(c) for c in cells}
    if key:
        if not any(key in s for s in settings.values()):
            known = sorted({k for s in settings.values() for k in s})
            raise SystemExit(f"--key {key}: no cell's folder name sets it (they set: "
                             f"{', '.join(known)})")
        return key, {c: s.get(key, c) for c, s in settings.items()}
    varying = [k for k in settings[cells[0]] if len({s.get(k) for s in settings.values()}) > 1]
    if not varying:
        raise SystemExit(f"the cells differ in nothing: name the row key with --key ({cells})")
    if len(varying) == 1:
        return varying[0], {c: s[varying[0]] for c, s in settings.items()}
    short = {k: k.rsplit(".", 1)[-1] for k in varying}
    return ", ".join(short.values()), {c: ", ".join(f"{short[k]}={s.get(k)}" for k in varying)
                                       for c, s in settings.items()}


def picture(run_dir: Path, record: dict, scratch: Path) -> Path:
    """The re-scored picture of a run, after checking its scores agree with its record."""
    copy = scratch / f"{run_dir.parent.name}-{run_dir.name}"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("samples", "wandb"))
    scores = rescore(copy, [])
    for key in (k for k in record["metrics"] if k.startswith("eval/")):
        if key in scores and scores[key] != record["metrics"][key]:
            raise SystemExit(f"{run_dir}: re-scored {key} = {scores[key]} but the record holds "
                             f"{record['metrics'][key]}; not the run the table reports")
    return copy / "samples" / f"evaluate_step_{scores['step']:07d}.png"


def completed_runs(sweep: Path) -> dict[Path, dict]:
    """The completed runs under a sweep, each dir with its record; a damaged record is named
    and skipped, as the comparer skips it."""
    runs = {}
    for path in sorted(sweep.glob("*/seed=*/result.json")):
        try:
            record = read_result(path.parent)
        except RecordError as e:
            print(f"skipped: {e}")
            continue
        if record["status"] == "completed":
            runs[path.parent] = record
    return runs


def frame(png: Path) -> np.ndarray:
    """A run's scatter (ganlab.plots.save_scatter) cut to its box, frame lines included."""
    pixels = np.asarray(Image.open(png).convert("RGB"))
    left, top, right, bottom = scatter_frame(pixels.shape[1])
    return pixels[top:bottom + 1, left:right + 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.compare.seeds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--key", default=None)
    parser.add_argument("--order", default=None,
                        help="row labels, comma- (or, where labels hold commas, semicolon-) "
                             "separated")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep} is not a directory (a sweep dir, as hydra.sweep.dir named it)")
    runs = completed_runs(args.sweep)
    if not runs:
        parser.error(f"no completed run in {args.sweep}")
    flat = [r for r, record in runs.items() if SHOWN[0] not in record["metrics"]]
    if flat:
        parser.error(f"{flat[0]} has no {SHOWN[0]}: the picture is of 2-D data's modes "
                     f"(data=ring8, grid25, ...); for images, each run's samples/ holds its grids")
    cells = sorted({r.parent.name for r in runs})
    rows, label = row_labels(cells, args.key) if len(cells) > 1 else (cells[0], {cells[0]: ""})
    if args.order:
        order = [o.strip() for o in args.order.split(";" if ";" in args.order else ",")]
        unknown = sorted(set(label.values()) - set(order))
        if unknown:
            parser.error(f"--order leaves out {'; '.join(unknown)} (rows: "
                         f"{'; '.join(sorted(label.values()))})")
        cells.sort(key=lambda c: order.index(label[c]))
    seeds = sorted({int(r.name.split("=", 1)[1]) for r in runs})
    fig, axes = plt.subplots(len(cells), len(seeds), figsize=(1.9 * len(seeds),
                                                              2.1 * len(cells)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    with tempfile.TemporaryDirectory() as scratch:
        for i, (run, record) in enumerate(runs.items(), 1):
            png = picture(run, record, Path(scratch))
            ax = axes[cells.index(run.parent.name), seeds.index(record["seed"])]
            ax.imshow(frame(png))
            m = record["metrics"]
            ax.set_title(f"seed {record['seed']}: {m[SHOWN[0]]:g} modes, {m[SHOWN[1]]:.0f} % HQ",
                         fontsize=7)
            print(f"[{i}/{len(runs)}] {run.parent.name}/{run.name}: "
                  f"{m[SHOWN[0]]:g} modes, {m[SHOWN[1]]:.1f} % HQ (re-scored: equal)")
    for c in cells:
        axes[cells.index(c), 0].text(-0.08, 0.5, label[c], transform=axes[cells.index(c), 0]
                                     .transAxes, rotation=90, ha="right", va="center",
                                     fontsize=9)
    title = (f"final samples per seed ({rows}; rings: each mode's high-quality radius, "
             "red: no sample there)")
    fig.suptitle(textwrap.fill(title, int(1.9 * len(seeds) * 12)), fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
