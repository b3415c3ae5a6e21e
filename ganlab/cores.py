"""The thread budget: how many CPU threads one run may use.

Runs that share a machine must not each start torch's default pool (one thread per core):
two runs at a time on two cores then run four threads, and a small model pays up to six times
its time in contention. A run gets `cores it may use / runs at once`, from the launcher that
started it:

| launcher | threads per run |
| --- | --- |
| basic (one run at a time in the sweep's process) | every core the process may use |
| joblib (`fanout.n_jobs` runs at once) | cores // n_jobs |
| Ray, local or a cluster (`hydra.launcher.ray.remote.num_cpus`) | the CPUs Ray reserved for the run |
| submitit, SLURM or local (`hydra.launcher.cpus_per_task`) | cpus_per_task |

A stacked group of seeds (`fanout.vectorize_seeds`) is one job and counts once.
`train.threads=N` overrides it. "Cores the process may use" are its CPU affinity, capped by
a cgroup's CPU quota (a container limited to 2 CPUs on a 64-core host gets 2). An
`OMP_NUM_THREADS` set in the environment caps the share (never raises it): the launcher only
knows its own runs, so two sweeps launched side by side, each with `fanout.n_jobs=1` on two
cores, would each take both cores; `OMP_NUM_THREADS=1` in front of each keeps them to one.
The budget is applied with `torch.set_num_threads` before the run's first operation and
recorded in result.json's `host` (`threads`, `threads_from`).
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any


def available_cores() -> int:
    """The cores this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, as the kernel reports it ("AMD EPYC 7B13", "Intel(R) Xeon(R) CPU
    @ 2.20GHz"); the platform's processor string where there is no /proc/cpuinfo. Runs with
    the same settings on two CPU models need not agree bit for bit (their arithmetic kernels
    differ), so a record names the one it trained on."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "Processor", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def omp_cap() -> int | None:
    """The environment's OMP_NUM_THREADS as a thread count (its first level where it lists
    several, as OpenMP's nested form does); None where it is unset or not a positive number."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def thread_budget(requested: int, launcher: dict | None, cores: int | None = None
                  ) -> tuple[int, str]:
    """(threads for one run, why): `requested` (train.threads) if > 0, else the launcher's
    share of the cores, capped by OMP_NUM_THREADS where it is set (module docstring).
    `launcher` is the job's `hydra.launcher` config."""
    if requested > 0:
        return requested, "train.threads"
    threads, why = _share(launcher, cores or available_cores())
    cap = omp_cap()
    if cap is not None and cap < threads:
        return cap, f"OMP_NUM_THREADS={cap} (below {why}: {threads})"
    return threads, why


def _share(launcher: dict | None, cores: int) -> tuple[int, str]:
    target = str((launcher or {}).get("_target_", ""))
    if "Joblib" in target:
        jobs = runs_at_once(launcher, cores)
        return max(1, cores // jobs), f"{cores} cores / {jobs} joblib jobs"
    if "Ray" in target:
        cpus = _number(((launcher.get("ray") or {}).get("remote") or {}).get("num_cpus"))
        if cpus:
            return max(1, int(cpus)), f"{cpus:g} CPUs Ray reserved for the run"
    if "submitit" in target:
        cpus = _number(launcher.get("cpus_per_task"))
        if cpus:
            return max(1, int(cpus)), f"cpus_per_task={cpus:g}"
    slurm = _number(os.environ.get("SLURM_CPUS_PER_TASK"))
    if slurm:
        return max(1, int(slurm)), f"SLURM_CPUS_PER_TASK={slurm:g}"
    return cores, f"{cores} cores, one run at a time"


def runs_at_once(launcher: dict | None, cores: int | None = None) -> int:
    """How many runs of a sweep share this machine at once: joblib's `n_jobs` (-1: one per
    core); one for every other launcher (a cluster's jobs run elsewhere, the basic launcher
    runs one after another)."""
    launcher = launcher or {}
    if "Joblib" not in str(launcher.get("_target_", "")):
        return 1
    jobs = int(_number(launcher.get("n_jobs")) or 1)
    return (cores or available_cores()) if jobs < 1 else jobs


# -- the local launcher's slots (resolvers of conf/launcher/) ------------------------------------
def visible_gpus(gpus: int | None) -> int:
    if gpus is not None:
        return int(gpus)
    import torch

    return torch.cuda.device_count()


def ray_gpus(gpus: int | None) -> int | None:
    # None lets Ray detect the GPUs itself; a number declares them (logical GPUs in tests)
    return None if gpus is None else int(gpus)


def local_runs_at_once(n_jobs: int, gpus: int | None, runs_per_gpu: int) -> int:
    """launcher=local: runs_per_gpu on each GPU, else n_jobs on the CPUs."""
    n = visible_gpus(gpus)
    return n * runs_per_gpu if n else n_jobs


def cpus_per_run(n_jobs: int, gpus: int | None, runs_per_gpu: int) -> int:
    """launcher=local: each run's share of the cores (Ray reserves them; its threads)."""
    return max(1, available_cores() // local_runs_at_once(n_jobs, gpus, runs_per_gpu))


def ray_cpus(n_jobs: int, gpus: int | None, runs_per_gpu: int) -> int:
    """launcher=local: the CPUs Ray schedules on: the runs at once times each one's share."""
    return local_runs_at_once(n_jobs, gpus, runs_per_gpu) * cpus_per_run(n_jobs, gpus, runs_per_gpu)


def gpu_share(gpus: int | None, runs_per_gpu: int) -> float:
    return 1.0 / runs_per_gpu if visible_gpus(gpus) else 0.0
