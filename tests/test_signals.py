"""Stop signals as schedulers and users send them: several signals of one stop (SLURM's
preemption sends SIGTERM and the job's SIGUSR2 at once) are one request; the same signal
again stops at once, but never half-way through a checkpoint; SIGUSR2 reaches the cluster
launcher's handler whichever signal came first, and a requeue the scheduler already made
ends the attempt without a result."""

from __future__ import annotations

import os
import signal

import pytest

from ganlab.stops import Interrupted, StopSignals


@pytest.fixture
def usr2_calls():
    """A cluster launcher's SIGUSR2 handler (submitit's), recording its calls."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_a_schedulers_several_signals_are_one_request(usr2_calls):
    with StopSignals() as stop:
        stop.deferred = True
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)  # within 2 s: the same stop, not "at once"
        assert stop.requested == signal.SIGTERM
        assert stop.received == {signal.SIGTERM, signal.SIGUSR2}
        stop.pass_on(stop.requested)  # the requeue is SIGUSR2's, though SIGTERM came first
    assert usr2_calls == [signal.SIGUSR2]


def test_the_same_signal_again_stops_at_once_but_not_inside_a_checkpoint():
    with StopSignals() as stop:
        stop.deferred = True
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted) as err:
            with stop.shielded():
                os.kill(os.getpid(), signal.SIGINT)  # held while the checkpoint is written
                written = True
        assert written and err.value.at_once and err.value.signum == signal.SIGINT
        with pytest.raises(Interrupted) as err:
            os.kill(os.getpid(), signal.SIGINT)  # outside a shield: at once
        assert err.value.at_once


def test_a_failed_requeue_ends_the_attempt_without_a_result():
    def requeue(signum, frame):  # submitit's handler when SLURM has requeued the job itself
        raise RuntimeError("scontrol requeue: Job is pending execution")

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with StopSignals() as stop:
            stop.deferred = True
            os.kill(os.getpid(), signal.SIGUSR2)
            with pytest.raises(SystemExit):  # not an Exception: no result is written
                stop.pass_on(stop.requested)
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.parametrize("stopped_after", ["last moved to prev", "hash moved", "new last written"])
def test_a_checkpoint_save_killed_half_way_leaves_a_good_checkpoint(tmp_path, stopped_after):
    # save_checkpoint's steps: last.pt -> prev.pt, its hash -> prev.pt.sha256, the new
    # last.pt, its hash. A kill after any of them leaves the older state loadable.
    import hashlib
    import io

    import torch

    from ganlab.checkpoint import load_latest, save_checkpoint

    folder = tmp_path / "checkpoints"
    save_checkpoint({"step": 1}, folder / "last.pt", keep_previous=True)
    save_checkpoint({"step": 2}, folder / "last.pt", keep_previous=True)
    os.replace(folder / "last.pt", folder / "prev.pt")  # the third save, stopped part-way
    if stopped_after != "last moved to prev":
        os.replace(folder / "last.pt.sha256", folder / "prev.pt.sha256")
    if stopped_after == "new last written":
        buffer = io.BytesIO()
        torch.save({"step": 3}, buffer)
        (folder / "last.pt").write_bytes(buffer.getvalue())
    state = load_latest(folder)
    assert state["step"] == (3 if stopped_after == "new last written" else 2)
    # the kill that left "prev.pt" under the older hash's name still vouches for its bytes
    digest = hashlib.sha256((folder / "prev.pt").read_bytes()).hexdigest()
    assert digest in {(folder / n).read_text() for n in ("last.pt.sha256", "prev.pt.sha256")
                      if (folder / n).exists()}
