"""`python -m ganlab.compare DIR...`: print the verdict tables and write the report.

Every result.json under the dirs is read. Runs are grouped into comparison classes by their
`comparability` dict (label use, data, model family, evaluation protocol) and a class is
never mixed with another. Within a class, a variant is a run's trick toggles and
hyper-parameters (everything but the seed); runs are paired with the baseline variant by
seed. `--brief` prints a plain mean ± std per variant of every metric instead, and writes
nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganlab.compare.report import write_report
from ganlab.compare.runs import load_results
from ganlab.compare.tables import (
    MATCHES,
    CompareError,
    build_tables,
    default_metric,
    format_brief,
    format_text,
    metric_key,
    parse_baseline,
)
from ganlab.storage import StorageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--baseline", nargs="+", action="append", metavar="KEY=VALUE",
                        help="the baseline variant (repeat the flag for one per class)")
    parser.add_argument("--metric", default=None,
                        help="e.g. fid, is, kid, modes_covered, hq_pct (default: fid, else "
                             "modes_covered); the report has a table for every eval metric")
    parser.add_argument("--match", default="final", choices=MATCHES)
    parser.add_argument("--out", type=Path, default=None,
                        help="where report.md/report.html go (default: the first DIR)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    parser.add_argument("--brief", action="store_true",
                        help="a quick look: mean ± std per variant, no tests, no report")
    parser.add_argument("--strict", action="store_true",
                        help="an unreadable result.json is an error (default: listed, skipped)")
    args = parser.parse_args(argv)
    try:
        missing = [str(d) for d in args.dirs if not d.is_dir()]
        if missing:
            raise CompareError(f"no such directory: {', '.join(missing)}")
        results = load_results(args.dirs)
        for problem in results.unreadable:
            print(f"ganlab.compare: skipped {problem}", file=sys.stderr)
        if results.unreadable and args.strict:
            raise CompareError(f"{len(results.unreadable)} unreadable result.json (--strict)")
        if not results:
            raise CompareError(f"no result.json under {', '.join(map(str, args.dirs))}")
        if args.brief:
            print(format_brief(results))
            return 0
        baselines = ([parse_baseline(b) for b in args.baseline] if args.baseline else None)
        metric = metric_key(args.metric) if args.metric else default_metric(results)
        tables = build_tables(results, metric, args.match, baselines)
    except CompareError as e:
        print(f"ganlab.compare: {e}", file=sys.stderr)
        return 2
    print(format_text(tables))
    out = args.out or args.dirs[0]
    try:
        paths = write_report(results, tables, out, baselines, args.match,
                             log_wandb=not args.no_wandb)
    except StorageError as e:
        print(f"ganlab.compare: {e}", file=sys.stderr)
        return 2
    print(f"report: {paths['html']}  (and {paths['md']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
