"""The comparer's one grouping (comparison classes, variants, seed pooling) and its brief
view (`python -m ganlab.compare --brief`)."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pytest

from ganlab.compare.__main__ import main
from ganlab.compare.runs import group_runs, load_results
from ganlab.compare.tables import brief_cell, format_brief
from ganlab.storage import atomic_write_json

TRICK = {"labels.name": "none", "loss.name": "minimax", "smoothing.real_target": 1.0,
         "smoothing.fake_target": 0.0, "norm.g": "none", "norm.d": "none",
         "norm.d_batches": "separate", "train.d_steps": 1, "train.g_steps": 1,
         "model.g_width": 64, "model.d_width": 64}
UNLABELLED = {"labels": "none", "data.name": "ring8", "data.split": "train",
              "model.name": "mlp", "eval": {"metrics": "modes2d", "num_samples": 2500}}
LABELLED = dict(UNLABELLED, labels="labelled")

# eval metrics of the completed runs, by variant, in seed order
COVERED = {"minimax": [6, 7, 8], "non_saturating": [8, 8, 5]}
KL = {"minimax": [0.31, 0.12, 0.05], "non_saturating": [0.02, 0.04, math.nan]}
HQ = {"minimax": [55.5, 61.25, 70.0], "non_saturating": [80.0, 90.5, 85.25]}


def write_run(run_dir: Path, status: str, seed: int, trick: dict, comparability: dict,
              metrics: dict, hparams: dict | None = None) -> None:
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "result.json", {
        "status": status, "error": "diverged at step 300" if status == "diverged" else None,
        "seed": seed, "trick": trick, "comparability": comparability,
        "hparams": hparams or {"train.steps": 2000}, "metrics": metrics, "history": [], "step": 2000})


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for loss in ("minimax", "non_saturating"):
        for seed in range(3):
            write_run(root / f"loss={loss}" / f"seed={seed}", "completed", seed,
                      dict(TRICK, **{"loss.name": loss}), UNLABELLED,
                      {"eval/modes_covered": COVERED[loss][seed],
                       "eval/reverse_kl": KL[loss][seed],  # NaN is written as null
                       "eval/hq_pct": HQ[loss][seed],
                       "train/loss_d": 0.69})  # not an eval metric: no column
    # a diverged minimax run whose last evaluation must not enter the means
    write_run(root / "loss=minimax" / "seed=3", "diverged", 3, TRICK,
              UNLABELLED, {"eval/modes_covered": 0, "eval/reverse_kl": 2.08,
                           "eval/hq_pct": 0.0})
    # a labelled run: compared only with labelled runs, so it gets a table of its own
    write_run(root / "labelled" / "seed=0", "completed", 0,
              dict(TRICK, **{"labels.name": "conditional"}),
              LABELLED, {"eval/modes_covered": 8, "eval/reverse_kl": 0.01, "eval/hq_pct": 99.0})
    (root / "loss=minimax" / "notes.json").write_text("{}")  # not a result file
    return root


def _class(classes, labels: str):
    (group,) = [c for c in classes if c.comparability["labels"] == labels]
    return group


def test_load_results_finds_every_run(sweep):
    results = load_results([sweep])
    assert len(results) == 8
    assert {Path(r["run_dir"]).relative_to(sweep).as_posix() for r in results} == {
        *(f"loss={loss}/seed={s}" for loss in ("minimax", "non_saturating") for s in range(3)),
        "loss=minimax/seed=3", "labelled/seed=0"}


def test_classes_are_grouped_apart_and_variants_named_by_what_varies(sweep):
    classes = group_runs(load_results([sweep]))
    assert len(classes) == 2
    unlabelled, labelled = _class(classes, "none"), _class(classes, "labelled")
    assert unlabelled.comparability == UNLABELLED
    # only the loss differs inside the unlabelled class, so it names the variants
    assert unlabelled.varying == ["loss.name"]
    assert [v.label for v in unlabelled.variants] == ["loss=minimax", "loss=non_saturating"]
    assert [len(v.runs) for v in unlabelled.variants] == [4, 3]  # seeds pooled, diverged too
    (variant,) = labelled.variants
    assert variant.label == "(one variant)" and len(variant.runs) == 1


def test_brief_pools_seeds_per_variant_without_diverged_runs(sweep):
    lines = format_brief(load_results([sweep])).splitlines()
    header = next(line for line in lines if line.startswith("variant"))
    assert header.split() == ["variant", "runs", "done/div/fail", "hq_pct", "modes_covered",
                              "reverse_kl"]
    hq = HQ["minimax"]
    # minimax coverage 6, 7, 8: mean 7 and sample sd 1 (the diverged 0 left out); reverse KL
    # is on a log scale: 0.31, 0.12, 0.05 -> geometric mean 0.1231, SD of the logs 0.9148
    assert cells(lines, "loss=minimax") == [
        "loss=minimax", "4", "3/1/0",
        f"{statistics.fmean(hq):.3g} ± {statistics.stdev(hq):.2g}",
        "7 ± 1",
        "0.123 ×/÷ 2.5"]
    # the NaN KL was stored as null and is left out: 0.02 and 0.04 remain, geometric mean
    # sqrt(0.0008) = 0.02828, geometric SD exp(ln 2 / sqrt 2) = 1.632
    assert cells(lines, "loss=non_saturating") == [
        "loss=non_saturating", "3", "3/0/0",
        f"{statistics.fmean(HQ['non_saturating']):.3g} ± "
        f"{statistics.stdev(HQ['non_saturating']):.2g}",
        f"{statistics.fmean([8, 8, 5]):.3g} ± {statistics.stdev([8, 8, 5]):.2g}",
        "0.0283 ×/÷ 1.6"]
    assert cells(lines, "(one variant)") == [
        "(one variant)", "1", "1/0/0", "99 ± 0", "8 ± 0", "0.01 ×/÷ 1"]
    assert ("reverse_kl: log scale, geometric mean ×/÷ geometric SD (as the report's tables; "
            "± where a value is 0)") in lines


def test_brief_cell_on_a_log_scale_metric_falls_back_to_the_mean_with_a_zero():
    # KID of three seeds a decade apart: the arithmetic mean 0.037 is 3.7x the centre the
    # report's tables use; with an exact 0 the log form is undefined, as in the tables
    assert brief_cell("eval/kid", [0.001, 0.01, 0.1]) == "0.01 ×/÷ 10"
    assert brief_cell("eval/kid", [0.0, 0.01]) == f"0.005 ± {statistics.stdev([0, 0.01]):.2g}"
    assert brief_cell("eval/fid", [10.0, 20.0]) == f"15 ± {statistics.stdev([10, 20]):.2g}"
    assert brief_cell("eval/kid", []) == "—"


def test_brief_cli_prints_each_class_and_writes_nothing(sweep, capsys):
    assert main([str(sweep), "--brief"]) == 0
    out = capsys.readouterr().out
    assert "class [labels=none, data.name=ring8, data.split=train, model.name=mlp, eval=modes2d, n=2500]" in out
    assert "class [labels=labelled, data.name=ring8, data.split=train, model.name=mlp, eval=modes2d, n=2500]" in out
    assert out.count("done/div/fail") == 2
    assert not (sweep / "report.md").exists()


def cells(lines: list[str], first: str) -> list[str]:
    """The cells of the table row that starts with `first` (columns are 2+ spaces apart)."""
    (line,) = [line for line in lines if line.startswith(first)]
    return re.split(r"\s{2,}", line.strip())


def test_main_on_an_empty_dir(tmp_path, capsys):
    assert main([str(tmp_path), "--brief"]) == 2
    assert "no result.json" in capsys.readouterr().err


def test_main_on_a_missing_dir(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--brief"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_runs_with_different_hparams_are_not_pooled(tmp_path):
    for i, lr_d in enumerate((1e-4, 4e-4)):
        run_dir = tmp_path / f"train.lr_d={lr_d}" / "seed=0"
        write_run(run_dir, "completed", 0, TRICK, UNLABELLED, {"eval/modes_covered": 4 + 4 * i},
                  hparams={"train.steps": 2000, "train.lr_d": lr_d})
    (group,) = group_runs(load_results([tmp_path]))
    assert group.varying == ["train.lr_d"]
    assert sorted(len(v.runs) for v in group.variants) == [1, 1]


def test_overlapping_dirs_count_each_run_once(sweep):
    classes = group_runs(load_results([sweep, sweep / "loss=minimax"]))
    minimax = next(v for v in _class(classes, "none").variants if v.label == "loss=minimax")
    assert len(minimax.runs) == 4


def test_variants_are_listed_in_the_order_their_sweep_listed_them(sweep):
    assert [v.label for v in _class(group_runs(load_results([sweep])), "none").variants] == [
        "loss=minimax", "loss=non_saturating"]  # no multirun.yaml: by label
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      seed: 0,1,2\n"
        "  overrides:\n    task:\n    - train.steps=2000\n    - extras=[a,b]\n"
        "    - loss.name=non_saturating,minimax\n")
    runs = load_results([sweep])
    assert runs.sweep_axes == {"loss.name": ["non_saturating", "minimax"]}
    assert [v.label for v in _class(group_runs(runs), "none").variants] == [
        "loss=non_saturating", "loss=minimax"]
    (sweep / "multirun.yaml").write_text("{not: yaml")  # damaged: by label again
    assert load_results([sweep]).sweep_axes == {}


def test_a_lone_unlabelled_variant_is_named_by_its_option_in_every_table(tmp_path):
    import json

    for labels, comparability in (("none", UNLABELLED), ("conditional", LABELLED),
                                  ("auxiliary", LABELLED)):
        for seed in range(3):
            run_dir = tmp_path / f"labels={labels}" / f"seed={seed}"
            write_run(run_dir, "completed", seed, dict(TRICK, **{"labels.name": labels}),
                      comparability, {"eval/modes_covered": 5 + seed, "eval/hq_pct": 50.0 + seed})
            record = json.loads((run_dir / "result.json").read_text())
            record["choices"] = {"labels": labels, "data": "ring8"}
            atomic_write_json(run_dir / "result.json", record)
    assert main([str(tmp_path), "--no-wandb"]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    unlabelled = [c for c in doc["classes"] if c["comparability"]["labels"] == "none"][0]
    assert len(unlabelled["tables"]) == 2  # modes covered, then HQ %
    for table in unlabelled["tables"]:
        assert [r["variant"] for r in table["rows"]] == ["none"]
        assert table["rows"][0]["answer"].startswith("none: the baseline")


# -- a look mid-sweep: cells the sweep planned that have no record yet ------------------------
BASE_HQ = [50.0, 52.0, 49.0, 51.0, 50.0]
GAIN_HQ = [9.0, 3.0, 12.0, 1.5, 7.5]  # paired t-test: p = 0.027 over 5 seeds


def planned_sweep(root: Path, subdir: str | None = None) -> Path:
    """A sweep whose launch planned three cells (loss.name=minimax,non_saturating,hinge), as
    Hydra's multirun.yaml records it; only the first two have ended runs."""
    from ganlab.config import DEFAULT_SUBDIR

    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweep:\n    dir: elsewhere\n"
        f"    subdir: {subdir or DEFAULT_SUBDIR}\n"
        "  sweeper:\n    params:\n      seed: 0,1,2,3,4\n"
        "  overrides:\n    task:\n    - loss.name=minimax,non_saturating,hinge\n"
        "    - train.steps=2000\n    - launcher=joblib\n")
    for loss, gain in (("minimax", 0.0), ("non_saturating", 1.0)):
        for seed in range(5):
            write_run(root / f"loss.name={loss},train.steps=2000" / f"seed={seed}",
                      "completed", seed, dict(TRICK, **{"loss.name": loss}), UNLABELLED,
                      {"eval/hq_pct": BASE_HQ[seed] + gain * GAIN_HQ[seed]})
    return root


