"""The comparer: pairing by seed, intervals, effects and tests against scipy, class
separation, matched budgets, and the report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from ganlab.compare.__main__ import main
from ganlab.compare.document import validate_document
from ganlab.compare.rows import percent
from ganlab.compare.runs import load_results
from ganlab.compare.stats import holm, t_interval
from ganlab.compare.tables import (
    CompareError,
    build_tables,
    parse_baseline,
    value_at,
)
from ganlab.metrics import metric_info
from ganlab.storage import atomic_write_json

CLASS = {"labels": "none", "data.name": "mnist", "data.split": "train",
         "data.image_size": 28, "model.name": "dcgan",
         "eval": {"metrics": "fid", "features": "classifier"}}


def _trick(d_steps: int = 1, labels: str = "none") -> dict:
    return {"labels.name": labels, "loss.name": "non_saturating", "train.d_steps": d_steps}


def _write(root, name: str, seed: int, fid: float, d_steps: int = 1, status="completed",
           comparability=None, labels="none", history=None, study=None):
    run = root / name / f"seed={seed}"
    run.mkdir(parents=True)
    atomic_write_json(run / "result.json", {
        "status": status, "error": None if status == "completed" else "boom", "seed": seed,
        "trick": _trick(d_steps, labels), "comparability": comparability or CLASS,
        "hparams": {"train.lr_d": 2e-4}, "metrics": {"eval/fid": fid, "eval/is": 10 - fid / 10},
        "history": history or [], "step": 100, "study": study or {}, "host": {}})


@pytest.fixture
def sweep(tmp_path):
    base = {0: 30.0, 1: 32.0, 2: 31.0, 3: 35.0}
    better = {1: 28.0, 2: 27.5, 3: 30.0, 4: 26.0}  # seed 4 has no baseline partner
    for s, v in base.items():
        _write(tmp_path, "k1", s, v, d_steps=1)
    for s, v in better.items():
        _write(tmp_path, "k2", s, v, d_steps=2)
    for s, v in {0: 31.0, 1: 30.0}.items():  # two seeds only
        _write(tmp_path, "k5", s, v, d_steps=5)
    _write(tmp_path, "k5", 2, 0.0, d_steps=5, status="diverged")
    return tmp_path


def test_pairs_by_seed_with_t_intervals_effect_sizes_and_paired_t(sweep):
    (t,) = build_tables(load_results([sweep]), "fid", baselines=[{"train.d_steps": "1"}])
    rows = {r.settings["train.d_steps"]: r for r in t.rows}
    base, k2 = rows[1], rows[2]
    assert base.is_baseline and base.verdict == "baseline"
    assert k2.pairs == 3  # seeds 1, 2, 3 only
    diffs = np.array([28.0 - 32.0, 27.5 - 31.0, 30.0 - 35.0])
    assert k2.delta == pytest.approx(diffs.mean())
    expected_p = stats.ttest_rel([28.0, 27.5, 30.0], [32.0, 31.0, 35.0]).pvalue
    assert k2.p == pytest.approx(expected_p)
    # two comparisons in the family (d_steps=5 is too thin yet, but counts): Holm holds the
    # smallest p-value to 0.05 / 2, and the interval that goes with the verdict is at that
    # level (it excludes 0 exactly when the test passes)
    assert t.tests == 2 and k2.level == pytest.approx(0.025)
    ci = stats.t.interval(0.975, 2, loc=diffs.mean(), scale=stats.sem(diffs))
    assert k2.delta_ci == pytest.approx(ci)
    # Δ % of the baseline's mean over the same seeds; d_z = mean(d) / sd(d)
    assert k2.delta_pct == pytest.approx(100 * diffs.mean() / np.mean([32.0, 31.0, 35.0]))
    assert k2.d_z == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    assert k2.d_z_ci[0] < k2.d_z < k2.d_z_ci[1] < 0  # p < 0.05: the interval excludes 0
    assert k2.n == 4 and k2.mean == pytest.approx(np.mean([28.0, 27.5, 30.0, 26.0]))
    assert k2.ci == pytest.approx(stats.t.interval(0.95, 3, loc=np.mean([28, 27.5, 30, 26]),
                                                   scale=stats.sem([28, 27.5, 30, 26])))
    assert k2.median == pytest.approx(27.75)
    # lower FID is better: a significant drop reads "better"
    assert k2.p_holm < 0.05 and k2.verdict == "better"
    assert k2.answer.startswith("d_steps=2: better: FID -4.17 (-12.8 %) [")


def test_thin_evidence_gets_no_p_value_and_diverged_runs_are_counted(sweep):
    (t,) = build_tables(load_results([sweep]), "fid", baselines=[{"train.d_steps": "1"}])
    k5 = next(r for r in t.rows if r.settings["train.d_steps"] == 5)
    assert k5.pairs == 2 and k5.p is None and k5.verdict.startswith("too thin")
    assert k5.diverged == 1 and k5.n == 2  # the diverged run is counted, not averaged


def test_direction_is_per_metric(sweep):
    (t,) = build_tables(load_results([sweep]), "is", baselines=[{"train.d_steps": "1"}])
    k2 = next(r for r in t.rows if r.settings["train.d_steps"] == 2)
    assert k2.delta > 0 and k2.verdict == "better"  # IS went up


def test_holm_matches_hand_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([None, 0.2, 0.5]) == [None, pytest.approx(0.4), pytest.approx(0.5)]
    # sorted: 0.8 * 2 = 1.6 -> capped at 1; then max(1, 0.9 * 1) = 1 (monotone)
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_t_interval_known_values():
    # mean 2, sd 1, n 3: 2 +- t(0.975, 2) / sqrt(3), t(0.975, 2) = 4.302652729911275
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 4.302652729911275 / 3 ** 0.5,
                                      2 + 4.302652729911275 / 3 ** 0.5))
    assert t_interval([3.0]) is None
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_classes_are_never_mixed_and_a_cross_class_baseline_names_the_key(tmp_path):
    labelled = {**CLASS, "labels": "labelled"}
    for s in range(3):
        _write(tmp_path, "none", s, 30.0 + s)
        _write(tmp_path, "cond", s, 20.0 + s, labels="conditional", comparability=labelled)
        _write(tmp_path, "aux", s, 21.0 + s, labels="auxiliary", comparability=labelled)
    results = load_results([tmp_path])
    tables = build_tables(results, "fid")
    assert len(tables) == 2
    for t in tables:
        assert len({r["comparability"]["labels"] for row in t.rows for r in row.runs}) == 1
    with pytest.raises(CompareError, match="labels: none vs labelled"):
        build_tables(results, "fid", baselines=[{"labels": "none"}])
    # one baseline per class is fine
    tables = build_tables(results, "fid", baselines=[{"labels": "none"},
                                                     {"labels": "conditional"}])
    assert sorted(next(r.label for r in t.rows if r.is_baseline) for t in tables) == [
        "(one variant)", "labels=conditional"]
    # the train command's words work too: labels=none is labels.name=none
    tables = build_tables(results, "fid", baselines=[{"labels": "none"},
                                                     {"labels": "auxiliary"}])
    assert sorted(next(r.label for r in t.rows if r.is_baseline) for t in tables) == [
        "(one variant)", "labels=auxiliary"]
    assert main([str(tmp_path), "--baseline", "labels=none", "--no-wandb"]) == 2


def test_study_baselines_are_the_default(tmp_path):
    study = {"name": "dsteps", "baselines": ["train.d_steps=2"]}
    for s in range(3):
        _write(tmp_path, "a", s, 30.0, d_steps=1, study=study)
        _write(tmp_path, "b", s, 31.0, d_steps=2, study=study)
    (t,) = build_tables(load_results([tmp_path]), "fid")
    assert next(r for r in t.rows if r.is_baseline).settings["train.d_steps"] == 2


def test_matched_budget_reads_history_at_the_common_budget(tmp_path):
    def hist(points):
        return [{"step": s, "g_updates": s, "images_seen": i, "wall_s": w,
                 "metrics": {"eval/fid": f}} for s, i, w, f in points]

    # k=1 sees 64 images per G step; k=2 sees 128: at matched images, k=2 is at half the steps
    for s in range(3):
        _write(tmp_path, "k1", s, 10.0, d_steps=1,
               history=hist([(100, 6400, 1.0, 50.0 + s), (200, 12800, 2.0, 40.0 + s)]))
        _write(tmp_path, "k2", s, 9.0, d_steps=2,
               history=hist([(100, 12800, 1.5, 45.0 + s), (200, 25600, 3.0, 35.0 + s)]))
    results = load_results([tmp_path])
    (t,) = build_tables(results, "fid", match="images_seen", baselines=[{"train.d_steps": "1"}])
    assert t.budget == 12800
    rows = {r.settings["train.d_steps"]: r for r in t.rows}
    assert rows[1].values == {0: 40.0, 1: 41.0, 2: 42.0}
    assert rows[2].values == {0: 45.0, 1: 46.0, 2: 47.0}
    (t,) = build_tables(results, "fid", match="g_steps", baselines=[{"train.d_steps": "1"}])
    assert t.budget == 200 and next(r for r in t.rows if r.settings["train.d_steps"] == 2
                                    ).values[0] == 35.0
    run = results[0]
    assert value_at(run, "eval/fid", "wall_s", 1.2) == run["history"][0]["metrics"]["eval/fid"]
    with pytest.raises(CompareError, match="--match 'epochs'"):
        build_tables(results, "fid", match="epochs")


def test_parse_baseline():
    assert parse_baseline(["labels=none", "train.d_steps=1"]) == {"labels": "none",
                                                                  "train.d_steps": "1"}
    assert parse_baseline(["a=1,b=2"]) == {"a": "1", "b": "2"}
    with pytest.raises(CompareError, match="KEY=VALUE"):
        parse_baseline(["labels"])


def test_report_files_hold_the_tables_and_pictures(sweep, capsys):
    _write(sweep, "k5", 3, 0.0, d_steps=5, status="failed")
    assert main([str(sweep), "--baseline", "train.d_steps=1", "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    assert "d_steps=2" in printed and "p Holm" in printed and "detectable Δ" in printed
    assert "d_steps=2: better: FID" in printed  # one sentence per variant
    md = (sweep / "report.md").read_text()
    assert "| variant | n | div | fail |" in md
    # the primary metric first, then the others
    assert md.index("### FID (eval/fid): the primary metric") < md.index("#### IS (eval/is)")
    assert "1 diverged" in md and "1 failed" in md
    assert "report_files/c0_eval_fid_points.png" in md
    html = (sweep / "report.html").read_text()
    assert html.count("<table>") == 2 and "data:image/png;base64," in html
    assert (sweep / "report_files" / "c0_eval_fid_points.png").stat().st_size > 5000
    doc = json.loads((sweep / "report.json").read_text())
    validate_document(doc)
    (table,) = [t for t in doc["classes"][0]["tables"] if t["metric"] == "eval/fid"]
    rows = {r["settings"]["train.d_steps"]: r for r in table["rows"]}
    assert rows[2]["verdict"] == "better" and rows[5]["failed"] == 1
    assert rows[2]["values"] == {"1": 28.0, "2": 27.5, "3": 30.0, "4": 26.0}


def test_failed_runs_do_not_shrink_the_matched_budget(tmp_path):
    hist = [{"step": s, "g_updates": s, "images_seen": 64 * s, "wall_s": s / 100,
             "metrics": {"eval/fid": f}} for s, f in ((100, 50.0), (200, 40.0))]
    for s in range(3):
        _write(tmp_path, "k1", s, 40.0, d_steps=1, history=hist)
        _write(tmp_path, "k2", s, 40.0, d_steps=2, history=hist)
    _write(tmp_path, "k2", 3, 0.0, d_steps=2, status="failed")  # an empty history
    (t,) = build_tables(load_results([tmp_path]), "fid", match="g_steps",
                        baselines=[{"train.d_steps": "1"}])
    assert t.budget == 200 and [r.n for r in t.rows] == [3, 3]
    assert next(r for r in t.rows if r.settings["train.d_steps"] == 2).failed == 1


def test_the_same_difference_on_every_seed_gets_an_exact_test_not_a_free_verdict(tmp_path):
    for s in range(3):
        _write(tmp_path, "a", s, 30.0 + s, d_steps=1)
        _write(tmp_path, "b", s, 29.0 + s, d_steps=2)  # exactly 1 lower on every seed
    (t,) = build_tables(load_results([tmp_path]), "fid", baselines=[{"train.d_steps": "1"}])
    row = next(r for r in t.rows if not r.is_baseline)
    assert row.pairs == 3 and row.delta == pytest.approx(-1.0)
    # FID has no upper bound, so nothing bounds how far a rare seed could pull the mean:
    # the test of a constant difference cannot pass, and its interval is unbounded (never
    # the zero-width [-1, -1] that would read as certainty, or as "equivalent within 5 %")
    assert row.p == 1.0 and row.p_holm == 1.0
    assert row.delta_ci == (-math.inf, math.inf)
    assert row.verdict == "no clear difference" and not row.decided


def test_metric_directions_and_scales_come_from_one_registry():
    names = ("eval/fid", "eval/fid_class/3", "eval/kid_std", "eval/is", "eval/modes_covered",
             "eval/reverse_kl", "fid", "eval/coupling", "eval/kid")
    assert [metric_info(m).direction for m in names] == [-1, -1, 0, 1, 1, -1, -1, -1, -1]
    assert [metric_info(m).scale for m in names] == [
        "linear", "linear", "linear", "linear", "linear", "log", "linear", "log", "log"]
    assert metric_info("fid", scale="log").scale == "log"


def test_g_steps_match_g_updates_not_rounds(tmp_path):
    # g_steps=2 makes two G updates per round: at 200 G updates it has done 100 rounds
    def hist(g_per_round, fids):
        return [{"step": s, "g_updates": g_per_round * s, "images_seen": 64 * s,
                 "wall_s": s / 100, "metrics": {"eval/fid": f}}
                for s, f in zip((100, 200), fids, strict=True)]

    for s in range(3):
        _write(tmp_path, "g1", s, 40.0, d_steps=1, history=hist(1, (50.0 + s, 40.0 + s)))
        _write(tmp_path, "g2", s, 30.0, d_steps=2, history=hist(2, (45.0 + s, 30.0 + s)))
    (t,) = build_tables(load_results([tmp_path]), "fid", match="g_steps",
                        baselines=[{"train.d_steps": "1"}])
    assert t.budget == 200
    rows = {r.settings["train.d_steps"]: r for r in t.rows}
    assert rows[1].values == {0: 40.0, 1: 41.0, 2: 42.0}  # its round 200
    assert rows[2].values == {0: 45.0, 1: 46.0, 2: 47.0}  # its round 100


def test_a_change_in_percent_reads_as_a_number_at_any_size():
    # a row 18 times its baseline is +1,737 %, not +1.74e+03 %
    assert [percent(v) for v in (1737.4, -4.25, 36.2, 102.4, 12345.6)] == [
        "+1,737", "-4.25", "+36.2", "+102", "+12,346"]


def test_every_report_chart_keeps_its_words_inside_the_picture(tmp_path, monkeypatch):
    """Long variant names (an ablation's, with its verdict) push the axes right; no title,
    axis label or tick label may then run off the picture's edge."""
    from PIL import Image

    from ganlab.compare import report

    checked = []

    def check(fig, path):
        fig.canvas.draw()
        drawn = fig.get_tightbbox()  # every artist drawn, in inches
        w, h = fig.get_size_inches()
        tol = 1 / fig.dpi
        assert (drawn.x0 >= -tol and drawn.y0 >= -tol and drawn.x1 <= w + tol
                and drawn.y1 <= h + tol), (path.name, drawn, (w, h))
        checked.append(path.name)
        save(fig, path)

    save = report.save_figure
    monkeypatch.setattr(report, "save_figure", check)
    long = "ablation_with_a_rather_long_name"
    for s, (base, other) in enumerate([(14.0, 17.0), (13.0, 16.5), (15.5, 18.0)]):
        for name, fid in (("all", base), (long, other)):
            run = tmp_path / name / f"seed={s}"
            run.mkdir(parents=True)
            atomic_write_json(run / "result.json", {
                "status": "completed", "error": None, "seed": s,
                "trick": {"study.variant": name}, "comparability": CLASS, "hparams": {},
                "metrics": {"eval/fid": fid}, "step": 100, "study": {}, "host": {},
                "history": [{"step": k, "g_updates": k, "images_seen": 64 * k,
                             "wall_s": k / 10, "metrics": {"eval/fid": fid + 100 / k}}
                            for k in (50, 100)]})
            (run / "samples").mkdir()
            Image.new("L", (30, 30), 128).save(run / "samples" / "step_0000100.png")
    assert main([str(tmp_path), "--baseline", "study.variant=all", "--no-wandb"]) == 0
    assert {"c0_eval_fid_delta.png", "c0_eval_fid_points.png", "c0_eval_fid_curves.png",
            "c0_samples.png"} <= set(checked), checked
