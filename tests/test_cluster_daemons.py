"""The cluster tests' daemon bookkeeping (tests/cluster/daemons.py), without the daemons: a
cluster left running by an interrupted run is stopped by the next `up`, a PID the kernel has
given to another process is never signalled, and a port something else holds stops `up` with a
message naming it."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import daemons


def _sleeper(state, name):
    return daemons._start(state, name, ["sleep", "60"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _held_port(monkeypatch, daemon):
    """A port something else listens on, named as `daemon`'s only port (Ray's is free)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setattr(daemons, "PORTS", {port: daemon})
        monkeypatch.setattr(daemons, "RAY_PORT", _free_port())
        yield port


def _gone(proc, timeout=10):
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc.poll() is not None


def test_down_stops_what_it_started_and_only_that(tmp_path):
    a, b = _sleeper(tmp_path, "a"), _sleeper(tmp_path, "b")
    assert set(daemons._pids(tmp_path)) == {"a", "b"}
    assert daemons.down(tmp_path) == ["a", "b"]
    assert _gone(a) and _gone(b)
    assert daemons.down(tmp_path) == []  # nothing left running: nothing to stop


def test_a_reused_pid_is_never_signalled(tmp_path):
    other = subprocess.Popen(["sleep", "60"])  # not started by daemons: stands for a reused PID
    try:
        # the record names this PID, but with the start time of the process it used to be
        start = daemons._start_time(other.pid)
        (tmp_path / "pids.json").write_text(json.dumps({"slurmd-n1": [other.pid, start - 1]}))
        assert daemons._pids(tmp_path) == {}
        assert daemons.down(tmp_path) == []
        daemons.stop(tmp_path, "slurmd-n1")
        daemons.kill(tmp_path, "slurmd-n1")
        time.sleep(0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_stopped_daemon_not_yet_reaped_is_not_running(tmp_path):
    proc = _sleeper(tmp_path, "slurmctld")
    proc.kill()
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.time() + 10  # a zombie until its parent (this test) reaps it
    while stat.read_text().rsplit(") ", 1)[1][:1] != "Z" and time.time() < deadline:
        time.sleep(0.05)
    assert daemons._start_time(proc.pid) is not None  # still in the process table
    assert daemons._pids(tmp_path) == {}
    assert daemons.down(tmp_path) == []  # nothing to stop, and not said to be stopped
    proc.wait()


def test_records_in_an_older_format_are_ignored(tmp_path):
    (tmp_path / "pids.json").write_text(json.dumps({"munged": 1}))  # {name: pid}: PID 1!
    assert daemons._pids(tmp_path) == {}
    (tmp_path / "pids.json").write_text("{not json")
    assert daemons._pids(tmp_path) == {}


def test_busy_ports_names_the_listening_ones():
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers
        busy, free = listening.getsockname()[1], closed.getsockname()[1]
        assert daemons.busy_ports({busy: "slurmctld", free: "slurmdbd"}) == [
            f"{busy} (slurmctld)"]


def test_up_stops_a_cluster_left_running_then_refuses_a_taken_port(tmp_path, monkeypatch,
                                                                   capsys):
    left = _sleeper(tmp_path, "ray-head")  # an interrupted run's daemon, in the same STATE
    (tmp_path / "slurm.conf").write_text("old")
    started = []
    monkeypatch.setattr(daemons, "start_slurm", lambda state: started.append("slurm"))
    monkeypatch.setattr(daemons, "start_ray", lambda state: started.append("ray"))
    with _held_port(monkeypatch, "slurmctld") as port:
        with pytest.raises(RuntimeError, match=rf"^port {port} \(slurmctld\) is already in use"
                                               r".*daemons\.py down STATE"):
            daemons.up(tmp_path)
    assert _gone(left)
    assert "stopped ray-head, left running in" in capsys.readouterr().err
    assert started == []  # refused before starting anything
    assert not (tmp_path / "slurm.conf").exists()  # the old state is gone: a fresh start


def test_up_starts_when_the_ports_are_free(tmp_path, monkeypatch):
    free = _free_port()
    monkeypatch.setattr(daemons, "PORTS", {free: "slurmctld"})
    monkeypatch.setattr(daemons, "RAY_PORT", free)
    monkeypatch.setattr(daemons, "start_slurm", lambda state: {"SLURM_CONF": "c"})
    monkeypatch.setattr(daemons, "start_ray", lambda state: {"RAY_ADDRESS": "a"})
    assert daemons.up(tmp_path) == {"SLURM_CONF": "c", "RAY_ADDRESS": "a"}
    assert json.loads((tmp_path / "env.json").read_text()) == {"SLURM_CONF": "c",
                                                                "RAY_ADDRESS": "a"}


def test_the_command_line_refuses_a_taken_port_in_one_line(tmp_path, monkeypatch, capsys):
    with _held_port(monkeypatch, "slurmd n1") as port:
        assert daemons.main(["up", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"[cluster] up: port {port} (slurmd n1) is already in use: a cluster from "
                   "an earlier run that was not stopped? `python tests/cluster/daemons.py down "
                   "STATE` stops the daemons recorded in that run's STATE folder; otherwise "
                   "stop what holds the port"]
