"""Sweeps through a real two-node Ray cluster: runs land on both nodes; a worker node killed
mid-sweep loses nothing (Ray retries the task elsewhere, the run resumes from its checkpoint
and ends bit-equal to a run never stopped). `make test-cluster`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cluster import daemons
from tests.cluster.test_slurm import RUN, _local, _records, _wait_for
from tests.helpers import REPO, assert_same_tensors, load_weights, run_cli

pytestmark = pytest.mark.cluster


def _ray(cluster) -> list[str]:
    return ["launcher=ray", f"fanout.ray_address={cluster['env']['RAY_ADDRESS']}", "fanout.gpu_share=0"]


def _start_ray_sweep(cluster, sweep, steps: str, stderr=subprocess.STDOUT,
                     start_new_session: bool = False) -> subprocess.Popen:
    """Seeds 0 and 1 through launcher=ray, checkpointing every 100 rounds, in the background."""
    args = [*_ray(cluster), *RUN, steps, "train.checkpoint_every=100", "seed=0,1",
            f"hydra.sweep.dir={sweep}"]
    return subprocess.Popen([sys.executable, "-m", "ganlab.train", "-m", *args], cwd=REPO,
                            env={**os.environ, **daemons.ENV, "WANDB_MODE": "offline"},
                            stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=start_new_session)


def test_a_ray_sweep_runs_on_both_nodes(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("-m", *_ray(cluster), *RUN, "train.steps=300", "seed=0,1,2,3",
                  f"hydra.sweep.dir={sweep}", env=daemons.ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    records = _records(sweep)
    assert sorted(records) == [0, 1, 2, 3]
    assert {r["status"] for _, r in records.values()} == {"completed"}
    assert len({r["host"]["ray_node"] for _, r in records.values()}) == 2
    assert {r["host"]["threads"] for _, r in records.values()} == {1}  # fanout.cpus_per_run
    assert {r["host"]["niceness"] for _, r in records.values()} == {os.nice(0)}  # RAY_worker_niceness


def test_runs_share_a_gpu_by_fraction_and_each_sees_one_device(cluster, tmp_path):
    # the head's one logical GPU, half of it per run: both runs land there, each sees device 0
    sweep = tmp_path / "sweep"
    ray = [*_ray(cluster)[:-1], "fanout.gpu_share=0.5"]
    out = run_cli("-m", *ray, *RUN, "train.steps=50", "seed=0,1", f"hydra.sweep.dir={sweep}",
                  env=daemons.ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [r for _, r in _records(sweep).values()]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert [r["host"]["cuda_visible_devices"] for r in records] == ["0", "0"]
    assert len({r["host"]["ray_node"] for r in records}) == 1  # the node with the GPU


def test_a_killed_worker_node_loses_nothing(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _start_ray_sweep(cluster, sweep, "train.steps=6000")
    try:
        _wait_for("both runs' checkpoints",
                  lambda: len(list(sweep.rglob("checkpoints/last.pt"))) == 2)
        daemons.kill(cluster["state"], "ray-worker")  # the node is gone, mid-run
        stdout, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
        daemons.restart_ray_worker(cluster["state"])
    assert proc.returncode == 0, stdout[-3000:]
    records = _records(sweep)
    assert {r["status"] for _, r in records.values()} == {"completed"}
    logs = [(run_dir / "train.log").read_text() for run_dir, _ in records.values()]
    assert sum("resumed from" in log for log in logs) >= 1  # the lost node's run came back
    for seed, (run_dir, _) in records.items():
        assert_same_tensors(load_weights(run_dir),
                            load_weights(_local(tmp_path, seed, "train.steps=6000")))


def test_ctrl_c_stops_a_ray_sweep_with_a_checkpoint_per_run(cluster, tmp_path):
    # Ray's workers are no children of the sweep's process: the runs' locks name them
    import signal

    sweep = tmp_path / "sweep"
    # its own process group, as a terminal's; stderr apart, for its last line
    proc = _start_ray_sweep(cluster, sweep, "train.steps=100000", stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for("both runs' checkpoints",
                  lambda: len(list(sweep.rglob("checkpoints/last.pt"))) == 2)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
        _, err = proc.communicate(timeout=200)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == ("ganlab: sweep stopped; relaunch the same command "
                                            "to resume it")
    records = _records(sweep)
    assert {r["status"] for _, r in records.values()} == {"interrupted"}
    assert all("checkpoint saved" in r["error"] for _, r in records.values())
