"""How a run stops and says how far it is: stop signals and their requests, passing SIGTERM
on to a sweep's worker processes, and progress lines for runs without a terminal.

- `StopSignals`: SIGTERM/SIGINT (and a cluster launcher's SIGUSR2) during the loop wait for
  the round to end, so the loop can checkpoint; the same signal again (or any after 2 s)
  stops at once, but never in the middle of writing a checkpoint.
- `stop_workers_too`: the SIGTERM and SIGINT handler of a multirun's own process: its
  workers get one SIGTERM, checkpoint and record `interrupted`, then the sweep ends;
  `watch_the_sweep` stops them the same way when that process dies without a word.
- `ProgressLines`: one log line every 30 s when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ganlab.storage import lock_holder

log = logging.getLogger("ganlab.train")


class Interrupted(BaseException):
    """A stop signal arrived (SIGTERM, SIGINT, or a cluster's SIGUSR2). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way out can swallow it."""

    def __init__(self, signum: int, at_once: bool = False):
        self.signum, self.at_once = signum, at_once
        how = " (a second time: stopped at once)" if at_once else ""
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
        self._held: tuple[int, bool] | None = None  # (signal, at once) held by the shield
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
        now = time.monotonic()
        first = self.requested is None
        self.received.add(signum)
        if first:
            self.requested, self._first_at = signum, now
            if self.deferred:
                # a round can be long (large train.d_steps): say what happens meanwhile
                os.write(2, f"ganlab: {signal.Signals(signum).name}: stopping after this round "
                            "with a checkpoint; send it again to stop at once\n".encode())
                return
        elif signum != self.requested and now - self._first_at < AT_ONCE_AFTER_S:
            return  # another signal of the same stop (a scheduler, a terminal, a sweep)
        if self._shield:
            self._held = (signum, not first)
            return
        raise Interrupted(signum, at_once=not first)

    @contextmanager
    def shielded(self):
        """A block no stop interrupts half-way (a checkpoint or a record being written): an
        interruption that arrives inside raises when it ends."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        if not self._shield and self._held is not None:
            (signum, at_once), self._held = self._held, None
            raise Interrupted(signum, at_once=at_once)

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
    one log line every `every_s` seconds with the count, the rate and the time left."""

    def __init__(self, total: int, start: int, enabled: bool, every_s: float = 30.0,
                 what: str = "step", unit: str = "rounds"):
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.what, self.unit = what, unit
        self.start_step, self.started = start, time.monotonic()
        self.next_at = self.started + every_s

    def update(self, step: int) -> None:
        if not self.enabled or time.monotonic() < self.next_at:
            return
        now = time.monotonic()
        self.next_at = now + self.every_s
        rate = (step - self.start_step) / max(now - self.started, 1e-9)
        left = (self.total - step) / rate if rate > 0 else float("inf")
        log.info("%s %d/%d (%.0f %%), %.3g %s/s, about %s left", self.what, step, self.total,
                 100 * step / self.total, rate, self.unit, duration(left))


def terminal_usable(stream=None) -> bool:
    """Whether `stream` (stderr) is a terminal a bar can be drawn on (one of zero columns,
    as some job consoles report, is not: plain progress lines go to the log instead)."""
    stream = stream or sys.stderr
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


class Progress:
    """Progress of a long piece of work (the training loop, feature extraction, reference
    statistics, final scoring): a bar on a usable terminal, else a log line every 30 s.
    `start`: what is done already (a resumed run); `lines_say`: the log lines' word for the
    work (default `what`); `enabled=False`: neither."""

    def __init__(self, total: int, what: str, unit: str = "images", *, start: int = 0,
                 enabled: bool = True, lines_say: str | None = None):
        from tqdm import tqdm

        self.done = start
        self.bar = tqdm(total=total, initial=start, desc=what, unit=unit, leave=False,
                        dynamic_ncols=True, disable=not (enabled and terminal_usable()))
        self.lines = ProgressLines(total, start, enabled=enabled and self.bar.disable,
                                   what=lines_say or what, unit=unit)

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        self.lines.update(self.done)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def duration(seconds: float) -> str:
    """`seconds` for a reader: '1 h 05 min', '3 min 07 s', '42 s'."""
    if seconds == float("inf"):
        return "an unknown time"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s" if m else f"{s} s"


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def is_launcher_worker(pid: int | str = "self") -> bool:
    """A joblib (loky) worker: a process that stays on, idle, after its job."""
    return b"popen_loky" in _cmdline(pid)


def _worker_processes() -> list[int]:
    """This process's children that run a local launcher's jobs: joblib's workers and
    submitit's local job processes."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            children += [int(pid) for pid in task.read_text().split()]
        except OSError:  # a thread that ended meanwhile
            continue
    return [pid for pid in children
            if is_launcher_worker(pid) or b"submitit" in _cmdline(pid)]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


# the sweep's own process, for its workers to watch (set by `python -m ganlab.train -m`)
SWEEP_PID_ENV = "GANLAB_SWEEP_PID"
# how long a worker whose sweep died has to checkpoint its run before it ends anyway
ORPHAN_GRACE_S = 60.0
WORKER_WAIT_S = 120.0  # how long a stopped sweep waits for its workers' checkpoints
_watching = False


def stop_workers_too(signum, frame) -> None:
    """SIGTERM or SIGINT (Ctrl-C, whether the terminal sends it to the whole process group
    or only to this process) to a sweep that runs its jobs in worker processes: each worker
    gets one SIGTERM (a worker that got the terminal's SIGINT too takes both as one stop),
    checkpoints and records `interrupted`; the sweep waits for them, then ends with one line
    (a relaunch resumes the sweep)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut the wait short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = _worker_processes()
    _say_the_sweep_stops()  # before its workers hear of it (wait_for_sibling_runs)
    holders = _run_holders()  # runs of this sweep on this host in processes of any launcher
    workers = sorted(set(children) | set(holders.values()))
    name = signal.Signals(signum).name
    if workers:
        os.write(2, f"ganlab: {name}: stopping {len(workers)} worker process(es) with a "
                    "checkpoint each\n".encode())
    for pid in workers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + WORKER_WAIT_S
    while time.monotonic() < deadline and (
            any(_running(pid) for pid in children)
            or any(lock_holder(lock) for lock in holders)):
        time.sleep(0.2)
    _release_worker_pool()
    _say_the_sweep_stops(done=True)
    os.write(2, b"ganlab: sweep stopped; relaunch the same command to resume it\n")
    os._exit(128 + signum)


# the sweep dir of this process's sweep (set when the sweep starts: ganlab.callbacks)
SWEEP_DIR: Path | None = None
# runs (or jobs) of this sweep left unfinished after their worker was lost (ganlab.sweeper's
# SurvivesLostWorkers): the sweep exits 1
LOST_RUNS: list[str] = []


STOPPING_NAME = ".stopping"  # in the sweep dir while its process stops the sweep
MARKER_WAIT_S = 1.0  # a terminal's Ctrl-C reaches the workers and the sweep at once


def _say_the_sweep_stops(done: bool = False) -> None:
    """`<sweep dir>/.stopping` names this process while it stops its sweep (removed when
    done): its workers then know that the stop is the whole sweep's."""
    if SWEEP_DIR is None:
        return
    path = Path(SWEEP_DIR) / STOPPING_NAME
    try:
        if done:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(os.getpid()))
    except OSError:  # a read-only or full disk: the workers exit at once, as before
        pass


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_for_sibling_runs(sweep_dir: Path | str, signum: int) -> bool:
    """In a worker process whose run a stop has just ended (checkpoint and record written,
    run dir let go): when the stop is the whole sweep's (its process wrote `.stopping`),
    wait until the sweep's other workers have let go of their runs before this process
    ends, and say True. joblib's pool kills every other worker with SIGKILL the moment one
    ends, so a worker that ended first would cut a sibling's checkpoint or evaluation short
    (its record left `running`). A stop sent to this worker alone: False at once (the worker
    stays, so that the pool and its other runs go on), unless the sweep's process is gone."""
    sweep_dir, parent, me = Path(sweep_dir), os.getppid(), os.getpid()
    marker = sweep_dir / STOPPING_NAME
    patience = time.monotonic() + (MARKER_WAIT_S if signum == signal.SIGINT else 0.5)
    while True:
        try:
            if marker.read_text().strip() == str(parent):
                break
        except OSError:
            pass
        if time.monotonic() >= patience:
            return _orphaned()
        time.sleep(0.05)
    deadline = time.monotonic() + WORKER_WAIT_S
    while time.monotonic() < deadline:
        siblings = [h for lock in sweep_dir.rglob(".lock")
                    if (h := lock_holder(lock)) and h.get("pid") not in (None, me)
                    and _parent_of(h["pid"]) == parent]
        if not siblings:
            return True
        time.sleep(0.1)
    return True


def _sweep_pid() -> int | None:
    """The pid of the sweep this process works for (set by the sweep's process), if any."""
    sweep = os.environ.get(SWEEP_PID_ENV, "")
    return int(sweep) if sweep.isdigit() else None


def _orphaned() -> bool:
    """This worker's sweep process has ended (watch_the_sweep stops its run then)."""
    sweep = _sweep_pid()
    return sweep is not None and sweep != os.getppid()


def _run_holders() -> dict[Path, int]:
    """{run dir lock: pid} of the runs of this sweep that processes on this host hold now
    (a Ray worker is no child of the sweep's process; its run's lock names it)."""
    import socket

    if SWEEP_DIR is None or not Path(SWEEP_DIR).is_dir():
        return {}
    host, me = socket.gethostname(), os.getpid()
    found = {}
    for lock in Path(SWEEP_DIR).rglob(".lock"):
        holder = lock_holder(lock)
        if holder and holder.get("host") == host and holder.get("pid") not in (None, me):
            found[lock] = int(holder["pid"])
    return found


def _release_worker_pool() -> None:
    """Shut the local launchers down once their workers have ended: a Ray instance the sweep
    started, and joblib's worker pool (whose resource tracker then has nothing left to warn
    about after the sweep's last line)."""
    try:
        shut_down_ray()
    except Exception:  # already going down
        pass
    loky = sys.modules.get("joblib.externals.loky")
    if loky is None:
        return
    try:
        loky.get_reusable_executor().shutdown(wait=True, kill_workers=True)
    except Exception:  # a pool already broken by its workers' exit: nothing to release
        pass


def shut_down_ray() -> None:
    """Stop the Ray instance (or connection) this process started, if any: its workers'
    teardown output then comes now, not after the sweep's last line."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def stop_the_sweep_with_its_workers() -> None:
    """In a sweep's own process (`python -m ganlab.train -m`): Ctrl-C and SIGTERM stop its
    workers with a checkpoint each (`stop_workers_too`), and its workers watch it
    (`watch_the_sweep`) to stop the same way if it dies without a word (SIGKILL)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, stop_workers_too)
    signal.signal(signal.SIGINT, stop_workers_too)
    os.environ[SWEEP_PID_ENV] = str(os.getpid())
    # joblib's resource trackers (started later, with this environment) clean up after
    # workers that a stop ended, without a warning printed after the sweep's last line
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning")
        if w)


def watch_the_sweep() -> None:
    """In a worker process of a sweep (a direct child of the sweep's process): when that
    process dies, however it dies (SIGKILL included), stop the run here as SIGTERM would (a
    checkpoint, the record `interrupted`) and end this process, so that nothing outlives its
    sweep and no orphan holds a run dir a relaunch wants."""
    global _watching
    sweep = _sweep_pid()
    if _watching or sweep is None or sweep != os.getppid():
        return
    _watching = True

    def watch() -> None:
        while os.getppid() == sweep:
            time.sleep(0.5)
        os.write(2, b"ganlab: the sweep's process has ended; stopping this run with a "
                    b"checkpoint\n")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_S)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="ganlab-sweep-watch", daemon=True).start()


def exit_now(code: int) -> None:
    """End a command-line process without the interpreter's teardown of torch (about a
    second), once the run's record, checkpoint and logs are written: W&B is torn down and the
    logs flushed. Only the command line calls it: `run()` and `Trainer` end normally."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
