"""Learning curves across seeds and the knee rule (ganlab.compare.curves)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from ganlab.compare.__main__ import main
from ganlab.compare.curves import KNEE_PCT, knee_line, row_curve
from ganlab.metrics import metric_info
from ganlab.storage import atomic_write_json


def _run(values: dict[int, float], num_samples: dict[int, int] | None = None,
         status: str = "completed", metric: str = "eval/fid") -> dict:
    return {"status": status, "history": [
        {"step": s, "num_samples": (num_samples or {}).get(s, 10000), "metrics": {metric: v}}
        for s, v in values.items()]}

FID = metric_info("eval/fid")

# three seeds: FID falls fast, then flattens; the last quarter is rounds 3000 -> 4000
FLAT = [{0: 400, 1000: 150, 2000: 100, 3000: 80, 4000: 78},
        {0: 420, 1000: 160, 2000: 110, 3000: 90, 4000: 87},
        {0: 410, 1000: 140, 2000: 95, 3000: 75, 4000: 74}]


def test_the_last_quarter_is_each_seeds_relative_gain_with_its_t_interval():
    curve = row_curve([_run(v) for v in FLAT], FID)
    gains = [100 * (v[3000] - v[4000]) / v[3000] for v in FLAT]  # lower FID is a gain
    q = curve["last_quarter"]
    assert (q["from"], q["to"], q["n"]) == (3000, 4000, 3)
    assert q["improvement_pct"] == pytest.approx(sum(gains) / 3)
    half = stats.t.ppf(0.975, 2) * stats.tstd(gains) / math.sqrt(3)
    assert q["ci"] == pytest.approx([sum(gains) / 3 - half, sum(gains) / 3 + half])
    assert q["past_knee"] is True and q["improvement_pct"] < KNEE_PCT
    assert [p["step"] for p in curve["points"]] == [0, 1000, 2000, 3000, 4000]
    assert curve["points"][2]["mean"] == pytest.approx((100 + 110 + 95) / 3)
    assert curve["num_samples"] == 10000


def test_a_curve_still_falling_is_not_past_the_knee_and_the_line_says_so():
    falling = [{s: 400 - 0.08 * s for s in range(0, 4001, 500)} for _ in range(2)]
    entry = {"variant": "g=batch", **row_curve([_run(v) for v in falling], FID)}
    q = entry["last_quarter"]
    assert q["from"] == 3000 and q["improvement_pct"] == pytest.approx(100 * 80 / 160)
    assert q["past_knee"] is False and q["ci"] == pytest.approx([50.0, 50.0])
    line = knee_line(entry, "FID", lambda v: f"{v:.0f}")
    assert line == ("g=batch: rounds 3,000 → 4,000 improved FID by +50.0 % [+50.0, +50.0] "
                    "(160 → 80, 2 seeds): still improving (≥ 5 %): a longer run would "
                    "change it")


def test_the_quarter_reads_a_line_through_all_its_evaluations_not_two_of_them():
    # one low last evaluation: the endpoints say 10 %, the line through the three says less
    steps, values = [3000, 3500, 4000], [100.0, 100.0, 90.0]
    q = row_curve([_run(dict(zip([0, 1000, 2000, *steps], [300, 200, 120, *values],
                                 strict=True)))], FID)["last_quarter"]
    slope, icpt = np.polyfit(steps, values, 1)
    begin, end = icpt + slope * 3000, icpt + slope * 4000
    assert q["improvement_pct"] == pytest.approx(100 * (begin - end) / begin)
    assert q["improvement_pct"] == pytest.approx(100 * 10 / (100 + 10 / 6))  # 9.84 %


def test_a_curve_that_worsens_is_said_to_worsen():
    worse = [{0: 900, 1000: 1000, 2000: 1100, 3000: 1200, 4000: 1300 + i} for i in range(3)]
    entry = {"variant": "v", **row_curve([_run(v) for v in worse], FID)}
    assert entry["last_quarter"]["past_knee"] and entry["last_quarter"]["ci"][1] < 0
    assert knee_line(entry, "FID", str).endswith("getting worse with training")


def test_a_higher_is_better_metric_gains_upwards_and_a_log_metric_takes_geometric_means():
    rising = [_run({0: 1.0, 3000: 4.0, 4000: 5.0}, metric="eval/is")]
    q = row_curve(rising, metric_info("eval/is"))["last_quarter"]
    assert q["improvement_pct"] == pytest.approx(25.0) and q["ci"] is None  # one seed
    logged = row_curve([_run({0: 1e-2, 100: 1e-4}), _run({0: 1e-4, 100: 1e-4})],
                       metric_info("eval/fid", scale="log"))
    assert logged["points"][0]["mean"] == pytest.approx(1e-3)  # sqrt(1e-2 * 1e-4)


def test_points_scored_on_another_sample_count_are_left_out():
    # intermediate evaluations on 2,500 samples, the final one on 10,000: FID is biased by
    # the count, so only points on the final's count make the curve
    run = _run({0: 300, 1000: 200, 2000: 150, 3000: 140, 4000: 90},
               num_samples={1000: 2500, 2000: 2500, 3000: 2500})
    curve = row_curve([run], FID)
    assert [p["step"] for p in curve["points"]] == [0, 4000]
    assert curve["last_quarter"] is None  # no point at three quarters of the rounds


def test_only_completed_runs_and_steps_every_seed_reached_count():
    runs = [_run(FLAT[0]), _run({0: 400, 1000: 150}), _run(FLAT[1], status="diverged")]
    runs[1]["status"] = "interrupted"
    curve = row_curve(runs, FID)
    assert curve["points"][-1]["n"] == 1 and curve["points"][-1]["mean"] == 78
    two = row_curve([_run(FLAT[0]), _run({0: 400, 1000: 150, 2000: 120})], FID)
    assert [p["step"] for p in two["points"]] == [0, 1000, 2000]
    assert two["last_quarter"]["from"] == 1000  # the latest point at or before 3/4 of 2000


def test_the_report_carries_the_curves_and_says_where_each_variant_stands(tmp_path):
    root = tmp_path / "sweep"
    trick = {"norm.g": "batch"}
    comparability = {"labels": "none", "data.name": "mnist", "model.name": "dcgan",
                     "eval": {"metrics": "fid", "num_samples": 10000}}
    for name, scale in (("batch", 1.0), ("none", 1.3)):
        for seed, values in enumerate(FLAT):
            d = root / f"norm.g={name}" / f"seed={seed}"
            d.mkdir(parents=True)
            history = _run({s: v * scale for s, v in values.items()})["history"]
            atomic_write_json(d / "result.json", {
                "status": "completed", "error": None, "seed": seed,
                "trick": dict(trick, **{"norm.g": name}), "comparability": comparability,
                "hparams": {"train.steps": 4000}, "metrics": {"eval/fid": values[4000] * scale},
                "history": history, "step": 4000})
    out = tmp_path / "report"
    assert main([str(root), "--baseline", "norm.g=batch", "--out", str(out), "--no-wandb"]) == 0
    doc = json.loads((out / "report.json").read_text())
    (curves,) = [t["curves"] for t in doc["classes"][0]["tables"] if t["metric"] == "eval/fid"]
    assert [c["variant"] for c in curves] == ["g=batch", "g=none"]
    assert all(c["last_quarter"]["past_knee"] for c in curves)
    md = (out / "report.md").read_text()
    assert "Past the knee?" in md and "g=none: rounds 3,000 → 4,000 improved FID" in md
    assert len(list((out / "report_files").glob("*fid_curves.png"))) == 1


def test_the_budget_line_names_rounds_images_wall_time_threads_and_widths():
    from ganlab.compare.document import budget_words, class_budget

    def record(threads, wall, status="completed", d_width=16):
        return {"status": status, "step": 4000, "host": {"threads": threads},
                "trick": {"model.g_width": 16, "model.d_width": d_width},
                "history": [{"step": 4000, "images_seen": 256000, "g_updates": 4000,
                             "d_updates": 4000, "wall_s": wall, "metrics": {}}]}

    assert budget_words(class_budget([record(1, 300.0)])).endswith(
        ", 1 CPU thread per run, model.g_width 16, model.d_width 16")
    budget = class_budget([record(1, 300.0), record(2, 180.5, d_width=64),
                           record(8, 1.0, "failed", d_width=512)])
    assert budget["threads"] == [1, 2] and budget["wall_s"] == [180.5, 300.0]
    assert budget["model.d_width"] == [16, 64]
    assert budget_words(budget) == (
        "budget: 4,000 rounds, 256,000 real images seen, 4,000 G updates, 4,000 D updates, "
        "180.5–300.0 training seconds per run, 1–2 CPU threads per run, model.g_width 16, "
        "model.d_width 16–64")


def test_the_budget_line_names_the_processors_the_runs_trained_on():
    from ganlab.compare.document import budget_words, class_budget

    def record(*launches, status="completed"):
        host = {"threads": 1, "launches": [dict(h, threads=1) for h in launches]}
        return {"status": status, "step": 10, "host": host, "trick": {},
                "history": [{"step": 10, "wall_s": 5.0, "metrics": {}}]}

    xeon, epyc = {"cpu": "Intel Xeon"}, {"cpu": "AMD EPYC"}
    budget = class_budget([record(xeon), record(xeon), record(epyc), record(xeon, epyc),
                           record({"cpu": "AMD EPYC", "gpu": "NVIDIA H100"}), record({}),
                           record(epyc, status="failed")])
    # most runs first; a resumed run names both; a GPU run its GPU; an old record says so
    assert budget["machines"] == {"Intel Xeon": 2, "AMD EPYC": 1, "Intel Xeon then AMD EPYC": 1,
                                  "NVIDIA H100": 1, "not recorded": 1}
    assert budget_words(budget).endswith(
        "; trained on Intel Xeon (2 runs), AMD EPYC (1 run), Intel Xeon then AMD EPYC (1 run), "
        "NVIDIA H100 (1 run), not recorded (1 run)")
    # records that name nothing (written before they did): nothing said
    assert class_budget([record({}), record({})])["machines"] is None
    assert "trained on" not in budget_words(class_budget([record({})]))
    # a hand-damaged record (launches not mappings, or not a list) names nothing, and raises
    # nothing
    damaged = record(xeon)
    damaged["host"]["launches"] = ["Intel Xeon", 3, None, {"cpu": "AMD EPYC"}]
    bad_list = record(xeon)
    bad_list["host"]["launches"] = "AMD EPYC"
    assert class_budget([damaged, bad_list])["machines"] == {"AMD EPYC": 1, "not recorded": 1}


def test_launch_values_are_distinct_oldest_first_at_the_first_key_a_launch_has():
    from ganlab.result import launch_values

    def record(*launches):
        return {"host": {"launches": list(launches)}}

    xeon, epyc, gpu = {"cpu": "Xeon"}, {"cpu": "EPYC"}, {"cpu": "EPYC", "gpu": "H100"}
    assert launch_values(record(xeon, xeon, epyc, xeon), "cpu") == ["Xeon", "EPYC"]
    assert launch_values(record(xeon, gpu), "gpu", "cpu") == ["Xeon", "H100"]
    assert launch_values(record(xeon, gpu), "cpu") == ["Xeon", "EPYC"]
    assert launch_values(record({}, {"cpu": None}), "cpu") == []
    assert launch_values(None, "cpu") == [] and launch_values({}, "cpu") == []
    # a record written before launches were kept: its one host
    assert launch_values({"host": {"cpu": "Xeon", "torch": "2.13.0"}}, "torch") == ["2.13.0"]


def test_a_curve_band_stops_at_the_metric_range():
    from ganlab.compare.report import curve_band

    points = [{"ci": [-5.3, 9.1]}, {"ci": [2.0, 7.5]}, {"ci": [6.0, 8.4]}]
    assert curve_band(points, (0.0, 8.0)) == ([0.0, 2.0, 6.0], [8.0, 7.5, 8.0])
    # a side nothing bounds (FID above) is left as the interval says
    assert curve_band(points, (0.0, float("inf"))) == ([0.0, 2.0, 6.0], [9.1, 7.5, 8.4])


def test_a_curve_title_gives_the_sample_count_only_for_metrics_scored_on_samples():
    from ganlab.compare.report import curve_title
    from ganlab.metrics import METRICS

    fid = curve_title(METRICS.choose("eval/fid"), 0.95, {10000})
    assert fid == "FID during training (mean over seeds, band: 95% t interval, 10000 samples a point)"
    # coupling is measured on 8 latents inside two minibatches, whatever eval.num_samples is
    coupling = curve_title(METRICS.choose("eval/coupling"), 0.95, {10000})
    assert coupling == "batch coupling during training (mean over seeds, band: 95% t interval)"
    assert curve_title(METRICS.choose("eval/fid"), 0.95, set()).endswith("t interval)")


def test_curves_far_apart_are_drawn_on_a_log_axis():
    from ganlab.compare.report import curves_on_log_axis
    from ganlab.metrics import METRICS

    def record(*finals):
        return {"curves": [{"points": [{"mean": 300.0}, {"mean": f}]} for f in finals]}

    fid, kid = METRICS.choose("eval/fid"), METRICS.choose("eval/kid")
    # -MBF stuck at 240 beside rows at 13: the rows at 13 would be a flat line
    assert curves_on_log_axis(record(13.0, 16.0, 240.0), fid)
    assert not curves_on_log_axis(record(13.0, 16.0, 30.0), fid)  # a linear axis shows them
    assert curves_on_log_axis(record(13.0, 16.0), kid)  # a log-scale metric always is
    # nothing to compare, or a mean a log axis cannot show: linear
    assert not curves_on_log_axis(record(13.0), fid)
    assert not curves_on_log_axis(record(0.0, 240.0), fid)
    assert not curves_on_log_axis({"curves": []}, fid)


def test_a_far_delta_puts_the_chart_on_a_symmetric_log_axis_that_keeps_the_near_ones(
        tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ganlab.compare import report
    from ganlab.compare.runs import load_results
    from ganlab.compare.tables import build_tables

    def row(lo, hi, effect=0.69):
        return SimpleNamespace(delta_ci=(lo, hi), effect=effect)

    # salimans' labelled class at stage 2: -VBN+BN and -LS within +-5 FID, -MBF at +179..+272
    vbn, ls, mbf = row(-4.57, 3.50), row(1.73, 4.46), row(178.94, 272.42)
    assert report.delta_linear_span([vbn, ls, mbf]) == pytest.approx(4.57)
    assert report.delta_linear_span([vbn, ls]) is None  # a linear axis shows both
    assert report.delta_linear_span([mbf]) is None
    # the +-delta band counts as a row's reach: a wide band keeps the axis linear
    assert report.delta_linear_span([row(-1, 1, effect=30.0), mbf]) is None
    assert report.delta_linear_span([row(-1, 2, effect=None), mbf]) == pytest.approx(2.0)
    # an unbounded interval (no spread among the pairs): the axis stays linear
    assert report.delta_linear_span([row(-math.inf, math.inf), row(-1, 1), mbf]) is None

    # the chart itself: three variants paired with a baseline, one of them far off
    shifts = {"base": 0.0, "near": 1.0, "close": -0.5, "far": 200.0}
    for name, shift in shifts.items():
        for seed in range(3):
            atomic_write_json(tmp_path / name / f"seed={seed}" / "result.json", {
                "status": "completed", "seed": seed, "step": 100, "host": {}, "study": {},
                "trick": {"study.variant": name}, "hparams": {}, "history": [],
                "comparability": {"data.name": "mnist"},
                "metrics": {"eval/fid": 20.0 + shift + 0.3 * seed * (shift != 0)}})
    (t,) = build_tables(load_results([tmp_path]), "fid",
                        baselines=[{"study.variant": "base"}])
    drawn = {}
    monkeypatch.setattr(report, "save_figure",
                        lambda fig, path: drawn.update(scale=fig.axes[0].get_xscale(),
                                                       label=fig.axes[0].get_xlabel()))
    assert report._delta_chart(t, tmp_path / "delta.png")
    assert drawn["scale"] == "symlog"
    span = report.delta_linear_span([r for r in t.rows if not r.is_baseline])
    assert 0 < span < 5 and f"axis linear within ±{span:.3g}" in drawn["label"]


def test_means_far_apart_put_the_seeds_chart_on_a_log_axis():
    from types import SimpleNamespace

    from ganlab.compare.report import points_on_log_axis

    def row(*values):
        return SimpleNamespace(mean=sum(values) / len(values),
                               values=dict(enumerate(values)))

    # -MBF's 240 beside rows at 13-17: the rows at 13 would sit on one spot
    assert points_on_log_axis([row(13.4, 13.1), row(16.5, 16.4), row(239.1, 243.6)])
    assert not points_on_log_axis([row(13.4, 13.1), row(16.5, 16.4), row(30.0, 31.0)])
    assert not points_on_log_axis([row(13.4, 13.1)])
    # a seed at 0 or below has no place on a log axis: linear
    assert not points_on_log_axis([row(0.0, 2.0), row(239.1, 243.6)])
