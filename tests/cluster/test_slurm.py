"""Sweeps through a real SLURM (two nodes, accounting, preemption): spread over the nodes and
equal to local runs; a preempted run checkpoints, is requeued and ends bit-equal to a run
never stopped; a cancelled job is recorded as what it is and a relaunch completes it; a
vectorised seed group is one job. `make test-cluster` (root; tests/cluster/daemons.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, assert_same_tensors, load_weights, run_cli

pytestmark = pytest.mark.cluster

# one CPU per run (each slurmd node has one): one thread, so a local run with one thread
# is the same computation
RUN = ["data=ring8", "train.batch_size=64", "eval.every=0", "eval.num_samples=200",
       "eval.grid_size=0", "logger=none", "train.progress=false"]
SLURM = ["launcher=slurm_cpu", "hydra.launcher.partition=cpu"]


def _records(sweep: Path) -> dict[int, tuple[Path, dict]]:
    return {json.loads(p.read_text())["seed"]: (p.parent, json.loads(p.read_text()))
            for p in sorted(sweep.rglob("result.json"))}


def _local(tmp: Path, seed: int, *extra: str) -> Path:
    """The same run on this machine with one thread, never interrupted."""
    out = run_cli(*RUN, *extra, f"seed={seed}", "train.threads=1",
                  f"hydra.run.dir={tmp / f'local{seed}'}")
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp / f"local{seed}"


def _sbatch(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().split(";")[0]


def _wait_for(what: str, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start_sweep(sweep: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganlab.train", "-m", *args,
                             f"hydra.sweep.dir={sweep}"], cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "offline"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _checkpointed(sweep: Path) -> bool:
    return any(sweep.rglob("checkpoints/last.pt"))


def test_a_sweep_spreads_over_both_nodes_and_equals_local_runs(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("-m", *SLURM, *RUN, "train.steps=200", "seed=0,1,2,3",
                  f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    records = _records(sweep)
    assert sorted(records) == [0, 1, 2, 3]
    assert {r["status"] for _, r in records.values()} == {"completed"}
    assert {r["host"]["slurm_node"] for _, r in records.values()} == {"n1", "n2"}
    # the thread budget follows the job's CPUs
    assert {r["host"]["threads"] for _, r in records.values()} == {1}
    for seed in (0, 3):
        run_dir, record = records[seed]
        local = _local(tmp_path, seed, "train.steps=200")
        assert record["metrics"] == json.loads((local / "result.json").read_text())["metrics"]
        assert_same_tensors(load_weights(run_dir), load_weights(local))


def test_a_preempted_run_resumes_and_ends_bit_equal(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SLURM, *RUN, "train.steps=4000", "train.checkpoint_every=100", "seed=0"]
    proc = _start_sweep(sweep, *args)
    try:
        _wait_for("the first checkpoint", lambda: _checkpointed(sweep))
        (run_dir, record), = _records(sweep).values()
        node = record["host"]["slurm_node"]
        # a job of the higher-priority partition on that node preempts it: SLURM sends the
        # job's signal (submitit's SIGUSR2), the run checkpoints, the job is requeued
        _sbatch("-p", "high", "-w", node, "-o", str(tmp_path / "high.out"), "--wrap",
                "sleep 3")
        stdout, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout[-3000:]  # the sweep waited for the requeued job
    (run_dir, record), = _records(sweep).values()
    log = (run_dir / "train.log").read_text()
    assert "interrupted by SIG" in log and "checkpoint saved" in log
    assert "resumed from" in log and record["status"] == "completed"
    assert_same_tensors(load_weights(run_dir), load_weights(_local(tmp_path, 0,
                                                                   "train.steps=4000")))


def test_a_cancelled_job_is_recorded_as_such_and_a_relaunch_completes_it(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SLURM, *RUN, "train.steps=4000", "train.checkpoint_every=100", "seed=1"]
    proc = _start_sweep(sweep, *args)
    try:
        _wait_for("the first checkpoint", lambda: _checkpointed(sweep))
        (run_dir, record), = _records(sweep).values()
        subprocess.run(["scancel", record["host"]["slurm_job_id"]], check=True)
        stdout, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    # the sweep says the job did not finish; the record says what happened: interrupted by
    # the scheduler's SIGTERM, with the step its checkpoint holds
    (run_dir, record), = _records(sweep).values()
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"], record
    assert proc.returncode != 0
    again = run_cli("-m", *args, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    (run_dir, record), = _records(sweep).values()
    assert record["status"] == "completed"
    assert "resumed from" in (run_dir / "train.log").read_text()
    assert_same_tensors(load_weights(run_dir), load_weights(_local(tmp_path, 1,
                                                                   "train.steps=4000")))


def test_a_vectorised_seed_group_is_one_slurm_job(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("-m", *SLURM, *RUN, "train.steps=100", "seed=0,1,2,3",
                  "fanout.vectorize_seeds=4", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    records = _records(sweep)
    assert sorted(records) == [0, 1, 2, 3]
    assert {r["host"]["seed_stack"] and tuple(r["host"]["seed_stack"])
            for _, r in records.values()} == {(0, 1, 2, 3)}
    assert len({r["host"]["slurm_job_id"] for _, r in records.values()}) == 1
    assert {r["status"] for _, r in records.values()} == {"completed"}
