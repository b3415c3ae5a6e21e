"""The same training runs scored twice: G's last iterate (records of a run without
`eval.ema`) and the average of G's weights (records of the same seeds and config with it).

    python experiments/knee/last_vs_average.py LAST_DIR AVERAGE_DIR --out DIR [--metric M]

Runs are paired by seed. The pairing is refused unless both records of a seed trained the
same G: every training loss they logged must be equal (the average never changes
training, so a difference means another config, code or machine). For each seed and each
scored generator: the final score, the mean and spread of the last quarter's evaluations,
and the largest drop from one evaluation to the next in that quarter; across seeds, the
paired difference (average - last) of the final scores with its 95 % t interval. Writes
`last_vs_average.json` and `last_vs_average.png` (each seed's curve, both generators) to
--out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ganlab.compare.stats import t_interval  # noqa: E402
from ganlab.result import read_result  # noqa: E402


def by_seed(root: Path) -> dict[int, dict]:
    runs = {}
    for path in sorted(root.rglob("result.json")):
        record = read_result(path.parent)
        if record is not None and record["status"] == "completed":
            runs[record["seed"]] = record
    return runs


def training_losses(record: dict) -> list[tuple]:
    return [(h["step"], *(v for k, v in sorted(h["metrics"].items()) if k.startswith("train/")))
            for h in record["history"]]


def summary(record: dict, metric: str) -> dict:
    curve = [(h["step"], h["metrics"][metric]) for h in record["history"]
             if metric in h["metrics"]]
    last_step = curve[-1][0]
    quarter = [v for s, v in curve if s > 0.75 * last_step]
    drops = [a - b for a, b in zip(quarter, quarter[1:], strict=False)]
    return {"final": curve[-1][1], "quarter_mean": statistics.fmean(quarter),
            "quarter_sd": statistics.stdev(quarter), "largest_drop": max([0, *drops]),
            "curve": curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("last", type=Path)
    parser.add_argument("average", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metric", default="eval/modes_covered")
    args = parser.parse_args(argv)
    last, average = by_seed(args.last), by_seed(args.average)
    seeds = sorted(set(last) & set(average))
    if len(seeds) < 2:
        parser.error(f"fewer than two seeds finished in both dirs ({seeds})")
    for s in seeds:
        if training_losses(last[s]) != training_losses(average[s]):
            parser.error(f"seed {s}: the two records did not train the same G (their training "
                         "losses differ)")
    decay = average[seeds[0]]["comparability"]["eval"].get("ema")
    rows = {s: {"last": summary(last[s], args.metric),
                "average": summary(average[s], args.metric)} for s in seeds}
    diffs = [rows[s]["average"]["final"] - rows[s]["last"]["final"] for s in seeds]
    low, high = t_interval(diffs)
    out = {"metric": args.metric, "ema": decay, "seeds": seeds,
           "final_difference": {"mean": statistics.fmean(diffs), "ci95": [low, high]},
           "per_seed": {str(s): {who: {k: v for k, v in r.items() if k != "curve"}
                                 for who, r in rows[s].items()} for s in seeds}}
    for who in ("last", "average"):
        out[who] = {k: statistics.fmean(rows[s][who][k] for s in seeds)
                    for k in ("final", "quarter_mean", "quarter_sd", "largest_drop")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "last_vs_average.json").write_text(json.dumps(out, indent=2) + "\n")

    name = args.metric.split("/")[-1]
    print(f"{name}: G's last iterate vs the average of its weights (eval.ema={decay}), "
          f"{len(seeds)} seeds, the same training")
    print(f"{'seed':>4} | {'last':>6} {'avg':>6} | quarter mean last/avg | quarter sd last/avg"
          " | largest drop last/avg")
    for s in seeds:
        a, b = rows[s]["last"], rows[s]["average"]
        print(f"{s:>4} | {a['final']:>6.4g} {b['final']:>6.4g} | {a['quarter_mean']:>9.3g} / "
              f"{b['quarter_mean']:<9.3g} | {a['quarter_sd']:>8.3g} / {b['quarter_sd']:<8.3g} | "
              f"{a['largest_drop']:>8.3g} / {b['largest_drop']:<8.3g}")
    m = out["final_difference"]
    print(f"final, average - last: {m['mean']:+.3g} [{low:+.3g}, {high:+.3g}] (95 % t interval)")

    cols = min(4, len(seeds))
    rows_n = -(-len(seeds) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.4 * rows_n), sharey=True,
                             squeeze=False)
    for ax, s in zip(axes.flat, seeds, strict=False):
        for who, style in (("last", dict(color="0.55", lw=0.9)),
                           ("average", dict(color="C0", lw=1.4))):
            steps, values = zip(*rows[s][who]["curve"], strict=True)
            ax.plot([x / 1000 for x in steps], values, label="G" if who == "last"
                    else f"average ({decay})", **style)
        ax.set_title(f"seed {s}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(seeds):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.supxlabel("rounds (thousands)", fontsize=8)
    fig.supylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "last_vs_average.png", dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
