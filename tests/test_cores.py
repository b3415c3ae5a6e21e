"""The thread budget (ganlab.cores): each launcher's runs share the cores instead of each
starting a thread per core; the budget is applied and recorded. And launchers outside the
core install name the extra they need."""

from __future__ import annotations

import json

import pytest

import ganlab.configure as configure
from ganlab.config import ConfigError
from ganlab.cores import available_cores, cpu_model, thread_budget
from tests.helpers import run_here

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.mark.parametrize("launcher, cores, expected", [
    ({"_target_": BASIC}, 8, 8),  # one run at a time: every core
    ({"_target_": JOBLIB, "n_jobs": 2}, 8, 4),
    ({"_target_": JOBLIB, "n_jobs": 3}, 8, 2),
    ({"_target_": JOBLIB, "n_jobs": 16}, 8, 1),  # never below one thread
    ({"_target_": JOBLIB, "n_jobs": -1}, 8, 1),  # joblib's -1: a job per core
    ({"_target_": RAY, "ray": {"remote": {"num_cpus": 3}}}, 8, 3),  # Ray's reservation
    ({"_target_": SLURM, "cpus_per_task": 6}, 64, 6),  # the job's allocation, not the node
])
def test_each_launcher_gives_a_run_its_share_of_the_cores(launcher, cores, expected,
                                                          monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads, why = thread_budget(0, launcher, cores)
    assert threads == expected and why
    assert thread_budget(5, launcher, cores) == (5, "train.threads")  # the override


def test_a_slurm_job_uses_its_allocation(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert thread_budget(0, {"_target_": BASIC}, 64) == (3, "SLURM_CPUS_PER_TASK=3")


@pytest.mark.parametrize("omp, expected", [
    ("1", (1, "OMP_NUM_THREADS=1 (below 8 cores / 2 joblib jobs: 4)")),
    ("3", (3, "OMP_NUM_THREADS=3 (below 8 cores / 2 joblib jobs: 4)")),
    ("2,1", (2, "OMP_NUM_THREADS=2 (below 8 cores / 2 joblib jobs: 4)")),  # nested: 1st level
    ("16", (4, "8 cores / 2 joblib jobs")),  # a cap, never a raise above the share
    ("4", (4, "8 cores / 2 joblib jobs")),
    ("0", (4, "8 cores / 2 joblib jobs")),  # not a thread count: ignored
    ("many", (4, "8 cores / 2 joblib jobs")),
])
def test_omp_num_threads_caps_the_share(omp, expected, monkeypatch):
    """Two sweeps side by side with fanout.n_jobs=1 each take every core; the OMP_NUM_THREADS=1
    in front of each command is what keeps them to one thread, so it caps the share."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert thread_budget(0, {"_target_": JOBLIB, "n_jobs": 2}, 8) == expected
    assert thread_budget(6, {"_target_": JOBLIB, "n_jobs": 2}, 8) == (6, "train.threads")


@pytest.mark.heavy
def test_a_run_applies_and_records_the_omp_cap(tmp_path, monkeypatch):
    import ganlab.cores as cores

    monkeypatch.setattr(cores, "available_cores", lambda: 4)  # a share above the cap
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = run_here("train.steps=2", "eval.every=0", "eval.num_samples=100", "logger=none",
                   "train.progress=false", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    host = json.loads((tmp_path / "result.json").read_text())["host"]
    assert host["threads"] == 1
    # what it computed with: another CPU model or torch version need not give the same bits
    import torch

    assert (host["cpu"], host["torch"], host["gpu"]) == (cpu_model(), torch.__version__, None)
    assert host["threads_from"] == "OMP_NUM_THREADS=1 (below 4 cores, one run at a time: 4)"


def test_the_cpu_model_is_read_from_the_kernel_and_never_missing(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                    "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu\n\n"
                    "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nmodel name\t:\n")  # blank name
    fallback = cpu_model(tmp_path / "missing")
    assert cpu_model(info) == fallback and fallback.strip()


def test_available_cores_respects_the_affinity():
    import os

    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.heavy
def test_a_joblib_sweep_applies_and_records_the_budget(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # joblib sets it in its workers
    out = run_here("-m", "launcher=joblib", "fanout.n_jobs=2", "seed=0,1", "train.steps=2",
                  "eval.every=0", "eval.num_samples=100", "logger=none",
                  "train.progress=false", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    hosts = [json.loads(p.read_text())["host"] for p in tmp_path.rglob("result.json")]
    expected = max(1, available_cores() // 2)
    assert [h["threads"] for h in hosts] == [expected, expected]
    assert all(h["threads_from"] == f"{available_cores()} cores / 2 joblib jobs"
               for h in hosts)


def test_a_launcher_without_its_extra_is_named_in_one_line(monkeypatch):
    monkeypatch.setitem(configure.LAUNCHER_EXTRAS, "ray", ("ray", "no_such_ray_plugin"))
    with pytest.raises(ConfigError) as err:
        configure.check_overrides(["-m", "launcher=ray"])
    assert "launcher=ray needs the ray extra: pip install 'ganlab[ray]'" in str(err.value)
    configure.check_overrides(["-m", "launcher=joblib"])  # the core install's launcher
