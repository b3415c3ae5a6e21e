"""The comparer proper, behind `python -m ganlab.compare` (whose --help needs none of it)."""


from __future__ import annotations

import json
import math
import sys

from ganlab.compare.document import build_document, format_text
from ganlab.compare.plan import plan
from ganlab.compare.report import report_metrics, write_report
from ganlab.compare.runs import group_runs, load_results
from ganlab.compare.stats import POWER, Design, sd_upper, seeds_for
from ganlab.compare.tables import (
    CompareError,
    Table,
    build_tables,
    default_metric,
    format_brief,
    parse_baseline,
)
from ganlab.metrics import SCALES, Effect, metric_key
from ganlab.storage import StorageError


def parse_scales(tokens: list[str] | None) -> dict[str, str]:
    scales = {}
    for token in tokens or []:
        name, sep, scale = token.partition("=")
        if not sep or scale not in SCALES:
            raise CompareError(f"--scale {token!r}: give METRIC=SCALE with SCALE one of "
                               f"{', '.join(SCALES)} (e.g. --scale fid=log)")
        scales[metric_key(name)] = scale
    return scales


def parse_effects(tokens: list[str] | None) -> dict[str, Effect]:
    effects = {}
    for token in tokens or []:
        name, sep, size = token.partition("=")
        try:
            if not sep or not name:
                raise ValueError("not METRIC=SIZE")
            effects[metric_key(name)] = Effect.parse(size)
        except ValueError as e:
            raise CompareError(f"--delta {token!r}: give METRIC=SIZE, SIZE an absolute change "
                               f"or a percentage (e.g. --delta modes_covered=1, --delta "
                               f"fid=5%) ({e})") from None
    return effects


def parse_design(args) -> Design | None:
    given = [args.seeds_min, args.seeds_step, args.seeds_max]
    if all(v is None for v in given):
        return None
    lo, step, hi = (v if v is not None else d for v, d in zip(given, (3, 2, 15), strict=True))
    if lo < 3 or step < 1 or hi < lo:
        raise CompareError(f"--seeds-min {lo} --seeds-step {step} --seeds-max {hi}: need "
                           "seeds-min >= 3, seeds-step >= 1 and seeds-max >= seeds-min")
    return Design.sequential(lo, step, hi)


def seeds_needed(tables: list[Table], delta: float) -> list[str]:
    """For each variant with a spread of paired differences: the seeds that detect `delta`
    (from the spread's upper confidence bound, at the strictest level of the family)."""
    lines = []
    for t in tables:
        m = t.metric
        if m.scale == "log" and delta <= 0:
            raise CompareError(f"--seeds-for {delta:g}: {m.name} is compared as a ratio; "
                               "give a factor such as 2 (or 0.5)")
        on_scale = abs(math.log(delta)) if m.scale == "log" else abs(delta)
        what = f"a change by ×{delta:g}" if m.scale == "log" else f"|Δ| = {delta:g}"
        for row in t.rows:
            if row.is_baseline or row.diff_sd is None:
                continue
            sd = sd_upper(row.diff_sd, row.look)
            n = seeds_for(on_scale, sd, t.strictest_alpha, POWER)
            lines.append(f"{row.label}: {'more than 10000' if n is None else n} paired seeds "
                         f"detect {what} in {m.label} with {POWER:.0%} power at α = "
                         f"{t.strictest_alpha:.3g} (spread of its paired differences "
                         f"{row.diff_sd:.3g} over {row.look} seeds, at most {sd:.3g})")
    return lines


def run(args) -> int:
    """`python -m ganlab.compare` with its parsed arguments."""
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
        scales = parse_scales(args.scale)
        effects = parse_effects(args.delta)
        design = parse_design(args)
        metric = metric_key(args.metric) if args.metric else default_metric(results)
        if args.plan:
            found = plan(results, metric=metric, baselines=baselines, design=design,
                         effects=effects, scales=scales, match=args.match)
            print(json.dumps(found, indent=2) if args.json else "\n".join(found["lines"]))
            return 0
        if args.json:
            raise CompareError("--json goes with --plan")
        # one grouping for every table: a variant has the same name and place in each
        groups = group_runs(results)
        primary = build_tables(results, metric, args.match, baselines, scales, groups,
                               design=design, effects=effects)
        classes = []
        for group, t in zip(groups, primary, strict=True):  # every other metric of the class
            others = [m for m in report_metrics(t.runs) if m != metric]
            classes.append([t, *_other_tables(group, others, args.match, baselines, scales,
                                              design, effects)])
        doc = build_document(results, classes, dirs=args.dirs, match=args.match,
                             primary=metric, scales=scales)
        extra = seeds_needed(primary, args.seeds_for) if args.seeds_for is not None else []
    except CompareError as e:
        print(f"ganlab.compare: {e}", file=sys.stderr)
        return 2
    print(format_text(doc))
    for line in extra:
        print(line)
    out = args.out or args.dirs[0]
    try:
        # a what-if (--seeds-for) changes no record: it logs nothing
        paths = write_report(doc, classes, out,
                             log_wandb=not args.no_wandb and args.seeds_for is None,
                             wandb_to={"project": args.wandb_project,
                                       "entity": args.wandb_entity, "mode": args.wandb_mode})
    except StorageError as e:
        print(f"ganlab.compare: {e}", file=sys.stderr)
        return 2
    print(f"report: {paths['html']}  (and {paths['md'].name}, {paths['json'].name})")
    return 0


def _other_tables(group, metrics, match, baselines, scales, design, effects) -> list[Table]:
    tables = []
    for name in metrics:
        try:
            tables += build_tables(group.runs, name, match, baselines, scales, [group],
                                   design=design, effects=effects, family="exploratory")
        except CompareError:  # not comparable at this budget: the primary table says why
            continue
    return tables
