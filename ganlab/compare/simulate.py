"""`python -m ganlab.compare.simulate`: the sequential rule in the loop, on synthetic studies.

Each simulated study is a baseline and two variants drawn from a known truth. It starts with
`seeds_min` seeds of each, then asks `ganlab.compare.plan.plan` (the function a staged sweep
calls) which seeds to add, adds exactly those, and repeats until the plan says decided; its
final verdicts and intervals are then read from the comparer's own tables. Printed per
scenario:

- false better/worse: the share of studies where a variant with no true effect was called
  better or worse (family-wise, Holm across the variants): at most 5 % within Monte-Carlo
  error;
- false equivalent: the share where a variant whose true effect is at least δ was called
  equivalent within δ;
- coverage: the share of reported Δ intervals that contain the true Δ (at least 94 %);
- for a true effect: the power, the expected paired seeds the effect's variant took, the
  seeds a fixed design of the same power needs (paired t-test at Holm's first level,
  noncentral t), and their ratio.

Scenarios: normal paired differences; FID-like log-normal scores (linear metric, skewed);
mode counts resampled from committed ring8/grid25 records (discrete and bounded, many at the
ring's ceiling of 8). `--records-only --records REPORT` resamples only that report's own mode
counts (each class pooled, and its baseline against each variant), at the design its tables
record unless --seeds-* say otherwise: the check for the counts a committed verdict came
from. Records are plain dicts: no training, no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganlab.compare.plan import plan
from ganlab.compare.rows import ALPHA
from ganlab.compare.stats import POWER, Design, power
from ganlab.compare.tables import build_tables
from ganlab.metrics import metric_info

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "experiments" / "smoothing" / "report.json"

Draw = Callable[[np.random.Generator], float]


@dataclass
class Scenario:
    name: str
    metric: str
    classes: int  # the data's number of classes (the range of mode counts)
    base: Draw
    variants: dict[str, Draw]  # name -> draw
    truth: dict[str, float]  # name -> the true Δ (variant mean - baseline mean)
    effect: str | None = None  # the smallest effect of interest, if not the registry's


@dataclass
class Outcome:
    verdicts: dict[str, str] = field(default_factory=dict)
    covered: dict[str, bool] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    runs: int = 0


def _record(metric: str, classes: int, variant: str, seed: int, value: float,
            design: Design, effect: str | None) -> dict:
    study = {"name": "simulated", "baselines": ["study.variant=base"], "metric": metric,
             "design": {"min": design.looks[0], "step": _step(design),
                        "max": design.seeds_max}}
    if effect is not None:
        study["smallest_effect"] = {metric: effect}
    return {"status": "completed", "error": None, "seed": seed, "trick": {},
            "hparams": {"study.variant": variant}, "study": study,
            "comparability": {"labels": "none", "data.name": "synthetic",
                              "data.num_classes": classes, "eval": {"metrics": "synthetic"}},
            "metrics": {metric: float(value)}, "history": [], "step": 1}


def _step(design: Design) -> int:
    return design.looks[1] - design.looks[0] if design.stages > 1 else 1


def run_study(s: Scenario, design: Design, rng: np.random.Generator) -> Outcome:
    """One study: the first stage, then the seeds each plan names, until decided."""
    draws = {"base": s.base, **s.variants}
    records = [_record(s.metric, s.classes, v, seed, draw(rng), design, s.effect)
               for v, draw in draws.items() for seed in range(design.looks[0])]
    while True:
        found = plan(records, design=design)
        if found["decided"]:
            break
        for entry in found["add_seeds"]:
            for seed in entry["seeds"]:
                value = draws[entry["variant"]](rng)
                records.append(_record(s.metric, s.classes, entry["variant"], seed, value,
                                       design, s.effect))
    (table,) = build_tables(records, s.metric, design=design, details=False)
    out = Outcome(runs=len(records))
    for row in table.rows:
        if row.is_baseline:
            continue
        out.verdicts[row.label], out.pairs[row.label] = row.verdict, row.look or row.pairs
        truth = s.truth[row.label]
        out.covered[row.label] = (row.delta_ci is not None
                                  and row.delta_ci[0] <= truth <= row.delta_ci[1])
    return out


FIXED_POWER_CAP = 0.99  # no finite design has power 1: a simulated 1.0 is compared at 0.99


def fixed_seeds(effect: float, sd: float, achieved: float, alpha: float) -> int:
    """The paired seeds a fixed design needs for power `achieved` (at most 0.99) against
    `effect`."""
    target = min(achieved, FIXED_POWER_CAP)
    for n in range(2, 10_000):
        if power(abs(effect) / sd, n, alpha) >= target:
            return n
    return 10_000


def summarise(s: Scenario, outcomes: list[Outcome]) -> dict:
    """The scenario's error rates, coverage and, for a true effect, the seeds it took."""
    m = metric_info(s.metric)
    effect = s.effect or m.smallest_effect
    nulls = [v for v, t in s.truth.items() if t == 0]
    big = [v for v, t in s.truth.items() if t != 0 and _at_least_delta(t, effect)]
    studies = len(outcomes)
    wrong = sum(any(o.verdicts[v] in ("better", "worse") for v in nulls) for o in outcomes)
    false_eq = sum(any(o.verdicts[v] == "equivalent" for v in big) for o in outcomes)
    cover = [c for o in outcomes for c in o.covered.values()]
    out = {"scenario": s.name, "studies": studies,
           "false_better_worse": wrong / studies if nulls else None,
           "false_equivalent": false_eq / studies if big else None,
           "coverage": float(np.mean(cover)),
           "mean_runs": float(np.mean([o.runs for o in outcomes]))}
    effects = [v for v, t in s.truth.items() if t != 0]
    for v in effects:
        right = "better" if (s.truth[v] > 0) == (m.direction > 0) else "worse"
        achieved = float(np.mean([o.verdicts[v] == right for o in outcomes]))
        seeds = float(np.mean([o.pairs[v] for o in outcomes]))
        out[f"{v}.power"], out[f"{v}.seeds"] = achieved, seeds
        sd = getattr(s, "diff_sd", None)
        if sd and achieved > ALPHA:
            fixed = fixed_seeds(s.truth[v], sd, achieved, ALPHA / len(s.variants))
            out[f"{v}.fixed_seeds"], out[f"{v}.ratio"] = fixed, seeds / fixed
    return out


