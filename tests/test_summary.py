"""The sweep summary: grouping by comparability class and variant, seed pooling, the CLI."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pytest

from ganlab.result import write_json_atomic
from ganlab.summary import load_results, main, summarise

TRICK = {"labels": "none", "loss": "minimax", "smoothing.real_target": 1.0,
         "smoothing.fake_target": 0.0, "norm.g": "none", "norm.d": "none",
         "norm.split_real_fake": False, "train.d_steps": 1, "train.g_steps": 1,
         "model.g_width": 64, "model.d_width": 64}
UNLABELLED = {"labels": "none", "dataset": "ring8", "split": "train", "resolution": "2d",
              "model": "mlp", "eval": {"metrics": "modes2d", "num_samples": 2500}}
LABELLED = dict(UNLABELLED, labels="labelled")

# eval metrics of the completed runs, by variant, in seed order
COVERED = {"minimax": [6, 7, 8], "non_saturating": [8, 8, 5]}
KL = {"minimax": [0.31, 0.12, 0.05], "non_saturating": [0.02, 0.04, math.nan]}
HQ = {"minimax": [55.5, 61.25, 70.0], "non_saturating": [80.0, 90.5, 85.25]}


def write_run(run_dir: Path, status: str, seed: int, trick: dict, comparability: dict,
              metrics: dict, hparams: dict | None = None) -> None:
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "result.json", {
        "status": status, "error": "diverged at step 300" if status == "diverged" else None,
        "seed": seed, "trick": trick, "comparability": comparability,
        "hparams": hparams or {"train.steps": 2000}, "metrics": metrics, "history": [], "step": 2000})


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for loss in ("minimax", "non_saturating"):
        for seed in range(3):
            write_run(root / f"loss={loss}" / f"seed={seed}", "completed", seed,
                      dict(TRICK, loss=loss), UNLABELLED,
                      {"eval/modes_covered": COVERED[loss][seed],
                       "eval/reverse_kl": KL[loss][seed],  # NaN is written as null
                       "eval/hq_pct": HQ[loss][seed],
                       "train/loss_d": 0.69})  # not an eval metric: no column
    # a diverged minimax run whose last evaluation must not enter the means
    write_run(root / "loss=minimax" / "seed=3", "diverged", 3, dict(TRICK, loss="minimax"),
              UNLABELLED, {"eval/modes_covered": 0, "eval/reverse_kl": 2.08,
                           "eval/hq_pct": 0.0})
    # a labelled run: compared only with labelled runs, so it gets a table of its own
    write_run(root / "labelled" / "seed=0", "completed", 0, dict(TRICK, labels="supervised"),
              LABELLED, {"eval/modes_covered": 8, "eval/reverse_kl": 0.01, "eval/hq_pct": 99.0})
    (root / "loss=minimax" / "notes.json").write_text("{}")  # not a result file
    return root


def _table(tables: list[dict], labels: str) -> dict:
    (table,) = [t for t in tables if t["comparability"]["labels"] == labels]
    return table


def test_load_results_finds_every_run(sweep):
    results = load_results([sweep])
    assert len(results) == 8
    assert {Path(r["run_dir"]).relative_to(sweep).as_posix() for r in results} == {
        *(f"loss={loss}/seed={s}" for loss in ("minimax", "non_saturating") for s in range(3)),
        "loss=minimax/seed=3", "labelled/seed=0"}


def test_classes_get_separate_tables(sweep):
    tables = summarise(load_results([sweep]))
    assert len(tables) == 2
    unlabelled, labelled = _table(tables, "none"), _table(tables, "labelled")
    assert unlabelled["comparability"] == UNLABELLED
    assert unlabelled["metrics"] == ["eval/hq_pct", "eval/modes_covered", "eval/reverse_kl"]
    # only the loss differs inside the unlabelled class, so it names the variants
    assert [row["variant"] for row in unlabelled["rows"]] == ["loss=minimax",
                                                             "loss=non_saturating"]
    (row,) = labelled["rows"]
    assert row["variant"] == "(single variant)"
    assert (row["n"], row["completed"], row["diverged"], row["failed"]) == (1, 1, 0, 0)
    assert row["metrics"]["eval/modes_covered"] == (8, 0.0, 1)  # one run: sd 0


def test_seeds_pool_per_variant_and_diverged_runs_are_excluded(sweep):
    rows = {row["variant"]: row for row in _table(summarise(load_results([sweep])), "none")["rows"]}
    mm, ns = rows["loss=minimax"], rows["loss=non_saturating"]
    assert (mm["n"], mm["completed"], mm["diverged"], mm["failed"]) == (4, 3, 1, 0)
    assert (ns["n"], ns["completed"], ns["diverged"], ns["failed"]) == (3, 3, 0, 0)

    # minimax coverage 6, 7, 8: mean 7 and sample sd 1 (the diverged 0 left out)
    assert mm["metrics"]["eval/modes_covered"] == (7.0, 1.0, 3)
    for name, values in (("eval/reverse_kl", KL["minimax"]), ("eval/hq_pct", HQ["minimax"])):
        assert mm["metrics"][name] == (statistics.fmean(values), statistics.stdev(values), 3)
    assert ns["metrics"]["eval/modes_covered"] == (
        statistics.fmean([8, 8, 5]), statistics.stdev([8, 8, 5]), 3)
    # the NaN KL was stored as null and is left out: two values remain
    assert ns["metrics"]["eval/reverse_kl"] == (
        statistics.fmean([0.02, 0.04]), statistics.stdev([0.02, 0.04]), 2)
    assert ns["metrics"]["eval/reverse_kl"][0] == pytest.approx(0.03)


def test_main_prints_the_tables(sweep, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "class: dataset=ring8 labels=none model=mlp resolution=2d" in out
    assert "class: dataset=ring8 labels=labelled model=mlp resolution=2d" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("variant"))
    assert header.split() == ["variant", "runs", "done/div/fail", "hq_pct", "modes_covered",
                              "reverse_kl"]
    hq, kl = HQ["minimax"], KL["minimax"]
    assert cells(lines, "loss=minimax") == [
        "loss=minimax", "4", "3/1/0",
        f"{statistics.fmean(hq):.3g} ± {statistics.stdev(hq):.2g}",
        "7 ± 1",
        f"{statistics.fmean(kl):.3g} ± {statistics.stdev(kl):.2g}"]
    assert cells(lines, "(single variant)") == [
        "(single variant)", "1", "1/0/0", "99 ± 0", "8 ± 0", "0.01 ± 0"]


def cells(lines: list[str], first: str) -> list[str]:
    """The cells of the table row that starts with `first` (columns are 2+ spaces apart)."""
    (line,) = [line for line in lines if line.startswith(first)]
    return re.split(r"\s{2,}", line.strip())


def test_main_on_an_empty_dir(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no result.json" in capsys.readouterr().err


def test_main_on_a_missing_dir(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_runs_with_different_hparams_are_not_pooled(tmp_path):
    for i, lr_d in enumerate((1e-4, 4e-4)):
        run_dir = tmp_path / f"train.lr_d={lr_d}" / "seed=0"
        write_run(run_dir, "completed", 0, TRICK, UNLABELLED, {"eval/modes_covered": 4 + 4 * i},
                  hparams={"train.steps": 2000, "train.lr_d": lr_d})
    rows = [row for table in summarise(load_results([tmp_path])) for row in table["rows"]]
    assert sorted(row["n"] for row in rows) == [1, 1]


def test_overlapping_dirs_count_each_run_once(sweep):
    tables = summarise(load_results([sweep, sweep / "loss=minimax"]))
    (mm,) = [row for row in _table(tables, "none")["rows"] if row["variant"] == "loss=minimax"]
    assert (mm["n"], mm["completed"]) == (4, 3)
