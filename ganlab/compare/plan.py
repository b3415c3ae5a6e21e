"""The sequential rule, as one pure function over records: what a staged sweep runs next.

`plan(results)` reads nothing but the records (no training, no torch): it decides the primary
metric's verdicts under the study's design (ganlab.compare.verdicts) and, for every variant
whose verdict is still open and whose paired seeds are below the design's maximum, names the
seeds that take it to its next look, with the baseline's seeds that pair with them. A sweep
with `fanout.seeds=auto` calls it after each stage (ganlab.sweeper); `python -m
ganlab.compare DIR --plan [--json]` prints it, so a cluster user can submit the next stage by
hand, and tests can drive the rule on synthetic records.

Seeds are taken in order, skipping a seed whose run failed or diverged on either side of a
pair (it can never pair); a seed whose run was interrupted is named again, since relaunching
it resumes it, and so is one whose run failed before its first round (data missing, a full
disk: it says nothing of the trick, and a relaunch replaces it, ganlab.launch). A variant
stops at `seeds_max` runs, whatever became of them.
"""

from __future__ import annotations

import heapq
import math
from pathlib import Path

from ganlab.compare.rows import duplicate_lines, duplicate_records, pending_words
from ganlab.compare.stats import Design
from ganlab.compare.tables import (
    Row,
    Table,
    build_tables,
    default_metric,
    study_design,
)
from ganlab.cores import available_cores
from ganlab.metrics import Effect, metric_key
from ganlab.result import launches_of
from ganlab.stops import duration

# the defaults of fanout.seeds_min / seeds_step / seeds_max (ganlab.config.FanoutConfig)
DEFAULT_DESIGN = (3, 2, 15)
BAD = ("failed", "diverged")  # a seed with such a run never pairs
ENDED = ("completed", *BAD)  # runs spent from a variant's budget of seeds_max
# overrides a by-hand command must not repeat: the seeds of a stacked job (the seed list
# replaces them) and Hydra's own (the command names its sweep dir). The launcher and its
# fanout.* settings stay, so the stage runs where and as its first stage did.
_NOT_REPEATED = ("fanout.group_seeds", "hydra.")


def resolve_design(results, design: Design | None = None) -> tuple[Design, str]:
    """The design to plan with and where it came from."""
    if design is not None:
        return design, "given"
    recorded = study_design(results)
    if recorded is not None:
        return recorded, "recorded"
    return Design.sequential(*DEFAULT_DESIGN), "default"


def plan(results, *, metric: str | None = None, baselines: list[dict] | None = None,
         design: Design | None = None, effects: dict[str, Effect] | None = None,
         scales: dict[str, str] | None = None, match: str = "final") -> dict:
    """The next stage of a staged study (module docstring), as a JSON-able dict:
    `decided` (nothing more to run anywhere), `add_seeds` ([{class, variant, seeds, ...}]),
    `variants` (each one's verdict and seeds), `design`, `pending` (cells the sweep planned
    that have no record yet: counted in Holm's family, planned for once they have) and
    `lines` (for a reader)."""
    design, source = resolve_design(results, design)
    metric = metric_key(metric) if metric else default_metric(results)
    tables = build_tables(results, metric, match, baselines, scales, design=design,
                          effects=effects, details=False)
    variants, wanted = [], {}
    for t in tables:
        base = next(r for r in t.rows if r.is_baseline)
        for row in t.rows:
            target = None if row.is_baseline else _target(row, design)
            variants.append(_variant_record(t, row, design, target))
            if target is None:
                continue
            seeds = _next_seeds(row, base, target)
            for r in (row, base):
                missing = [s for s in seeds if s not in _completed(r)]
                if missing:
                    wanted.setdefault((t.class_label, id(r)), (t, r, set()))[2].update(missing)
    add = [_entry(t, r, sorted(seeds)) for t, r, seeds in wanted.values()]
    # slowest cells first: a launcher that packs jobs onto slots in order then ends the stage
    # with short runs, not with one long run alone (cells with no finished run go last)
    add.sort(key=lambda e: -e["seconds"] if e["seconds"] is not None else math.inf)
    pending = tables[0].pending if tables else []  # as build_tables counted them
    out = {"decided": not add and not pending, "metric": metric,
           "design": {"looks": list(design.looks), "min": design.looks[0],
                      "max": design.seeds_max, "source": source},
           "variants": variants, "add_seeds": add, "pending": pending}
    # a seed two runs of a variant trained pairs once, by its first run: say so
    out["lines"] = plan_lines(out) + duplicate_lines(
        [e for t in tables for r in t.rows for e in duplicate_records(r.label, r.duplicates)])
    return out


def _target(row: Row, design: Design) -> int | None:
    """The paired seeds of an open row's next look; None when decided or at the maximum
    (in paired seeds, or in runs: seeds that failed or diverged count against the budget,
    so a variant that always fails is not given seeds forever)."""
    ended = sum(r["status"] in ENDED for r in row.runs)  # an interrupted run will resume
    if row.decided or ended >= design.seeds_max:
        return None
    return design.next_look(row.pairs)