def _at_least_delta(truth: float, effect: str | None) -> bool:
    if effect is None or effect.endswith("%"):
        return False  # relative: judged against the baseline's mean, not known here
    return abs(truth) >= float(effect)


# -- scenarios ---------------------------------------------------------------------------------
def _normal(name: str, effect: float, sd: float = 1.0, delta: str = "0.5") -> Scenario:
    # independent scores with sd / sqrt(2) each: paired differences have sd `sd`
    each = sd / math.sqrt(2)
    s = Scenario(name, "eval/hq_pct", 0, lambda r: 50 + each * r.standard_normal(),
                 {"v1": lambda r: 50 + effect + each * r.standard_normal(),
                  "v2": lambda r: 50 + each * r.standard_normal()},
                 {"v1": effect, "v2": 0.0}, effect=delta)
    s.diff_sd = sd
    return s


def _fid_like(name: str, ratio: float) -> Scenario:
    sigma = 0.15  # FID's spread across seeds: about 15 %

    def fid(scale: float) -> Draw:
        return lambda r: 30 * scale * math.exp(sigma * r.standard_normal())

    mean = 30 * math.exp(sigma ** 2 / 2)
    return Scenario(name, "eval/fid", 0, fid(1.0), {"v1": fid(ratio), "v2": fid(1.0)},
                    {"v1": mean * (ratio - 1), "v2": 0.0})


def modes_tables(path: Path) -> list[tuple[dict, dict]]:
    """(class, its eval/modes_covered table) for each class of a report.json that has one."""
    doc = json.loads(Path(path).read_text())
    found = [(c, next((t for t in c["tables"] if t["metric"] == "eval/modes_covered"), None))
             for c in doc["classes"]]
    return [(c, t) for c, t in found if t is not None]


def committed_modes(path: Path = RECORDS) -> dict[str, dict[str, list[float]]]:
    """Mode counts per variant of the committed smoothing study: {data: {variant: values}}."""
    return {c["comparability"]["data.name"]: {r["variant"]: list(r["values"].values())
                                              for r in table["rows"]}
            for c, table in modes_tables(path)}


def _resampled(name: str, classes: int, base: list[float], other: list[float]) -> Scenario:
    def pick(values: list[float]) -> Draw:
        return lambda r: float(values[r.integers(len(values))])

    return Scenario(name, "eval/modes_covered", classes, pick(base),
                    {"v1": pick(other), "v2": pick(base)},
                    {"v1": float(np.mean(other) - np.mean(base)), "v2": 0.0})


def records_scenarios(tables: list[tuple[dict, dict]]) -> list[Scenario]:
    """Every 2-D class of a study's report.json (its `modes_tables`), resampled: its mode
    counts pooled over the variants (no effect), and its baseline against each variant (the
    truth: their means' difference). Checks the intervals on the very counts a committed
    verdict came from."""
    out = []
    for c, table in tables:
        data = c["comparability"]["data.name"]
        classes = int(c["comparability"]["data.num_classes"])
        values = {r["variant"]: list(r["values"].values()) for r in table["rows"]}
        base = next(r["variant"] for r in table["rows"] if r["is_baseline"])
        pool = [v for vs in values.values() for v in vs]
        out.append(_resampled(f"{data} mode counts (pooled), no effect", classes, pool, pool))
        out += [_resampled(f"{data} mode counts: {base} vs {v}", classes, values[base], vs)
                for v, vs in values.items() if v != base]
    if not out:
        raise SystemExit("the report has no eval/modes_covered table to resample")
    return out


