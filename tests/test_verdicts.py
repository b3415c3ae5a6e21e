"""Decisions, not only reports: the sequential design's error rate, bounded intervals,
equivalence within δ, one family across classes, exact zeros, and the plan that says which
seeds to add. Known values by hand or from scipy; error rates and coverage by simulation."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from scipy import stats

from ganlab.compare.__main__ import main
from ganlab.compare.plan import plan
from ganlab.compare.runs import load_results
from ganlab.compare.stats import (
    Design,
    bounded_interval,
    detectable,
    sd_upper,
    t_interval,
    tie_pvalue,
    tie_share,
)
from ganlab.compare.tables import build_tables
from ganlab.storage import atomic_write_json

RING = {"labels": "none", "data.name": "ring8", "data.num_classes": 8, "model.name": "mlp",
        "eval": {"metrics": "modes2d", "num_samples": 2500}}


def _write(root, variant: str, seed: int, metrics: dict, comparability=None, study=None,
           status="completed", overrides=None, step=10, host=None):
    atomic_write_json(root / variant / f"seed={seed}" / "result.json", {"host": host or {},
        "status": status, "error": None, "seed": seed, "trick": {},
        "hparams": {"study.variant": variant}, "comparability": comparability or RING,
        "metrics": metrics if status == "completed" else {}, "history": [], "step": step,
        "study": {"name": "t", "baselines": ["study.variant=base"], **(study or {})},
        "overrides": overrides})


def _null_crossings(design: Design, alpha: float, studies: int, rng) -> float:
    """The share of normal studies without an effect that cross a boundary at some look."""
    x = rng.standard_normal((studies, design.seeds_max))
    hit = np.zeros(studies, bool)
    for k, n in enumerate(design.looks):
        y = x[:, :n]
        t = np.abs(y.mean(1)) / (y.std(1, ddof=1) / math.sqrt(n))
        hit |= 2 * stats.t.sf(t, n - 1) <= design.nominal(k, alpha)
    return float(hit.mean())


# -- the design ---------------------------------------------------------------------------------
def test_the_sequential_design_spends_exactly_alpha_over_its_looks():
    design = Design.sequential(3, 2, 15)
    assert design.looks == (3, 5, 7, 9, 11, 13, 15)
    # the first look's boundary is the exact t quantile of the share alpha(t) spends there
    spent = 0.05 * (3 / 15) ** 1.5  # alpha t^1.5 at t = 3 / 15
    assert design.nominal(0, 0.05) == pytest.approx(spent)
    # 100,000 null studies: 5 % cross some look (sd of the estimate 0.07 %); the shortcut of
    # converting the z-test's boundaries look by look would give 5.5-6 %
    rate = _null_crossings(design, 0.05, 100_000, np.random.default_rng(1))
    assert rate == pytest.approx(0.05, abs=0.0025)
    # every look alone is held to less than alpha: that is the price of looking often
    assert all(design.nominal(k, 0.05) < 0.05 for k in range(design.stages))


def test_a_fixed_design_is_the_ordinary_test():
    design = Design.fixed(5)
    assert design.looks == (5,) and design.nominal(0, 0.05) == 0.05
    assert design.repeated_p([0.031]) == pytest.approx(0.031)
    assert Design.sequential(3, 4, 9).looks == (3, 7, 9)  # the maximum is always a look


def test_the_repeated_p_value_is_the_level_at_which_a_look_crosses():
    design = Design.sequential(3, 2, 11)
    for k in range(design.stages):
        p = design.nominal(k, 0.05)
        pvalues = [1.0] * k + [p]
        assert design.repeated_p(pvalues) == pytest.approx(0.05, rel=0.02)
    assert design.repeated_p([0.5, 0.9]) > 0.05


# -- bounded metrics ---------------------------------------------------------------------------
def test_a_bounded_mean_never_leaves_its_range_and_ties_are_never_certain():
    # the example: ring8 baseline 6.67 [2.87, 10.5] has an upper end past 8 modes
    lo, hi = bounded_interval([5, 7, 8], 0, 8)
    assert hi == 8 and lo == pytest.approx(t_interval([5, 7, 8])[0])
    # all three seeds at 8/8: the exact interval of any distribution on [0, 8]
    q = 1 - 0.025 ** (1 / 3)
    assert tie_share(3, 0.95) == pytest.approx(q)
    assert bounded_interval([8, 8, 8], 0, 8) == pytest.approx((8 - 8 * q, 8))
    assert bounded_interval([8] * 10, 0, 8)[0] > bounded_interval([8] * 3, 0, 8)[0]


def test_the_tie_interval_covers_where_the_t_interval_collapses():
    # mode counts at the ceiling 90 % of the time: three seeds all at 8 happen 73 % of the
    # time, and the t interval [8, 8] then misses the true mean 7.9
    rng = np.random.default_rng(0)
    studies = rng.choice([8.0, 7.0], p=[0.9, 0.1], size=(4000, 3))
    t_hits = np.mean([(ci := t_interval(s))[0] <= 7.9 <= ci[1] for s in studies])
    hits = np.mean([(ci := bounded_interval(s, 0, 8))[0] <= 7.9 <= ci[1] for s in studies])
    assert t_hits < 0.3 and hits >= 0.95


def test_a_constant_difference_gets_the_bounded_test_and_goes_through_holm(tmp_path):
    # ring8: variant one mode above the baseline on every seed; differences lie in [-8, 8]
    assert tie_pvalue(1.0, 3, -8, 8) == pytest.approx(min(1, 2 * (8 / 9) ** 3))
    assert tie_pvalue(0.0, 3, -8, 8) == 1.0
    for seed in range(3):
        _write(tmp_path, "base", seed, {"eval/modes_covered": 6})
        _write(tmp_path, "up", seed, {"eval/modes_covered": 7})
    (t,) = build_tables(load_results([tmp_path]), "modes_covered")
    row = t.rows[1]
    assert row.p == 1.0 and row.verdict == "no clear difference"  # not "better, no test"
    assert row.delta_ci[0] < 0 < row.delta_ci[1]
    assert -8 <= row.delta_ci[0] and row.delta_ci[1] <= 8


def test_table_intervals_stay_in_range_and_say_all_seeds_at_the_maximum(tmp_path, capsys):
    for seed, (a, b) in enumerate([(8, 5), (8, 7), (8, 8)]):
        _write(tmp_path, "base", seed, {"eval/modes_covered": a, "eval/hq_pct": 99.0 + seed})
        _write(tmp_path, "v", seed, {"eval/modes_covered": b, "eval/hq_pct": 1.0 + seed})
    results = load_results([tmp_path])
    (t,) = build_tables(results, "modes_covered")
    base, v = t.rows
    assert base.at_bound == "maximum" and base.ci[1] == 8 and base.ci[0] < 8
    assert v.ci[1] <= 8 and v.ci[0] >= 0
    (hq,) = build_tables(results, "hq_pct")
    assert hq.rows[0].ci[1] <= 100 and hq.rows[1].ci[0] >= 0
    assert main([str(tmp_path), "--metric", "modes_covered", "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert "8 (all at max)" in out
    # the answer comes first: one line per variant, then the class and its budget
    assert out.index("Answer:") < out.index("  v: ") < out.index("class [") < out.index(
        "budget: 10 rounds")
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Answer") < md.index("- v: ") < md.index("## Class:")
    assert "budget: 10 rounds" in md
    assert "base: the baseline, modes covered 8 (n = 3; all 3 seeds at the maximum)" in md


# -- equivalence, δ ---------------------------------------------------------------------------
def _close_pairs(root, n: int, spread: float = 0.05, shift: float = 0.0):
    rng = np.random.default_rng(n)
    for seed in range(n):
        b = 50 + rng.normal()
        _write(root, "base", seed, {"eval/hq_pct": b})
        _write(root, "v", seed, {"eval/hq_pct": b + shift + spread * rng.normal()})


def test_an_interval_inside_plus_minus_delta_is_equivalent(tmp_path, capsys):
    _close_pairs(tmp_path, 6)
    (t,) = build_tables(load_results([tmp_path]), "hq_pct")
    v = t.rows[1]
    assert str(t.effect) == "5" and v.effect == 5  # the registry's δ: 5 points of HQ %
    assert v.verdict == "equivalent" and v.decided and v.within_delta
    assert -5 < v.delta_ci[0] and v.delta_ci[1] < 5
    # a tighter δ on the command line leaves it open, with the seeds it would take
    assert main([str(tmp_path), "--metric", "hq_pct", "--delta", "hq_pct=0.01", "--no-wandb"]) \
        == 0
    out = capsys.readouterr().out
    assert "v: not decided: no clear difference" in out
    assert "more paired seeds would detect δ = 0.01" in out
    assert main([str(tmp_path), "--delta", "hq_pct=x", "--no-wandb"]) == 2
    assert "--delta 'hq_pct=x'" in capsys.readouterr().err


def test_a_study_declares_its_own_delta(tmp_path):
    rng = np.random.default_rng(3)
    for seed in range(6):
        b = 50 + rng.normal()
        _write(tmp_path, "base", seed, {"eval/hq_pct": b},
               study={"smallest_effect": {"hq_pct": "0.001"}})
        _write(tmp_path, "v", seed, {"eval/hq_pct": b + 0.05 * rng.normal()},
               study={"smallest_effect": {"hq_pct": "0.001"}})
    (t,) = build_tables(load_results([tmp_path]), "hq_pct")
    assert str(t.effect) == "0.001" and t.rows[1].verdict == "no clear difference"


def test_a_difference_smaller_than_delta_is_better_and_says_so(tmp_path):
    _close_pairs(tmp_path, 6, spread=0.05, shift=0.5)
    (t,) = build_tables(load_results([tmp_path]), "hq_pct")
    v = t.rows[1]
    assert v.verdict == "better" and v.within_delta
    assert "smaller than δ = 5" in v.answer


# -- one family across classes; exploratory metrics -------------------------------------------
def test_the_primary_metric_is_corrected_across_every_class(tmp_path):
    grid = {**RING, "data.name": "grid25", "data.num_classes": 25}
    rng = np.random.default_rng(7)
    for seed in range(4):
        for comp, root in ((RING, tmp_path / "ring"), (grid, tmp_path / "grid")):
            b = 50 + rng.normal()
            _write(root, "base", seed, {"eval/hq_pct": b}, comparability=comp)
            _write(root, "v", seed, {"eval/hq_pct": b + 3 + 0.9 * rng.normal()},
                   comparability=comp)
    results = load_results([tmp_path])
    tables = build_tables(results, "hq_pct")
    assert len(tables) == 2 and all(t.tests == 2 for t in tables)  # one family of two
    alone = [build_tables(r, "hq_pct")[0] for r in
             (load_results([tmp_path / "ring"]), load_results([tmp_path / "grid"]))]
    assert all(t.tests == 1 for t in alone)
    for together, single in zip(tables, alone, strict=True):
        assert together.rows[1].p_holm >= single.rows[1].p_holm  # corrected for both classes


def test_other_metrics_are_labelled_exploratory(tmp_path, capsys):
    _close_pairs(tmp_path, 4)
    for seed in range(4):  # add a second metric to each record
        for variant in ("base", "v"):
            path = tmp_path / variant / f"seed={seed}" / "result.json"
            record = json.loads(path.read_text())
            record["metrics"]["eval/reverse_kl"] = 0.1 + 0.01 * seed
            atomic_write_json(path, record)
    assert main([str(tmp_path), "--metric", "hq_pct", "--no-wandb"]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    families = [t["family"] for t in doc["classes"][0]["tables"]]
    assert families[0] == "primary" and set(families[1:]) == {"exploratory"}
    assert "(exploratory)" in (tmp_path / "report.md").read_text()


# -- exact zeros on log scales ------------------------------------------------------------------
def test_exact_zeros_are_said_as_such_never_a_floored_ratio(tmp_path, capsys):
    for seed in range(3):
        _write(tmp_path, "base", seed, {"eval/coupling": 0.0, "eval/hq_pct": 50.0 + seed})
        _write(tmp_path, "none_too", seed, {"eval/coupling": 0.0, "eval/hq_pct": 51.0 + seed})
    (t,) = build_tables(load_results([tmp_path]), "coupling")
    row = t.rows[1]
    assert t.all_zero and row.verdict == "both exactly 0 on every seed" and row.decided
    assert row.delta is None and row.p is None
    assert main([str(tmp_path), "--metric", "hq_pct", "--no-wandb"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "Exactly 0 on every seed of every variant: batch coupling." in md
    assert "e-10" not in md and "e-12" not in md


def test_a_zero_on_one_side_compares_differences_not_ratios(tmp_path):
    for seed, value in enumerate([0.011, 0.02, 0.017]):
        _write(tmp_path, "base", seed, {"eval/coupling": value})
        _write(tmp_path, "virtual", seed, {"eval/coupling": 0.0})
    (t,) = build_tables(load_results([tmp_path]), "coupling")
    assert t.metric.scale == "linear" and "exactly 0" in t.scale_note
    row = t.rows[1]
    assert row.delta == pytest.approx(-np.mean([0.011, 0.02, 0.017]))


# -- the detectable effect is conservative ------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5])
def test_a_study_run_at_the_stated_detectable_effect_decides_with_the_stated_power(n):
    # pilot studies state a detectable Δ; a new study of n seeds at that true effect must
    # decide at least 80 % of the time on average (the sample SD alone gave 57 %)
    rng = np.random.default_rng(n)
    alpha, decided, plain = 0.05, [], []
    for _ in range(600):
        pilot = rng.standard_normal(n)
        for sd, out in ((sd_upper(pilot.std(ddof=1), n), decided), (pilot.std(ddof=1), plain)):
            delta = detectable(sd, n, alpha)
            study = rng.normal(delta, 1.0, (40, n))
            t = study.mean(1) / (study.std(1, ddof=1) / math.sqrt(n))
            out.append(np.mean(2 * stats.t.sf(np.abs(t), n - 1) <= alpha))
    assert np.mean(decided) >= 0.8 and np.mean(plain) < 0.75


# -- the plan -----------------------------------------------------------------------------------
def _stage1(root, design=None, values=None):
    design = design or {"min": 3, "step": 2, "max": 7}
    values = values or {"base": [6, 7, 8], "same": [6, 8, 7], "up": [7, 8, 8]}
    for variant, vals in values.items():
        for seed, v in enumerate(vals):
            _write(root, variant, seed, {"eval/modes_covered": v},
                   study={"design": design, "metric": "modes_covered"},
                   overrides=[f"+study.variant={variant}", "fanout.seeds=auto"])


def test_the_plan_adds_seeds_only_where_a_verdict_is_open(tmp_path):
    _stage1(tmp_path)
    found = plan(load_results([tmp_path]))
    assert found["decided"] is False and found["design"]["looks"] == [3, 5, 7]
    adds = {e["variant"]: e["seeds"] for e in found["add_seeds"]}
    assert adds == {"same": [3, 4], "up": [3, 4], "base": [3, 4]}
    assert all(not v["decided"] for v in found["variants"] if not v["baseline"])
    base = next(e for e in found["add_seeds"] if e["variant"] == "base")
    assert base["baseline"] and base["cell"] == "base"
    # one multirun for the stage: the cells differ in one key, so a launcher packs them all
    (train,) = [line.strip() for line in found["lines"] if "ganlab.train" in line]
    assert train == (f"python -m ganlab.train -m +study.variant=same,base,up fanout.seeds=auto "
                     f"seed=3,4 hydra.sweep.dir={tmp_path}")


def test_a_decided_variant_gets_no_more_seeds(tmp_path):
    # "far" is far above the baseline on every seed, with a spread: better at stage 2
    values = {"base": [10, 12, 11, 13, 12], "far": [20, 21, 23, 22, 24],
              "near": [10, 13, 11, 12, 13]}
    for variant, vals in values.items():
        for seed, v in enumerate(vals):
            _write(tmp_path, variant, seed, {"eval/modes_covered": v},
                   comparability={**RING, "data.num_classes": 25},
                   study={"design": {"min": 3, "step": 2, "max": 9}})
    found = plan(load_results([tmp_path]))
    verdicts = {v["variant"]: v for v in found["variants"]}
    assert verdicts["far"]["verdict"] == "better" and verdicts["far"]["stage"] in (1, 2)
    adds = {e["variant"]: e["seeds"] for e in found["add_seeds"]}
    assert "far" not in adds and adds["near"] == [5, 6] and adds["base"] == [5, 6]


def test_failed_seeds_are_skipped_and_interrupted_ones_named_again(tmp_path):
    _stage1(tmp_path)
    _write(tmp_path, "up", 3, {}, status="failed")
    _write(tmp_path, "same", 3, {}, status="interrupted")
    found = plan(load_results([tmp_path]))
    adds = {e["variant"]: e["seeds"] for e in found["add_seeds"]}
    # seed 3 never pairs for "up" (its run failed): its next look takes seeds 4 and 5
    assert adds["up"] == [4, 5] and adds["same"] == [3, 4]
    assert adds["base"] == [3, 4, 5]
    # seeds that differ between variants: a command each
    trains = [line.strip() for line in found["lines"] if "ganlab.train" in line]
    assert sorted(t.split()[4] + " " + t.split()[6] for t in trains) == [
        "+study.variant=base seed=3,4,5", "+study.variant=same seed=3,4",
        "+study.variant=up seed=4,5"]


def test_a_seed_whose_run_failed_before_training_is_named_again(tmp_path):
    # stage 2 launched without its data: both seeds fail at their start, before any round;
    # they say nothing of the trick, and a relaunch replaces them, so the plan asks again
    _stage1(tmp_path)
    for variant in ("base", "same", "up"):
        for seed in (3, 4):
            _write(tmp_path, variant, seed, {}, status="failed", step=0)
    found = plan(load_results([tmp_path]))
    adds = {e["variant"]: e["seeds"] for e in found["add_seeds"]}
    assert adds == {"same": [3, 4], "up": [3, 4], "base": [3, 4]}
    # one that failed once training had begun never pairs: its seed is passed over
    _write(tmp_path, "up", 3, {}, status="failed", step=400)
    adds = {e["variant"]: e["seeds"] for e in plan(load_results([tmp_path]))["add_seeds"]}
    assert adds["up"] == [4, 5] and adds["base"] == [3, 4, 5]


def test_stage_commands_merge_only_cells_that_make_a_whole_grid_of_plain_values():
    from ganlab.compare.plan import commands

    def entry(overrides, seeds=(3, 4), sweep="s"):
        return {"overrides": overrides, "seeds": list(seeds), "sweep_dir": sweep}

    assert commands([entry(["norm.g=none", "model=dcgan_tiny"]),
                     entry(["norm.g=batch", "model=dcgan_tiny"])]) == [
        "python -m ganlab.train -m norm.g=none,batch model=dcgan_tiny seed=3,4 "
        "hydra.sweep.dir=s"]
    # every combination of two keys' values (a 2 x 2 grid of cells): one sweep over both
    grid = [entry([f"k={k}", f"w={w}", "data=ring8"]) for k in (1, 5) for w in (0.5, 2.0)]
    assert commands(grid) == ["python -m ganlab.train -m k=1,5 w=0.5,2.0 data=ring8 "
                              "seed=3,4 hydra.sweep.dir=s"]
    # two cells on a diagonal: a sweep over both keys would add the two others
    diagonal = [entry(["a=1", "b=1"]), entry(["a=2", "b=2"])]
    lists = [entry(["a=[1,2]", "b=1"]), entry(["a=3", "b=1"])]
    other_sweep = [entry(["a=1"]), entry(["a=2"], sweep="t")]
    unknown = [entry(None), entry(["a=1"])]
    for entries in (diagonal, lists, other_sweep):
        assert len(commands(entries)) == 2
    assert len(commands(grid[:3])) == 3  # three corners of the grid
    assert commands(unknown) == ["python -m ganlab.train -m a=1 seed=3,4 hydra.sweep.dir=s"]
    # the launcher and its settings are the stage's own: kept; a stacked job's seeds are not
    launched = [entry(["norm.g=none", "launcher=joblib", "fanout.n_jobs=2",
                       "fanout.group_seeds=[0,1]"]),
                entry(["norm.g=batch", "launcher=joblib", "fanout.n_jobs=2",
                       "fanout.group_seeds=[0,1]"])]
    assert commands(launched) == ["python -m ganlab.train -m norm.g=none,batch launcher=joblib "
                                  "fanout.n_jobs=2 seed=3,4 hydra.sweep.dir=s"]


def test_the_next_stage_runs_its_slowest_cells_first(tmp_path):
    from ganlab.compare.plan import commands, run_seconds

    # "up" took 900 s a run (two launches: killed once, resumed), "same" 300, base 600
    took = {"base": [(0, 600)], "same": [(0, 300)], "up": [(0, 500), (1000, 1400)]}
    for variant, vals in {"base": [6, 7, 8], "same": [6, 8, 7], "up": [7, 8, 8]}.items():
        for seed, v in enumerate(vals):
            launches = [{"started": a, "ended": b} for a, b in took[variant]]
            _write(tmp_path, variant, seed, {"eval/modes_covered": v},
                   study={"design": {"min": 3, "step": 2, "max": 7}},
                   overrides=[f"+study.variant={variant}", "fanout.seeds=auto"],
                   host={"launches": launches})
    found = plan(load_results([tmp_path]))
    # the auto sweeper launches its next stage in this order
    assert [(e["variant"], e["seconds"]) for e in found["add_seeds"]] == [
        ("up", 900.0), ("base", 600.0), ("same", 300.0)]
    (train,) = [line.strip() for line in found["lines"] if "ganlab.train" in line]
    assert "+study.variant=up,base,same " in train
    # a record from before launches were kept: its one host; without launches, a run's
    # training clock; without either, nothing
    assert run_seconds({"host": {"started": 10, "ended": 70}}) == 60.0
    assert run_seconds({"history": [{"wall_s": 12.5}]}) == 12.5 and run_seconds({}) is None
    # a launch killed before writing its end: its training is in the clock, not in a span
    killed = {"host": {"launches": [{"started": 0, "status": "running"},
                                    {"started": 5000, "ended": 5051, "status": "completed"}]},
              "history": [{"wall_s": 3512.0}]}
    assert run_seconds(killed) == 3512.0
    assert run_seconds({**killed, "history": []}) == 51.0  # no clock: the span it has

    # a grid: each key's values by the mean seconds of the cells holding them
    def entry(k, w, seconds):
        return {"overrides": [f"k={k}", f"w={w}"], "seeds": [3], "sweep_dir": "s",
                "seconds": seconds}
    grid = [entry(1, 0.5, 10), entry(1, 2.0, 50), entry(5, 0.5, 40), entry(5, 2.0, 100)]
    assert commands(grid) == ["python -m ganlab.train -m k=5,1 w=2.0,0.5 seed=3 "
                              "hydra.sweep.dir=s"]
    # unknown costs keep the cells' order
    assert commands([{**e, "seconds": None} for e in grid])[0].startswith(
        "python -m ganlab.train -m k=1,5 w=0.5,2.0 ")


def test_the_plan_says_how_long_its_stage_takes_and_what_more_runs_at_once_would_take(tmp_path):
    from ganlab.compare.plan import makespan, pace_lines

    # runs handed to the first free slot in the order given
    assert makespan([2090, 2090, 650, 650], 1) == 5480
    assert makespan([2090, 2090, 650, 650], 2) == 2740
    assert makespan([2090, 2090, 650, 650], 8) == 2090
    assert makespan([5, 3, 3, 3], 2) == 8  # 5 then 3 on one slot, 3 + 3 on the other
    cells = [{"overrides": ["k=5"], "seeds": [5, 6], "seconds": 2090.0},
             {"overrides": ["k=1"], "seeds": [5, 6], "seconds": 650.0}]
    one = ["python -m ganlab.train -m k=5,1 launcher=joblib fanout.n_jobs=1 seed=5,6 "
           "hydra.sweep.dir=s"]
    assert pace_lines(cells, one, cores=2) == [
        "  (4 run(s), 1 at a time, about 1 h 31 min, from each cell's mean run time so far)",
        "  this machine has 2 cores: fanout.n_jobs=2 runs 2 at a time, about 45 min 40 s "
        "(each run then gets 1 thread(s))"]
    two = [one[0].replace("n_jobs=1", "n_jobs=2")]
    assert pace_lines(cells, two, cores=2) == [
        "  (4 run(s), 2 at a time, about 45 min 40 s, from each cell's mean run time so far)"]
    assert pace_lines(cells, one, cores=1) == [  # no more cores: nothing to suggest
        "  (4 run(s), 1 at a time, about 1 h 31 min, from each cell's mean run time so far)"]
    unknown = [{**c, "seconds": None} for c in cells]
    assert pace_lines(unknown, one, cores=16) == [
        "  (4 run(s), 1 at a time)",
        "  this machine has 16 cores: fanout.n_jobs=4 runs 4 at a time (each run then gets 4 "
        "thread(s))"]
    # not one joblib command with its n_jobs given: nothing claimed
    assert pace_lines(cells, [one[0].replace("joblib", "slurm")], cores=2) == []
    assert pace_lines(cells, [one[0].replace(" fanout.n_jobs=1", "")], cores=2) == []
    assert pace_lines(cells, one * 2, cores=2) == []
    # in a plan: the stage's line follows its command
    _stage1(tmp_path)
    for variant in ("base", "same", "up"):
        for seed in range(3):
            path = tmp_path / variant / f"seed={seed}" / "result.json"
            record = json.loads(path.read_text())
            record["overrides"] += ["launcher=joblib", "fanout.n_jobs=1"]
            record["host"] = {"launches": [{"started": 0, "ended": 600}]}
            path.write_text(json.dumps(record))
    lines = plan(load_results([tmp_path]))["lines"]
    at = next(i for i, line in enumerate(lines) if "ganlab.train" in line)
    assert lines[at + 1] == ("  (6 run(s), 1 at a time, about 1 h 00 min, from each cell's "
                             "mean run time so far)")


def test_at_the_maximum_nothing_more_is_planned(tmp_path):
    _stage1(tmp_path, design={"min": 3, "step": 2, "max": 3})
    found = plan(load_results([tmp_path]))
    assert found["decided"] is True and found["add_seeds"] == []
    assert all(v["at_maximum"] for v in found["variants"] if not v["baseline"])


def test_plan_json_on_stdout_reads_no_torch(tmp_path):
    import subprocess

    _stage1(tmp_path)
    code = ("import sys, runpy; sys.argv = ['compare', sys.argv[1], '--plan', '--json']\n"
            "try:\n    runpy.run_module('ganlab.compare', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    found = json.loads(out.stdout)
    assert found["decided"] is False
    assert {"class", "variant", "seeds"} <= set(found["add_seeds"][0])
    assert found["add_seeds"][0]["class"] == json.loads(json.dumps(found))["variants"][0][
        "class"]


def test_a_variant_that_always_fails_stops_at_the_maximum_runs(tmp_path):
    _stage1(tmp_path, values={"base": [6, 7, 8, 6, 7], "broken": [6, 7, 8]})
    for seed in range(5):
        _write(tmp_path, "broken", seed, {}, status="failed",
               study={"design": {"min": 3, "step": 2, "max": 5}})
    found = plan(load_results([tmp_path]), design=Design.sequential(3, 2, 5))
    assert found["decided"] is True and found["add_seeds"] == []
    broken = next(v for v in found["variants"] if v["variant"] == "broken")
    assert broken["verdict"].startswith("too thin") and broken["at_maximum"]


# -- the rule in the loop (ganlab.compare.simulate; `make simulate` runs 1,000 studies each) --
def test_the_rule_in_the_loop_keeps_its_error_rate_and_coverage():
    from ganlab.compare.simulate import run_study, scenarios, summarise

    design = Design.sequential(3, 2, 9)
    studies = 120  # the rate's sd at 5 % is 2 %: a check for gross failures, in seconds
    for s in scenarios():
        if any(t != 0 for t in s.truth.values()) and "grid25" not in s.name:
            continue  # the effect scenarios' seeds are checked below
        rng = np.random.default_rng(11)
        r = summarise(s, [run_study(s, design, rng) for _ in range(studies)])
        assert r["false_better_worse"] <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / studies), r
        assert r["coverage"] >= 0.94 - 2.5 * math.sqrt(0.06 * 0.94 / (2 * studies)), r
        assert r["false_equivalent"] in (None, 0.0), r


def test_a_clear_effect_takes_fewer_seeds_than_a_fixed_design_of_the_same_power():
    from ganlab.compare.simulate import efficiency

    (big,) = efficiency(Design.sequential(3, 2, 15), [1.5], studies=120, seed=5)
    assert big["v1.power"] >= 0.95 and big["v1.ratio"] <= 0.7, big


def test_an_interrupted_run_at_the_maximum_is_resumed_not_counted_spent(tmp_path):
    _stage1(tmp_path, design={"min": 3, "step": 1, "max": 4})
    _write(tmp_path, "same", 3, {}, status="interrupted",
           study={"design": {"min": 3, "step": 1, "max": 4}})
    found = plan(load_results([tmp_path]))
    adds = {e["variant"]: e["seeds"] for e in found["add_seeds"]}
    assert adds["same"] == [3] and not found["decided"]


def test_a_committed_reports_own_counts_keep_the_intervals_coverage():
    """grid25 at 160,000 rounds: most seeds at the ceiling of 25, a few 5-11 below; the 3-5-7
    design's intervals must still cover the resampled truth."""
    from ganlab.compare.simulate import (
        REPO,
        modes_tables,
        records_scenarios,
        run_study,
        summarise,
    )

    found = records_scenarios(modes_tables(REPO / "experiments/smoothing/report_grid25_160k.json"))
    assert [s.name for s in found] == [
        "grid25 mode counts (pooled), no effect", "grid25 mode counts: none vs one_sided",
        "grid25 mode counts: none vs two_sided", "grid25 mode counts: none vs beta_only"]
    truths = [s.truth["v1"] for s in found]
    assert truths == pytest.approx([0.0, 3 / 7, -11 / 7, 20 / 7])  # the table's Δ column
    assert all(s.classes == 25 and s.truth["v2"] == 0 for s in found)
    design, studies = Design.sequential(3, 2, 7), 120
    for s in (found[0], found[2]):
        rng = np.random.default_rng(3)
        r = summarise(s, [run_study(s, design, rng) for _ in range(studies)])
        assert r["coverage"] >= 0.94 - 2.5 * math.sqrt(0.06 * 0.94 / (2 * studies)), r
        assert r["false_better_worse"] <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / studies), r