def _completed(row: Row) -> set[int]:
    return {r["seed"] for r in row.runs if r["status"] == "completed"}


def failed_at_start(record: dict) -> bool:
    """A run that failed before training a round or scoring anything: a relaunch replaces it."""
    return (record["status"] == "failed" and not record.get("history")
            and not record.get("step"))


def _next_seeds(row: Row, base: Row, count: int) -> list[int]:
    """The first `count` seeds, in order, that neither side has failed (once training) or
    diverged on."""
    bad = {r["seed"] for r in (*row.runs, *base.runs)
           if r["status"] in BAD and not failed_at_start(r)}
    seeds, s = [], 0
    while len(seeds) < count:
        if s not in bad:
            seeds.append(s)
        s += 1
    return seeds


def _cell(row: Row) -> tuple[str | None, str | None, list[str] | None]:
    """(sweep dir, cell folder, overrides without the seed) of a variant's runs."""
    runs = [r for r in row.runs if r.get("run_dir")]
    if not runs:
        return None, None, None
    run_dir = Path(runs[0]["run_dir"])
    overrides = runs[0].get("overrides")
    return str(run_dir.parent.parent), run_dir.parent.name, overrides


def run_seconds(record: dict) -> float | None:
    """The seconds a run's launches took from start to end (training and evaluation: what a
    launcher waits on), else its training clock; None when its record says neither. A launch
    killed before it could write its end has no span: then the larger of the known spans and
    the training clock (which counts the killed launch's training up to its checkpoint)."""
    launches = launches_of(record)
    spans = [la["ended"] - la["started"] for la in launches
             if la.get("ended") is not None and la.get("started") is not None]
    spanned = float(sum(spans)) if spans else None
    if spanned is not None and len(spans) == len(launches):
        return spanned
    history = record.get("history") or []
    clock = float(history[-1]["wall_s"]) if history and "wall_s" in history[-1] else None
    known = [x for x in (spanned, clock) if x is not None]
    return max(known) if known else None


def _seconds(row: Row) -> float | None:
    """The mean seconds of a variant's completed runs (None without one)."""
    known = [s for r in row.runs if r["status"] == "completed"
             for s in [run_seconds(r)] if s is not None]
    return round(sum(known) / len(known), 1) if known else None


def _entry(t: Table, row: Row, seeds: list[int]) -> dict:
    sweep_dir, cell, overrides = _cell(row)
    return {"class": t.class_label, "variant": row.label, "baseline": row.is_baseline,
            "seeds": seeds, "sweep_dir": sweep_dir, "cell": cell, "overrides": overrides,
            "seconds": _seconds(row)}


def _variant_record(t: Table, row: Row, design: Design, target: int | None) -> dict:
    return {"class": t.class_label, "variant": row.label, "baseline": row.is_baseline,
            "verdict": row.verdict, "decided": row.is_baseline or row.decided,
            "at_maximum": not row.is_baseline and not row.decided and target is None,
            "pairs": row.pairs, "stage": row.stage, "next_look": target,
            "more_seeds": row.more_seeds, "answer": row.answer}


def _kept(entry: dict) -> list[str]:
    return [o for o in entry["overrides"] if not o.lstrip("+~").startswith(_NOT_REPEATED)]


def _train(overrides: list[str], seeds: list[int], sweep_dir: str) -> str:
    return (f"python -m ganlab.train -m {' '.join(overrides)} seed={','.join(map(str, seeds))} "
            f"hydra.sweep.dir={sweep_dir}")


def commands(entries: list[dict]) -> list[str]:
    """The train commands of a stage, as few as the records allow: entries into one sweep
    with the same seeds whose overrides differ only in the values of some keys, and whose
    cells are every combination of those values, become one multirun over those keys
    (`norm.g=none,batch`; `train.d_steps=1,2 model.width_ratio=0.5,1.0`), so a launcher
    packs the whole stage instead of waiting on each cell's slowest run; any other entry
    keeps its own command, and one whose records do not say how its cell was launched
    (no overrides) gets none. A merged sweep lists each key's values slowest first (by the
    mean `seconds` of the cells holding the value, where entries say), since a multirun runs
    its cells in that order."""
    groups: dict[tuple, tuple[list[list[str]], list[float | None]]] = {}
    for e in entries:
        if e["overrides"] is not None:
            sets, costs = groups.setdefault((e["sweep_dir"], tuple(e["seeds"])), ([], []))
            sets.append(_kept(e))
            costs.append(e.get("seconds"))
    out = []
    for (sweep_dir, seeds), (sets, costs) in groups.items():
        merged = _merge(sets, costs)
        out += [_train(o, list(seeds), sweep_dir) for o in ([merged] if merged else sets)]
    return list(dict.fromkeys(out))