def records_design(tables: list[tuple[dict, dict]]) -> Design | None:
    """The design a report's mode counts were analysed under (its `modes_tables`' recorded
    looks), or None where the report records none."""
    looks = next((t["design"] for _, t in tables if t.get("design")), None)
    return Design(tuple(int(n) for n in looks)) if looks else None


def scenarios(records: Path = RECORDS) -> list[Scenario]:
    modes = committed_modes(records)
    ring = [v for values in modes["ring8"].values() for v in values]
    grid = modes["grid25"]
    return [
        _normal("normal, no effect", 0.0),
        _normal("normal, effect 1 sd", 1.0),
        _fid_like("FID-like log-normal, no effect", 1.0),
        _fid_like("FID-like log-normal, FID x0.8", 0.8),
        _resampled("ring8 mode counts (pooled), no effect", 8, ring, ring),
        _resampled("grid25 mode counts: none vs one_sided", 25, grid["none"],
                   grid["one_sided"]),
    ]


EFFECTS = [0.8, 1.0, 1.25, 1.5]  # true effects (sd of a paired difference: 1); larger
# ones reach a power so close to 1 that a fixed design "of the same power" is not measurable


def efficiency(design: Design, effects: list[float], studies: int, seed: int = 0) -> list[dict]:
    """Seeds to decide a true effect (paired differences with sd 1) against a fixed design of
    the same power, for each effect size."""
    out = []
    for effect in effects:
        s = _normal(f"normal, effect {effect:g} sd", effect)
        rng = np.random.default_rng(seed)
        out.append(summarise(s, [run_study(s, design, rng) for _ in range(studies)]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.compare.simulate",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000, help="studies per scenario")
    parser.add_argument("--seeds-min", type=int, default=None, help="default 3")
    parser.add_argument("--seeds-step", type=int, default=None, help="default 2")
    parser.add_argument("--seeds-max", type=int, default=None,
                        help="default 15; with --records-only the report's own design")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", type=Path, default=RECORDS,
                        help="a report.json whose ring8/grid25 mode counts are resampled")
    parser.add_argument("--records-only", action="store_true",
                        help="only the report's own counts: each class pooled (no effect) and "
                             "its baseline against each variant; no seeds-to-decide table")
    args = parser.parse_args(argv)
    if not args.records.is_file():
        parser.error(f"--records {args.records}: no such file (a report.json of "
                     "python -m ganlab.compare)")
    given = (args.seeds_min, args.seeds_step, args.seeds_max)
    tables = modes_tables(args.records) if args.records_only else None  # read once
    if tables == []:
        parser.error(f"--records {args.records}: no eval/modes_covered table to resample")
    design = records_design(tables) if tables and given == (None,) * 3 else None
    design = design or Design.sequential(args.seeds_min or 3, args.seeds_step or 2,
                                         args.seeds_max or 15)
    print(f"{design.describe()}; {args.studies} studies per scenario; a baseline and two "
          f"variants each; alpha {ALPHA}, {POWER:.0%} power", flush=True)
    for s in (records_scenarios(tables) if args.records_only
              else scenarios(args.records)):
        rng, start = np.random.default_rng(args.seed), time.time()
        outcomes = []
        for i in range(args.studies):
            outcomes.append(run_study(s, design, rng))
            if (i + 1) % max(1, args.studies // 4) == 0:
                print(f"  {s.name}: {i + 1}/{args.studies} studies", file=sys.stderr,
                      flush=True)
        print(_line(summarise(s, outcomes), time.time() - start), flush=True)
    if args.records_only:
        return 0
    print("seeds to decide a true effect (normal, paired sd 1) vs a fixed design of the same "
          "power:", flush=True)
    for row in efficiency(design, EFFECTS, args.studies, args.seed):
        print(f"  {row['scenario']}: power {row['v1.power']:.2f}, {row['v1.seeds']:.1f} "
              f"seeds vs {row['v1.fixed_seeds']} fixed: ratio {row['v1.ratio']:.2f}",
              flush=True)
    return 0


def _line(r: dict, seconds: float) -> str:
    parts = [f"{r['scenario']}:"]
    if r["false_better_worse"] is not None:
        parts.append(f"false better/worse {r['false_better_worse']:.3f}")
    if r["false_equivalent"] is not None:
        parts.append(f"false equivalent {r['false_equivalent']:.3f}")
    parts.append(f"coverage {r['coverage']:.3f}")
    for k in [k for k in r if k.endswith(".power")]:
        v = k.split(".")[0]
        parts.append(f"{v}: power {r[k]:.2f}, {r[f'{v}.seeds']:.1f} seeds")
        if f"{v}.ratio" in r:
            parts.append(f"fixed {r[f'{v}.fixed_seeds']}, ratio {r[f'{v}.ratio']:.2f}")
    parts.append(f"{r['mean_runs']:.1f} runs per study ({seconds:.0f} s)")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
