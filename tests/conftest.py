"""Shared fixtures: composed configs, the offline MNIST copy, quiet W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _keep_to_own_cores() -> None:
    """`pytest -n N` (pytest-xdist): each worker, and every process it starts, keeps to a
    core of its own, so N workers never run more threads than the machine has cores (a run's
    thread budget reads the same affinity). Before torch is imported: its thread pool is
    sized from the affinity then."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and hasattr(os, "sched_setaffinity")):
        return
    cores = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= len(cores):
        share = len(cores) // workers
        index = int(worker[2:])
        os.sched_setaffinity(0, cores[index * share:(index + 1) * share])


_keep_to_own_cores()

from ganlab.configure import compose  # noqa: E402 (after the worker keeps to its cores)

REPO = Path(__file__).resolve().parents[1]
# CI and offline machines keep the MNIST files in a shared folder beside the checkout.
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config):
    # Trained feature classifiers and real statistics go to a cache of this test session,
    # shared by its subprocesses, never to the user's own cache.
    if "GANLAB_CACHE" not in os.environ:
        import tempfile

        os.environ["GANLAB_CACHE"] = tempfile.mkdtemp(prefix="ganlab-test-cache-")
        config._ganlab_cache = os.environ["GANLAB_CACHE"]  # made here: removed at the end


def pytest_unconfigure(config):
    made = getattr(config, "_ganlab_cache", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("GANLAB_CACHE", None)


def pytest_collection_modifyitems(config, items):
    # the tests that start several processes go first: with workers (pytest -n), a long one
    # started last would keep one worker busy while the others have nothing left to do
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


def find_mnist_root() -> Path | None:
    for root in (os.environ.get("GANLAB_DATA_ROOT"), SHARED_DATA):
        if root and (Path(root) / "MNIST" / "raw").is_dir():
            return Path(root)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = find_mnist_root()
    if root is None:
        pytest.skip("MNIST IDX files not found (set GANLAB_DATA_ROOT)")
    return root


@pytest.fixture
def make_cfg():
    """compose(overrides) with quiet, CPU-only, no-logger defaults for tests."""

    def _make(*overrides: str):
        base = ["logger=none", "train.device=cpu", "train.progress=false"]
        return compose(base + list(overrides))

    return _make