def test_a_planned_cell_without_a_record_is_counted_in_the_family(tmp_path):
    from scipy import stats

    from ganlab.compare.tables import build_tables

    sweep = planned_sweep(tmp_path / "sweep")
    runs = load_results([sweep])
    hinge = sweep / "loss.name=hinge,train.steps=2000"
    assert runs.pending == [str(hinge)]  # the launcher is not part of a cell's name
    p = stats.ttest_rel([b + g for b, g in zip(BASE_HQ, GAIN_HQ, strict=True)], BASE_HQ).pvalue
    assert 0.025 < p < 0.05
    (alone,) = build_tables(runs, "eval/hq_pct", pending=[])
    (mid,) = build_tables(runs, "eval/hq_pct")
    row_alone, row_mid = alone.rows[1], mid.rows[1]
    assert alone.rows[0].is_baseline and row_alone.label == "loss=minimax"  # the default is off
    assert (alone.tests, mid.tests) == (1, 2)
    assert row_alone.p_holm == pytest.approx(p)
    assert row_mid.p_holm == pytest.approx(2 * p)
    # over the family the sweep planned, p = 0.027 is no longer a verdict
    assert row_alone.verdict == "worse" and row_alone.decided
    assert row_mid.verdict == "no clear difference" and not row_mid.decided
    # once the cell's first run has a record (even one still running), it is a row, not pending
    write_run(hinge / "seed=0", "running", 0, dict(TRICK, **{"loss.name": "hinge"}),
              UNLABELLED, {})
    assert load_results([sweep]).pending == []


