"""The comparer counts every record it finds: runs still running or interrupted are counted
and named, never dropped, and a seed that two runs of one variant trained is flagged, one of
them used by a rule that does not look at the outcome (the first by run dir path)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ganlab.compare.__main__ import main
from ganlab.compare.document import SCHEMA_VERSION, validate_document
from ganlab.compare.plan import plan
from ganlab.compare.runs import group_runs, load_results
from ganlab.compare.tables import build_tables, format_brief
from tests.test_compare_runs import TRICK, UNLABELLED, cells, write_run

MINIMAX = dict(TRICK, **{"loss.name": "minimax"})
NON_SATURATING = dict(TRICK, **{"loss.name": "non_saturating"})
BASELINE = ["--baseline", "loss.name=non_saturating"]


def _complete(root: Path, trick: dict, seed: int, covered: float) -> Path:
    run_dir = root / f"loss={trick['loss.name']}" / f"seed={seed}"
    write_run(run_dir, "completed", seed, trick, UNLABELLED, {"eval/modes_covered": covered})
    return run_dir


def _sweep(root: Path) -> Path:
    """Four completed seeds of each loss, minimax a mode better on every seed but one."""
    for seed in range(4):
        _complete(root, NON_SATURATING, seed, 5.0 + seed)
        _complete(root, MINIMAX, seed, 6.0 + seed + 0.1 * (seed % 2))
    return root


def _unfinished(root: Path, status: str, seed: int) -> Path:
    """A minimax run whose record still says `status` (no final metrics)."""
    run_dir = root / "loss=minimax" / f"seed={seed}"
    write_run(run_dir, status, seed, MINIMAX, UNLABELLED, {})
    return run_dir


def _brief_counts(text: str) -> dict[str, tuple[int, list[int]]]:
    """Per variant row of a brief table: (runs, the status counts of its status cell)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("loss="):
            label, runs, counts, *_ = re.split(r"\s{2,}", line.strip())
            out[label] = (int(runs), [int(c) for c in counts.split("/")])
    return out


@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_an_unfinished_run_is_counted_and_named_in_the_brief(tmp_path, status):
    root = _sweep(tmp_path)
    run_dir = _unfinished(root, status, 4).resolve()
    text = format_brief(load_results([root]))
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("variant")).split()[:3] == [
        "variant", "runs", "done/div/fail/unfin"]
    assert cells(lines, "loss=minimax")[:3] == ["loss=minimax", "5", "4/0/0/1"]
    assert cells(lines, "loss=non_saturating")[:3] == ["loss=non_saturating", "4", "4/0/0/0"]
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert warning.startswith("warning: loss=minimax: 1 unfinished run ")
    assert f"seed 4 {status} ({run_dir})" in warning and "in no statistic" in warning


def test_brief_counts_add_up_to_the_runs(tmp_path, capsys):
    root = _sweep(tmp_path)
    _unfinished(root, "running", 4)
    _unfinished(root, "interrupted", 5)
    write_run(root / "loss=minimax" / "seed=6", "diverged", 6, MINIMAX, UNLABELLED,
              {"eval/modes_covered": 0})
    write_run(root / "loss=non_saturating" / "seed=6", "failed", 6, NON_SATURATING,
              UNLABELLED, {})
    _complete(tmp_path / "again", MINIMAX, 1, 2.0)  # seed 1 of minimax a second time
    assert main([str(root), str(tmp_path / "again"), "--brief"]) == 0
    found = _brief_counts(capsys.readouterr().out)
    assert found == {"loss=minimax": (8, [4, 1, 0, 2, 1]),
                     "loss=non_saturating": (5, [4, 0, 1, 0, 0])}
    assert all(runs == sum(counts) for runs, counts in found.values())
    assert sum(runs for runs, _ in found.values()) == len(list(tmp_path.rglob("result.json")))


