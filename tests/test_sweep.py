"""Multirun sweeps through the real CLI: layout, the sweep goes on past bad runs, summary."""

from __future__ import annotations

import json

from tests.helpers import run_here

FAST = ["train.steps=2", "train.batch_size=16", "eval.every=0", "eval.num_samples=100",
        "logger=none", "train.progress=false", "train.device=cpu"]


def _results(sweep_dir):
    return {p.parent.relative_to(sweep_dir).as_posix(): json.loads(p.read_text())
            for p in sweep_dir.rglob("result.json")}


def test_smoothing_by_seed_multirun_makes_nine_runs_in_one_sweep_dir(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_here("-m", "data=ring8", "smoothing=none,one_sided,two_sided", "seed=0,1,2",
                  *FAST, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-2000:]
    results = _results(sweep)
    assert len(results) == 9
    # runs that differ only by seed sit side by side in one cell
    cells = {name.rsplit("/", 1)[0] for name in results}
    assert len(cells) == 3 and all("seed" not in cell for cell in cells)
    assert {name.rsplit("/", 1)[1] for name in results} == {"seed=0", "seed=1", "seed=2"}
    assert all(r["status"] == "completed" for r in results.values())
    by_cell = {}
    for name, r in results.items():
        by_cell.setdefault(name.rsplit("/", 1)[0], set()).add(
            (r["trick"]["smoothing.real_target"], r["trick"]["smoothing.fake_target"]))
    assert sorted(v.pop() for v in by_cell.values()) == [(0.9, 0.0), (0.9, 0.1), (1.0, 0.0)]
    for name in results:  # every run keeps its composed config for re-running
        assert (sweep / name / ".hydra" / "config.yaml").exists()
    assert "9 completed, 0 diverged, 0 failed" in out.stdout + out.stderr
    # it ends with its primary metric per variant and the command that compares it
    closing = out.stdout.rstrip().splitlines()
    assert closing[-1] == f"next: python -m ganlab.compare {sweep}"
    start = closing.index("eval/modes_covered per variant (mean ± sd over seeds; no tests yet):")
    assert closing[start + 2].split() == ["variant", "runs", "done/div/fail", "modes_covered"]
    assert sorted(line.split()[0] for line in closing[start + 4:-1]) == [
        "none", "one_sided", "two_sided"]


def test_sweep_goes_on_past_a_diverged_run_and_refuses_a_bad_cell_up_front(tmp_path):
    sweep = tmp_path / "sweep"
    common = [*[a for a in FAST if a != "train.steps=2"], "train.steps=60",
              "train.lr_g=${train.lr_d}", "train.log_every=10"]
    # a cell no run of can start is refused before the first job: nothing trains, nothing
    # is written, one line names the cell and the key
    out = run_here("-m", "train.lr_d=1e30,2e-4", "smoothing.real_target=1.5,1.0", *common,
                  f"hydra.sweep.dir={sweep}")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "ganlab: config error: train.lr_d=1e+30,smoothing.real_target=1.5: "
        "smoothing.real_target=1.5 is not allowed; it is 1 - alpha and must be in (0, 1]"]
    assert not sweep.exists()
    # lr 1e30 diverges; the sweep goes on, and the other run completes
    out = run_here("-m", "train.lr_d=1e30,2e-4", *common, f"hydra.sweep.dir={sweep}")
    statuses = sorted(r["status"] for r in _results(sweep).values())
    assert statuses == ["completed", "diverged"]
    assert out.returncode == 0
    assert "1 completed, 1 diverged, 0 failed" in out.stdout + out.stderr