def test_records_only_reads_the_design_the_report_ran_and_refuses_a_missing_file(
        capsys, monkeypatch):
    from ganlab.compare.simulate import REPO, main, modes_tables, records_design

    smoothing = REPO / "experiments/smoothing/report_grid25_160k.json"
    assert records_design(modes_tables(smoothing)).looks == (3, 5, 7)
    fixed = REPO / "experiments/balance/report_g_steps.json"
    assert records_design(modes_tables(fixed)) is None  # a fixed design
    from ganlab.compare import simulate

    reads = []
    monkeypatch.setattr(simulate, "modes_tables",
                        lambda path, read=simulate.modes_tables: reads.append(path) or read(path))
    assert main(["--records-only", "--records", str(smoothing), "--studies", "2"]) == 0
    assert "analyses at 3, 5, 7 paired seeds" in capsys.readouterr().out
    assert reads == [smoothing]  # the report is read once, for its design and its counts
    with pytest.raises(SystemExit) as exit_:
        main(["--records-only", "--records", str(REPO / "no-such-report.json")])
    assert exit_.value.code == 2
    assert "--records" in capsys.readouterr().err
    fid_only = REPO / "experiments/salimans2016-mnist/report_tiny.json"  # MNIST: no modes
    with pytest.raises(SystemExit) as exit_:
        main(["--records-only", "--records", str(fid_only)])
    assert exit_.value.code == 2
    assert "no eval/modes_covered table" in capsys.readouterr().err