def test_the_report_counts_and_names_unfinished_runs(tmp_path, capsys):
    root = _sweep(tmp_path)
    running = _unfinished(root, "running", 4).resolve()
    assert main([str(root), *BASELINE, "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("variant"))
    assert header.split()[:5] == ["variant", "n", "div", "fail", "unfin"]
    assert cells(printed.splitlines(), "loss=minimax")[:5] == ["loss=minimax", "4", "0", "0",
                                                              "1"]
    assert f"seed 4 running ({running})" in printed
    doc = json.loads((root / "report.json").read_text())
    validate_document(doc)
    assert doc["schema_version"] == SCHEMA_VERSION
    (c,) = doc["classes"]
    assert c["status_counts"] == {"completed": 8, "running": 1}
    assert c["unfinished_runs"] == [{"variant": "loss=minimax", "seed": 4, "status": "running",
                                     "run_dir": str(running)}]
    assert c["duplicate_seeds"] == []
    rows = {r["variant"]: r for r in c["tables"][0]["rows"]}
    assert rows["loss=minimax"]["unfinished"] == 1 and rows["loss=minimax"]["n"] == 4
    md = (root / "report.md").read_text()
    assert "| variant | n | div | fail | unfin |" in md
    assert f"seed 4 running ({running})" in md


def test_a_duplicated_seed_is_flagged_and_the_first_by_path_is_used(tmp_path, capsys):
    first = _sweep(tmp_path / "a")
    second = tmp_path / "b"
    _complete(second, MINIMAX, 2, 1.0)  # the same seed and settings, another score
    used = (first / "loss=minimax" / "seed=2").resolve()
    other = (second / "loss=minimax" / "seed=2").resolve()
    # whichever order the dirs come in, the same run stands for the seed
    for dirs in ([first, second], [second, first]):
        results = load_results(dirs)
        (group,) = group_runs(results)
        minimax = next(v for v in group.variants if v.label == "loss=minimax")
        assert sorted(r["seed"] for r in minimax.runs) == [0, 1, 2, 3]
        (dup,) = minimax.duplicates
        assert dup.seed == 2 and dup.run_dirs == [str(used), str(other)]
        (t,) = build_tables(results, "modes_covered",
                            baselines=[{"loss.name": "non_saturating"}])
        row = next(r for r in t.rows if r.label == "loss=minimax")
        assert row.values[2] == 8.0 and row.n == 4 and row.pairs == 4
    text = format_brief(load_results([second, first]))
    lines = text.splitlines()
    assert cells(lines, "loss=minimax")[:3] == ["loss=minimax", "5", "4/0/0/1"]
    assert cells(lines, "loss=minimax")[3].startswith("7.55 ± ")  # 6, 7.1, 8, 9.1
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert warning.startswith("warning: loss=minimax: seed 2 was trained by 2 runs")
    assert f"({used}; {other})" in warning
    assert f"only the first by run dir is used ({used})" in warning


def test_a_duplicated_seed_is_in_the_printed_report_and_report_json(tmp_path, capsys):
    first = _sweep(tmp_path / "a")
    second = tmp_path / "b"
    _complete(second, MINIMAX, 2, 1.0)
    used = str((first / "loss=minimax" / "seed=2").resolve())
    other = str((second / "loss=minimax" / "seed=2").resolve())
    assert main([str(second), str(first), *BASELINE, "--out", str(tmp_path),
                 "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    assert f"warning: loss=minimax: seed 2 was trained by 2 runs with the same settings " \
           f"({used}; {other})" in printed
    doc = json.loads((tmp_path / "report.json").read_text())
    validate_document(doc)
    (c,) = doc["classes"]
    assert c["duplicate_seeds"] == [{"variant": "loss=minimax", "seed": 2,
                                     "run_dirs": [used, other], "used": used}]
    assert c["status_counts"] == {"completed": 8}  # one run per seed
    rows = {r["variant"]: r for r in c["tables"][0]["rows"]}
    assert rows["loss=minimax"]["values"]["2"] == 8.0
    assert "1 duplicate of a seed" in (tmp_path / "report.md").read_text()


def test_the_plan_pairs_a_duplicated_seed_once_and_says_so(tmp_path):
    first = _sweep(tmp_path / "a")
    _complete(tmp_path / "b", MINIMAX, 2, 1.0)
    found = plan(load_results([tmp_path / "b", first]),
                 baselines=[{"loss.name": "non_saturating"}])
    minimax = next(v for v in found["variants"] if v["variant"] == "loss=minimax")
    assert minimax["pairs"] == 4
    (warning,) = [line for line in found["lines"] if line.startswith("warning:")]
    used = (first / "loss=minimax" / "seed=2").resolve()
    assert f"only the first by run dir is used ({used})" in warning


def test_a_clean_sweep_reads_as_before(tmp_path, capsys):
    root = _sweep(tmp_path)
    text = format_brief(load_results([root]))
    assert "warning" not in text
    assert _brief_counts(text) == {"loss=minimax": (4, [4, 0, 0]),
                                   "loss=non_saturating": (4, [4, 0, 0])}
    assert main([str(root), *BASELINE, "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    assert "warning" not in printed and "unfin" not in printed
    header = next(line for line in printed.splitlines() if line.startswith("variant"))
    assert header.split()[:5] == ["variant", "n", "div", "fail", "mean"]
    (c,) = json.loads((root / "report.json").read_text())["classes"]
    assert c["unfinished_runs"] == [] and c["duplicate_seeds"] == []
    assert c["status_counts"] == {"completed": 8}


def test_the_thin_evidence_note_counts_ended_seeds_not_runs_still_going(tmp_path, capsys):
    # minimax: two seeds done, two still training; four runs, but two seeds of evidence
    for seed in range(4):
        _complete(tmp_path, NON_SATURATING, seed, 5.0 + seed)
    for seed in range(2):
        _complete(tmp_path, MINIMAX, seed, 6.0 + seed)
    for seed in (2, 3):
        _unfinished(tmp_path, "running", seed)
    assert main([str(tmp_path), *BASELINE, "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    assert "(as few as 2 ended seeds in a variant: the evidence is thin" in printed
    (c,) = json.loads((tmp_path / "report.json").read_text())["classes"]
    assert c["seeds"] == 2 and c["thin"]
    assert "with 2 ended seeds only large" in (tmp_path / "report.html").read_text()
