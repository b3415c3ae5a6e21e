"""How a run stops and says how far it is: stop signals and their requests, passing SIGTERM
on to a sweep's worker processes, and progress lines for runs without a terminal.

- `StopSignals`: SIGTERM/SIGINT (and a cluster launcher's SIGUSR2) during the loop wait for
  the round to end, so the loop can checkpoint; the same signal again (or any after 2 s)
  stops at once, but never in the middle of writing a checkpoint.
- `stop_workers_too`: the SIGTERM handler of a multirun's own process: joblib's workers get
  the signal, checkpoint and record `interrupted`, then the sweep ends.
- `ProgressLines`: one log line every 30 s when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("ganlab.train")


class Interrupted(BaseException):
    """A stop signal arrived (SIGTERM, SIGINT, or a cluster's SIGUSR2). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way out can swallow it."""

    def __init__(self, signum: int, at_once: bool = False):
        self.signum, self.at_once = signum, at_once
        how = " (a second time: stopped at once, the last checkpoint kept)" if at_once else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name}{how}")


AT_ONCE_AFTER_S = 2.0  # another kind of signal within this of the first is the same request


class StopSignals:
    """Stop signals during a run. While the loop runs (`deferred`), a request waits for the
    round to end, so the loop can checkpoint a consistent state; the same signal again, any
    signal 2 s or more after the first, or one outside the loop, interrupts at once. A
    scheduler that stops a job sends several signals at once (SLURM's preemption: SIGCONT,
    SIGTERM and the job's SIGUSR2 within milliseconds): those are one request. Inside
    `shielded()` (a checkpoint being written) an at-once interruption waits for the end of
    the block. SIGUSR2 is taken only where a Python handler owns it (submitit's "time is up:
    checkpoint and requeue"): the run checkpoints first, then `pass_on` hands the signal to
    that handler, whichever signal came first. Installed only in the main thread (where
    Python delivers signals)."""

    def __init__(self):
        self.requested: int | None = None
        self.received: set[int] = set()
        self.deferred = False
        self._first_at = 0.0
        self._shield = 0
        self._held: int | None = None  # an at-once signal that arrived inside the shield
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            cluster = signal.getsignal(signal.SIGUSR2)
            sigs = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR2] if callable(cluster)
                                                      else [])
            for sig in sigs:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        first = self.requested is None
        self.received.add(signum)
        if self.deferred and first:
            self.requested, self._first_at = signum, time.monotonic()
            # a round can be long (large train.d_steps): say what happens meanwhile
            os.write(2, f"ganlab: {signal.Signals(signum).name}: stopping after this round with "
                        "a checkpoint; send it again to stop at once\n".encode())
            return
        if (self.deferred and signum != self.requested
                and time.monotonic() - self._first_at < AT_ONCE_AFTER_S):
            return  # another signal of the same stop (a scheduler sends several)
        if self._shield:
            self._held = signum
            return
        raise Interrupted(signum, at_once=not first)

    @contextmanager
    def shielded(self):
        """A block no stop interrupts half-way (a checkpoint being written): an at-once
        interruption raises when it ends."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        if not self._shield and self._held is not None:
            signum, self._held = self._held, None
            raise Interrupted(signum, at_once=True)

    def pass_on(self, signum: int) -> None:
        """Hand SIGUSR2, if it came, to the handler that owned it before (the cluster
        launcher requeues the job, which then resumes from the checkpoint)."""
        previous = self._previous.get(signal.SIGUSR2)
        if signal.SIGUSR2 in self.received | {signum} and callable(previous):
            signal.signal(signal.SIGUSR2, previous)
            try:
                previous(signal.SIGUSR2, None)
            except Exception as e:
                # SLURM preempting with PreemptMode=REQUEUE has requeued the job itself, and
                # submitit's own requeue fails. End this attempt without a result (as submitit
                # would): a result would tell the sweep the run is done while the requeued
                # job goes on
                log.warning("the launcher's requeue failed (%s: %s); ending this attempt "
                            "without a result, for the scheduler's requeue to resume it",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                raise SystemExit(-1) from None


class ProgressLines:
    """Progress for a run without a terminal (a log file, a cluster job, a launcher worker):
    one log line every `every_s` seconds with the step, the rate and the time left."""

    def __init__(self, total: int, start: int, enabled: bool, every_s: float = 30.0):
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.start_step, self.started = start, time.monotonic()
        self.next_at = self.started + every_s

    def update(self, step: int) -> None:
        if not self.enabled or time.monotonic() < self.next_at:
            return
        now = time.monotonic()
        self.next_at = now + self.every_s
        rate = (step - self.start_step) / max(now - self.started, 1e-9)
        left = (self.total - step) / rate if rate > 0 else float("inf")
        log.info("step %d/%d (%.0f %%), %.3g rounds/s, about %s left", step, self.total,
                 100 * step / self.total, rate, _duration(left))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s" if m else f"{s} s"


def is_launcher_worker(pid: int | str = "self") -> bool:
    try:
        return b"popen_loky" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _worker_processes() -> list[int]:
    """This process's children that are launcher workers (joblib's loky processes)."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        children += [int(pid) for pid in task.read_text().split()]
    return [pid for pid in children if is_launcher_worker(pid)]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def stop_workers_too(signum, frame) -> None:
    """SIGTERM to a sweep that runs its jobs in worker processes: pass it on, so that each
    running run checkpoints and records `interrupted` instead of going on as an orphan,
    wait for them, then end (a relaunch resumes the sweep)."""
    workers = _worker_processes()
    if not workers:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    os.write(2, f"ganlab: {signal.Signals(signum).name}: stopping {len(workers)} worker "
                "process(es) with a checkpoint each\n".encode())
    for pid in workers:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 120
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.write(2, b"ganlab: sweep stopped; relaunch the same command to resume it\n")
    os._exit(128 + signum)
