"""How a run stops and says how far it is: stop signals and their requests, passing SIGTERM
on to a sweep's worker processes, and progress lines for runs without a terminal.

- `StopSignals`: SIGTERM/SIGINT (and a cluster launcher's SIGUSR2) during the loop wait for
  the round to end, so the loop can checkpoint; a second signal stops at once.
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
from pathlib import Path

log = logging.getLogger("ganlab.train")


class Interrupted(BaseException):
    """A stop signal arrived (SIGTERM, SIGINT, or a cluster's SIGUSR2). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way out can swallow it."""

    def __init__(self, signum: int, at_once: bool = False):
        self.signum, self.at_once = signum, at_once
        how = " (a second time: stopped at once, the last checkpoint kept)" if at_once else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name}{how}")


class StopSignals:
    """Stop signals during a run. While the loop runs (`deferred`), a request waits for the
    round to end, so the loop can checkpoint a consistent state; a second signal, or one
    outside the loop, interrupts at once. SIGUSR2 is taken only where a Python handler owns
    it (submitit's "time is up: checkpoint and requeue"): the run checkpoints first, then
    `pass_on` hands the signal to that handler. Installed only in the main thread (where
    Python delivers signals)."""

    def __init__(self):
        self.requested: int | None = None
        self.deferred = False
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
        if not self.deferred or self.requested is not None:
            raise Interrupted(signum, at_once=self.requested is not None)
        self.requested = signum
        # a round can be long (large train.d_steps): say what happens meanwhile
        os.write(2, f"ganlab: {signal.Signals(signum).name}: stopping after this round with a "
                    "checkpoint; send it again to stop at once\n".encode())

    def pass_on(self, signum: int) -> None:
        """Hand a signal the run has answered to the handler that owned it before (SIGUSR2:
        the cluster launcher requeues the job, which then resumes from the checkpoint)."""
        previous = self._previous.get(signum)
        if signum == signal.SIGUSR2 and callable(previous):
            signal.signal(signum, previous)
            previous(signum, None)


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
