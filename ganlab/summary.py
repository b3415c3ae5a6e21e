"""A plain table of a sweep: mean ± std of each eval metric per variant, over seeds.

`python -m ganlab.summary DIR...` groups every result.json under the dirs by comparability
class and by variant (the trick toggles that differ between runs), so runs that differ only
by seed are pooled. The comparer (paired statistics, intervals, reports) builds on this.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from ganlab.result import read_result


def load_results(dirs: list[Path]) -> list[dict]:
    results, seen = [], set()
    for d in dirs:
        for path in sorted(Path(d).rglob("result.json")):
            run_dir = path.parent.resolve()
            if run_dir in seen:  # overlapping dirs: count each run once
                continue
            seen.add(run_dir)
            result = read_result(run_dir)
            if result is not None:
                result["run_dir"] = str(run_dir)
                results.append(result)
    return results


def _key(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


def variant_settings(run: dict) -> dict:
    """Everything that makes a variant: trick toggles and other hyper-parameters, no seed."""
    return {**run.get("hparams", {}), **run["trick"]}


def variant_label(settings: dict, varying: list[str]) -> str:
    return ", ".join(f"{k}={settings.get(k)}" for k in varying) or "(single variant)"


def summarise(results: list[dict]) -> list[dict]:
    """One table per comparability class: rows of variant, n, status counts, metric stats."""
    classes: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        classes[_key(r["comparability"])].append(r)
    tables = []
    for runs in classes.values():
        settings = [variant_settings(r) for r in runs]
        keys = sorted({k for s in settings for k in s})
        varying = [k for k in keys if len({_key({"v": s.get(k)}) for s in settings}) > 1]
        variants: dict[str, list[dict]] = defaultdict(list)
        for r, s in zip(runs, settings, strict=True):
            variants[_key({k: s.get(k) for k in varying})].append(r)
        metric_names = sorted({m for r in runs for m in r["metrics"] if m.startswith("eval/")})
        rows = []
        for group in variants.values():
            done = [r for r in group if r["status"] == "completed"]
            row = {"variant": variant_label(variant_settings(group[0]), varying), "n": len(group),
                   "completed": len(done),
                   "diverged": sum(r["status"] == "diverged" for r in group),
                   "failed": sum(r["status"] == "failed" for r in group), "metrics": {}}
            for m in metric_names:
                values = [r["metrics"][m] for r in done if r["metrics"].get(m) is not None]
                if values:
                    sd = statistics.stdev(values) if len(values) > 1 else 0.0
                    row["metrics"][m] = (statistics.fmean(values), sd, len(values))
            rows.append(row)
        rows.sort(key=lambda row: row["variant"])
        tables.append({"comparability": runs[0]["comparability"], "metrics": metric_names,
                       "rows": rows})
    return tables


def format_tables(tables: list[dict]) -> str:
    out = []
    for t in tables:
        c = t["comparability"]
        out.append(f"class: dataset={c.get('dataset')} labels={c.get('labels')} "
                   f"model={c.get('model')} resolution={c.get('resolution')}")
        header = ["variant", "runs", "done/div/fail"] + [m.split("/")[-1] for m in t["metrics"]]
        lines = [header]
        for row in t["rows"]:
            cells = [row["variant"], str(row["n"]),
                     f"{row['completed']}/{row['diverged']}/{row['failed']}"]
            for m in t["metrics"]:
                if m in row["metrics"]:
                    mean, sd, _ = row["metrics"][m]
                    cells.append(f"{mean:.3g} ± {sd:.2g}")
                else:
                    cells.append("—")
            lines.append(cells)
        out += aligned(lines) + [""]
    return "\n".join(out)


def aligned(lines: list[list[str]]) -> list[str]:
    """A text table: columns padded to width, a rule under the header row."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.summary", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"ganlab.summary: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = load_results(args.dirs)
    if not results:
        print(f"ganlab.summary: no result.json under {', '.join(map(str, args.dirs))}",
              file=sys.stderr)
        return 2
    print(format_tables(summarise(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
