"""The cluster tests' daemons: real SLURM and a two-node Ray cluster for the session (started
by tests/cluster/daemons.py, stopped by their PIDs whether the tests pass or fail)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.cluster import daemons


@pytest.fixture(scope="session")
def cluster():
    """{"state": the daemons' folder, "env": what a client needs (SLURM_CONF, RAY_ADDRESS)}."""
    if os.geteuid() != 0:
        pytest.fail("the cluster tests start SLURM's daemons: run them as root "
                    "(`make test-cluster`)")
    # `make test-cluster` names the folder, so that it can stop the daemons even if pytest
    # itself is killed
    state = Path(os.environ.get("GANLAB_CLUSTER_STATE") or
                 tempfile.mkdtemp(prefix="ganlab-cluster-"))
    try:
        env = daemons.up(state)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield {"state": state, "env": env}
    finally:
        daemons.down(state)
        for k, v in locals().get("saved", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