def _merge(sets: list[list[str]], costs: list[float | None]) -> list[str] | None:
    """One override list whose sweep is exactly the cells `sets` name, or None; each key's
    values ordered by the mean of the cells' `costs` holding them, highest first (unknown
    costs count for nothing; ties keep the cells' order)."""
    if len(sets) < 2 or len({len(s) for s in sets}) > 1:
        return None
    split = [[o.split("=", 1) if "=" in o else [o, None] for o in s] for s in sets]
    if len({tuple(k for k, _ in s) for s in split}) > 1:
        return None  # not the same keys in the same order
    differ = [i for i in range(len(split[0])) if len({s[i][1] for s in split}) > 1]
    cells = {tuple(s[i][1] for i in differ) for s in split}
    values = {i: list(dict.fromkeys(s[i][1] for s in split)) for i in differ}
    if len(cells) != len(sets) or len(cells) != math.prod(map(len, values.values())):
        return None  # a cell named twice, or not every combination: a sweep would add cells
    if any(v is None or any(c in v for c in ",[]{}()'\" \\") for vs in values.values()
           for v in vs):
        return None  # a value Hydra's sweep syntax would read as a list or need quoted
    merged = list(sets[0])
    for i in differ:
        by_value: dict[str, list[float]] = {}
        for s, c in zip(split, costs, strict=True):
            if c is not None:
                by_value.setdefault(s[i][1], []).append(c)
        order = sorted(values[i], key=lambda v: -sum(by_value[v]) / len(by_value[v])
                       if v in by_value else math.inf)
        merged[i] = f"{split[0][i][0]}={','.join(order)}"
    return merged


def plan_lines(p: dict) -> list[str]:
    """The plan for a reader: a line per variant, then the runs to add and how."""
    d = p["design"]
    source = {"given": "given on the command line", "recorded": "recorded by the sweep",
              "default": "no design recorded: the defaults fanout.seeds_min/step/max"}
    lines = [f"plan for {p['metric']}: analyses at {', '.join(map(str, d['looks']))} paired "
             f"seeds ({source[d['source']]})"]
    adding = {(e["class"], e["variant"]): e["seeds"] for e in p["add_seeds"]}
    classes = len({v["class"] for v in p["variants"]})
    for v in p["variants"]:
        where = f"[{v['class']}] " if classes > 1 else ""
        seeds = adding.get((v["class"], v["variant"]))
        nxt = f"; next: seeds {', '.join(map(str, seeds))}" if seeds else ""
        if v["baseline"]:
            lines.append(f"  {where}{v['variant']} (baseline){nxt or ': nothing to add'}")
        elif v["decided"]:
            lines.append(f"  {where}{v['answer']}")
        elif v["at_maximum"]:
            lines.append(f"  {where}{v['answer']} (at the design's maximum of {d['max']} "
                         "seeds: it stays open)")
        else:
            lines.append(f"  {where}{v['answer']}{nxt}")
    if p.get("pending"):
        lines.append(pending_words(p["pending"]))
    if p["decided"]:
        still = sum(v["at_maximum"] for v in p["variants"])
        lines.append("decided: nothing more to run" if not still else
                     f"nothing more to run: {still} verdict(s) stay open at the design's "
                     f"maximum of {d['max']} seeds")
    elif not p["add_seeds"]:
        lines.append("nothing to add until the planned cells' runs have ended")
    else:
        runs = sum(len(e["seeds"]) for e in p["add_seeds"])
        lines.append(f"next stage: {runs} run(s)")
        cmds = commands(p["add_seeds"])
        lines += [f"  {c}" for c in cmds] + pace_lines(p["add_seeds"], cmds)
    return lines


def makespan(seconds: list[float], at_once: int) -> float:
    """How long runs of these `seconds` take, `at_once` at a time, started in this order
    (each on the first free slot, as joblib hands out a sweep's jobs)."""
    slots = [0.0] * max(1, min(at_once, len(seconds)))
    for s in seconds:
        heapq.heapreplace(slots, slots[0] + s)
    return max(slots)


def pace_lines(entries: list[dict], cmds: list[str], cores: int | None = None) -> list[str]:
    """For a stage that is one joblib command with `fanout.n_jobs` given: about how long it
    takes (each cell's mean run time so far; omitted where a cell has none), and, where it
    would run fewer at a time than it has runs and this machine has cores, what a larger
    `fanout.n_jobs` would take. Those run times were measured at whatever else shared the
    cores then: an estimate, not a promise."""
    words = cmds[0].split() if len(cmds) == 1 else []
    n_jobs = next((w.split("=", 1)[1] for w in words if w.startswith("fanout.n_jobs=")), "")
    if "launcher=joblib" not in words or not n_jobs.isdigit():
        return []
    at_once = max(1, int(n_jobs))
    seconds = [e.get("seconds") for e in entries if e.get("overrides") is not None
               for _ in e["seeds"]]
    known = bool(seconds) and all(s is not None for s in seconds)

    def took(n: int) -> str:
        return f", about {duration(makespan(seconds, n))}" if known else ""

    source = ", from each cell's mean run time so far" if known else ""
    out = [f"  ({len(seconds)} run(s), {at_once} at a time{took(at_once)}{source})"]
    cores = available_cores() if cores is None else cores
    best = min(len(seconds), cores)
    if at_once < best:
        out.append(f"  this machine has {cores} cores: fanout.n_jobs={best} runs {best} at a "
                   f"time{took(best)} (each run then gets {cores // best} thread(s))")
    return out
