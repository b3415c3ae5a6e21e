"""What W&B shows, read back from the offline `.wandb` streams (tests/wandb_stream.py): one
group per experiment and cell, unique names, job types, tags of what the sweep varies, the
budgets as axes, best values that survive the end, re-scores in the same run, and a
comparison run with a numeric table that a second `compare` updates rather than repeats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ganlab.compare.__main__ import main as compare_main
from ganlab.compare.document import WANDB_COLUMNS
from ganlab.configure import compose
from ganlab.rerun import main as rerun_main
from ganlab.tracking import BUDGET_KEYS, target
from tests.helpers import run_here
from tests.wandb_stream import read_stream, streams

RUN = ["train.steps=20", "eval.every=10", "eval.num_samples=100", "train.progress=false",
       "logger=wandb"]
CELLS = {"smoothing=none", "smoothing=one_sided"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A study's sweep: 2 smoothing variants x 2 seeds, logged to W&B offline."""
    out = tmp_path_factory.mktemp("wandb") / "abl"
    done = run_here("-m", "smoothing=none,one_sided", "seed=0,1", "study.name=trick_test",
                    *RUN, f"hydra.sweep.dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _runs(sweep: Path) -> dict[Path, tuple[dict, object]]:
    return {p.parent: (json.loads(p.read_text()), streams(p.parent)[0])
            for p in sorted(sweep.glob("*/seed=*/result.json"))}


def test_a_sweep_is_one_group_per_cell_with_unique_names_and_its_swept_tags(sweep):
    runs = _runs(sweep)
    assert len(runs) == 4
    names = set()
    for run_dir, (record, s) in runs.items():
        cell = run_dir.parent.name
        swept = next(c for c in CELLS if c in cell)
        assert s.group == f"trick_test/{cell}" and s.job_type == "train"
        assert s.name == f"{cell}/seed={record['seed']}"
        names.add(s.name)
        # the study and the swept key, not every default
        assert sorted(s.tags) == sorted(["study=trick_test", swept])
        # the evaluation protocol is config (filterable), not summary
        assert s.config["comparability/eval.num_samples"] == 100
        assert not any(k.startswith("comparability/") for k in s.summary)
        assert s.project == "ganlab" and s.exit_code == 0
        # the record says where the run went
        assert record["wandb"]["id"] == s.run_id
        assert (record["wandb"]["group"], record["wandb"]["name"]) == (s.group, s.name)
        assert record["wandb"]["sweep"] == "trick_test"
    assert len(names) == 4


def test_each_evaluation_logs_the_budget_and_best_values_survive_the_end(sweep):
    for record, s in _runs(sweep).values():
        rows = [h for h in s.history if "eval/reverse_kl" in h]
        assert [h["_step"] for h in rows] == [e["step"] for e in record["history"]]
        for row, entry in zip(rows, record["history"], strict=True):
            assert {k: row[k] for k in BUDGET_KEYS} == {k: entry[k] for k in BUDGET_KEYS}
        assert set(BUDGET_KEYS) <= set(s.metrics)  # declared: offered as x-axes
        kls = [e["metrics"]["eval/reverse_kl"] for e in record["history"]]
        assert s.summary["eval/reverse_kl.min"] == min(kls)  # lower is better
        assert s.summary["eval/reverse_kl"] == kls[-1]  # beside the last value
        modes = [e["metrics"]["eval/modes_covered"] for e in record["history"]]
        assert s.summary["eval/modes_covered.max"] == max(modes)
        assert s.summary["status"] == "completed"


def test_a_sweep_without_a_study_is_named_by_its_dir(tmp_path):
    out = run_here("-m", "train.lr_d=1e-3,2e-4", "train.steps=2", "eval.every=0",
                   "eval.num_samples=100", "train.progress=false", "logger=wandb",
                   f"hydra.sweep.dir={tmp_path / 'lr-probe'}")
    assert out.returncode == 0, out.stderr[-2000:]
    found = {s.group: s for p in (tmp_path / "lr-probe").glob("*/seed=0")
             for s in streams(p)}
    assert sorted(found) == sorted(f"lr-probe/{p.parent.name}"
                                   for p in (tmp_path / "lr-probe").glob("*/seed=0"))
    # as Hydra writes the values (the cell's folder names them the same way)
    assert {tuple(s.tags) for s in found.values()} == {("train.lr_d=0.001",),
                                                       ("train.lr_d=0.0002",)}


def test_wandb_project_and_entity_come_from_the_environment_unless_the_config_names_them(
        monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_ENTITY", "lab")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert target(compose(["logger.mode=online"]).logger) == {
        "project": "from-env", "entity": "lab", "mode": "offline"}
    assert target(compose(["logger.project=mine", "logger.entity=me"]).logger) == {
        "project": "mine", "entity": "me", "mode": "offline"}
    monkeypatch.delenv("WANDB_PROJECT")
    monkeypatch.delenv("WANDB_MODE")
    assert target(compose([]).logger)["project"] == "ganlab"
    assert target(compose(["logger.mode=online"]).logger)["mode"] == "online"


def test_rescoring_writes_the_new_scores_into_the_same_wandb_run(sweep, tmp_path):
    original = next(iter(_runs(sweep)))
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    before = streams(run_dir)
    out = run_here(str(run_dir), "eval.num_samples=300", module="ganlab.evaluate")
    assert out.returncode == 0, out.stderr
    record = json.loads((run_dir / "result.json").read_text())
    after = streams(run_dir)
    assert len(after) == len(before) + 1
    latest = after[-1]
    assert latest.run_id == before[0].run_id  # the same W&B run, resumed
    for key, value in record["metrics"].items():
        if key.startswith("eval/"):
            assert latest.summary[key] == pytest.approx(value)
    assert latest.summary["rescored_at_step"] == record["step"]
    assert latest.config["comparability/eval.num_samples"] == 300


def test_a_rerun_joins_the_group_of_the_run_it_repeats(sweep, tmp_path, capsys):
    original, (record, s) = next(iter(_runs(sweep).items()))
    assert rerun_main([str(original), "--out", str(tmp_path / "again")]) == 0
    assert f"joins group {s.group!r}" in capsys.readouterr().err
    (again,) = streams(tmp_path / "again")
    assert (again.group, again.job_type) == (s.group, "rerun")
    assert again.name == f"{s.name} rerun" and again.run_id != s.run_id


def test_a_comparison_is_one_wandb_run_of_its_sweep_with_a_numeric_table(sweep):
    assert compare_main([str(sweep)]) == 0
    assert compare_main([str(sweep)]) == 0  # logged again: the same run, updated
    runs = sorted((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    first, second = (read_stream(next(r.glob("*.wandb"))) for r in runs)
    assert first.run_id == second.run_id
    assert (first.group, first.job_type, first.name) == ("trick_test", "compare",
                                                         "compare trick_test")
    assert first.config["sweep_dirs"] == [str(sweep)]
    assert first.config["match"] == "final"
    assert first.config["primary_metric"] == "eval/modes_covered"
    assert first.config["baselines"] == ["none"] and len(first.config["classes"]) == 1
    (path,) = runs[0].glob("files/media/table/compare/*.table.json")
    table = json.loads(path.read_text())
    assert table["columns"] == list(WANDB_COLUMNS)
    report = json.loads((sweep / "report.json").read_text())
    rows = {(r[1], r[2]): dict(zip(table["columns"], r, strict=True)) for r in table["data"]}
    for t in report["classes"][0]["tables"]:
        for r in t["rows"]:
            row = rows[(t["metric"], r["variant"])]
            assert row["n"] == r["n"] and isinstance(row["n"], int)
            assert row["baseline"] is r["is_baseline"]
            assert row["mean"] == pytest.approx(r["mean"]) and isinstance(row["mean"], float)
            if r["ci"] is not None:
                assert [row["ci_low"], row["ci_high"]] == pytest.approx(r["ci"])
            assert row["verdict"] == (r["verdict"] or "")
    assert {"report.html", "report.json"} <= {f for a in first.artifacts for f in a["files"]}
    # a quick look and a what-if log nothing
    assert compare_main([str(sweep), "--brief"]) == 0
    assert compare_main([str(sweep), "--seeds-for", "1"]) == 0
    assert len(list((sweep / "wandb").glob("offline-run-*"))) == 2


def test_long_group_and_run_names_fit_wandb_and_stay_apart():
    from ganlab.tracking import NAME_MAX, fit

    cell = ",".join(f"extras.minibatch_discrimination.kernels={k}" for k in range(4))
    a, b = fit(f"study/{cell},seed=1"), fit(f"study/{cell},seed=2")
    assert len(a) == len(b) == NAME_MAX and a != b
    assert a.startswith("study/extras.minibatch_discrimination.kernels=0,")
    assert fit("short") == "short" and fit(None) is None