def test_a_look_mid_sweep_says_which_cells_it_waits_for(tmp_path, capsys):
    import json

    from ganlab.compare.plan import plan

    sweep = planned_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--metric", "hq_pct", "--no-wandb"]) == 0
    out = capsys.readouterr().out
    hinge = str(sweep / "loss.name=hinge,train.steps=2000")
    assert f"1 cell(s) the sweep planned have no record yet: {hinge}" in out
    assert "Holm over the study's 2 comparison(s) in every class (1 of them for cells" in out
    doc = json.loads((sweep / "report.json").read_text())
    assert doc["pending"] == [hinge] and not doc["decided"]
    assert doc["classes"][0]["tables"][0]["pending"] == 1
    assert "have no record yet" in (sweep / "report.html").read_text()
    # the answer's heading counts what the look waits for, not only the open rows
    assert "## Answer (1 verdict still open; 1 planned cell with no record yet)" in (
        sweep / "report.md").read_text()
    found = plan(load_results([sweep]), metric="hq_pct")
    assert found["pending"] == [hinge] and not found["decided"]
    assert any(line.startswith("1 cell(s) the sweep planned") for line in found["lines"])


def test_no_cells_are_pending_where_the_sweep_cannot_say(tmp_path):
    # another hydra.sweep.subdir names run dirs some other way: nothing can be matched
    assert load_results([planned_sweep(tmp_path / "a", subdir="x/seed=${seed}")]).pending == []
    sweep = planned_sweep(tmp_path / "b")
    (sweep / "multirun.yaml").write_text("hydra: {unclosed")  # damaged
    assert load_results([sweep]).pending == []
    sweep = planned_sweep(tmp_path / "c")  # every planned cell has records
    text = (sweep / "multirun.yaml").read_text()
    (sweep / "multirun.yaml").write_text(text.replace(",hinge", ""))
    assert load_results([sweep]).pending == []
