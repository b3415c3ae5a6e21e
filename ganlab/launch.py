"""A launch of one run into its run dir (`run`, `Launch`): the dir is owned (a lock, the run's
log file), what a relaunch does with what the dir holds is decided (`resume_plan`: resume,
extend, repair a checkpoint, or nothing), and the launch is *accepted* only once its config
agrees with the dir's and the checkpoint (if any) is restored: until then nothing of the
previous record is touched, and a failure is recorded beside it. Every way a run ends is
recorded, also a failure outside the loop. Where the run ran (`host`) and the threads it
has are set here.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ganlab.checkpoint import CheckpointError, load_latest
from ganlab.config import (
    ConfigError,
    eval_settings,
    sweep_cell,
)
from ganlab.configure import (
    load_config,
)
from ganlab.cores import cpu_model, thread_budget
from ganlab.loop import (
    Resume,
    Trainer,
    experiment_config,
    refuse_drift,
)
from ganlab.preflight import preflight
from ganlab.result import (
    TERMINAL,
    ResultFile,
    comparability_dict,
    defaults_record,
    hparams_dict,
    launches_of,
    seedless,
    study_record,
    trick_dict,
)
from ganlab.rundir import RunDirBusy, RunDirLock, read_previous, save_config, write_failure
from ganlab.stops import (
    Interrupted,
    StopSignals,
)
from ganlab.storage import StorageError, remove_stale_temporaries
from ganlab.sweepdir import sweep_axes
from ganlab.tracking import RunIdentity

log = logging.getLogger("ganlab.train")
# k or g_steps above this gets a warning with the numbers (the tutorial's k is 1 to 5)
UNUSUAL_STEPS_PER_ROUND = 100
# errors a user can act on: one line on the console, no traceback
USER_ERRORS = (ConfigError, StorageError, RunDirBusy, CheckpointError)


def resume_plan(cfg: DictConfig, run_dir: Path, previous: dict | None) -> Resume:
    """What a launch into `run_dir` does with what the dir holds (the relaunch rules): the
    checkpoint to resume from (its config must agree), nothing at all for a completed run
    that reached `train.steps` or a diverged one (it would diverge again), a repair for a
    completed run whose newest good checkpoint is behind its record (trained back to the
    record's step, the record left as it is), and a refusal to shorten a run or to extend
    one without a checkpoint."""
    t = cfg.train
    state = load_latest(Path(run_dir) / "checkpoints")
    if state is not None:
        refuse_drift(run_dir, state["config"], experiment_config(cfg), "a checkpoint")
    repair_to = None
    reached = state["counters"]["step"] if state is not None else None
    if (previous and previous["status"] == "completed" and state is not None
            and reached < previous["step"] and t.steps <= previous["step"]):
        # the newest good checkpoint is behind the record (a damaged one was set aside):
        # train it back to the record's step, the record left as it is (bit for bit on
        # CPU), so that the run can be re-scored again
        repair_to = previous["step"]
        log.warning("%s is completed at step %d, but its newest good checkpoint is at "
                    "step %d: retraining rounds %d-%d to restore a checkpoint at the "
                    "record's step; the record is left as it is", run_dir,
                    previous["step"], reached, reached + 1, previous["step"])
    elif previous and previous["status"] in TERMINAL:
        reached = reached if reached is not None else previous["step"]
        done = previous["status"] == "completed" and max(reached, previous["step"]) >= t.steps
        # a diverged run would diverge again at the same step: relaunching leaves it alone
        if previous["status"] == "diverged" or done:
            longer = max(reached, previous["step"])
            if done and longer > t.steps:
                log.info("%s is already completed, at step %d: longer than the "
                         "train.steps=%d asked (a run is not shortened; its record is of "
                         "step %d); nothing to do", run_dir, longer, t.steps, longer)
            else:
                log.info("%s is already %s; nothing to do", run_dir,
                         previous["status"])
            return Resume(state, done=previous)
        if state is None:
            raise CheckpointError(
                f"{run_dir} is {previous['status']} at step {previous['step']} and "
                f"has no checkpoint to extend it to train.steps={t.steps}")
    if state is not None and state["counters"]["step"] > t.steps and not repair_to:
        raise ConfigError(
            f"{run_dir} has trained {state['counters']['step']} rounds, more than "
            f"train.steps={t.steps}; a run is not shortened: relaunch it with "
            f"train.steps>={state['counters']['step']}, or launch into a new directory")
    return Resume(state, repair_to=repair_to)


def run_identity(cfg: DictConfig, run_dir: Path) -> RunIdentity:
    """How a run appears in W&B. In a sweep: grouped by experiment (the study's name, else
    the sweep dir's name) and cell, named by cell and seed, tagged with the study, the
    variant and the keys the sweep varies (Hydra's multirun.yaml). Alone: its dir's name,
    grouped by its study if it has one."""
    study, variant = cfg.study.name or None, cfg.study.variant or None
    tags = [f"study={study}"] * bool(study) + [f"variant={variant}"] * bool(variant)
    try:
        hc = HydraConfig.get()
    except ValueError:  # started from Python
        hc = None
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return RunIdentity(name=run_dir.name, group=study, sweep=study, tags=tuple(tags))
    task = [o.lstrip("+~") for o in hc.overrides.task]
    cell, sweep_dir = sweep_cell(task), Path(hc.sweep.dir)
    sweep, varied = study or sweep_dir.name, sweep_axes(sweep_dir)
    tags += [o for o in task if o.split("=", 1)[0] in varied]
    return RunIdentity(name=f"{cell}/seed={cfg.seed}", group=f"{sweep}/{cell}", sweep=sweep,
                       tags=tuple(tags))


def _choices() -> dict:
    """The config group options of a launch from the command line (for the comparer's
    variant names); none for a run started from Python."""
    try:
        choices = HydraConfig.get().runtime.choices
    except ValueError:
        return {}
    return {g: c for g, c in choices.items() if c is not None and not g.startswith("hydra/")}


# why this process runs torch with the threads it has (ganlab.cores; set by _hydra_main)
_THREADS_FROM = "torch's default"


def apply_thread_budget(requested: int, launcher: dict | None) -> int:
    """Give torch this run's share of the cores (ganlab.cores), before its first operation."""
    global _THREADS_FROM
    threads, _THREADS_FROM = thread_budget(requested, launcher)
    torch.set_num_threads(threads)
    return threads


def _host_record() -> dict:
    """Where and when the run ran (a launcher's device assignment shows up here), and the
    CPU threads it had, at what scheduling priority (`niceness`: 0 unless something lowered
    it; a niced run on shared cores is a slow run), and the CPU model and torch version it
    computed with (the same settings on another CPU or torch need not give the same bits)."""
    return {"hostname": socket.gethostname(), "pid": os.getpid(),
            "cpu": cpu_model(), "torch": torch.__version__,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": torch.get_num_threads(), "threads_from": _THREADS_FROM,
            "niceness": os.nice(0),
            # the scheduler's own names for where it ran (a cluster's nodes may share a
            # hostname; a requeued job keeps its id)
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_node": os.environ.get("SLURMD_NODENAME"), "ray_node": _ray_node(),
            "started": time.time(), "ended": None}


def _ray_node() -> str | None:
    """The Ray node this process runs on, when a Ray launcher started it."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
    except Exception:  # not a Ray worker after all
        return None


# the run a process that trains several runs at once is working on (None: all of them)
_SPEAKING_FOR: ContextVar[Path | None] = ContextVar("ganlab_run", default=None)


@contextmanager
def speaking_for(run_dir: Path):
    """Log lines from here on go to `run_dir`'s log only (not its stack-mates')."""
    token = _SPEAKING_FOR.set(run_dir)
    try:
        yield
    finally:
        _SPEAKING_FOR.reset(token)


@contextmanager
def _file_log(path: Path, run_dir: Path | None = None):
    """The run's own log file (opened once the run dir is ours): it takes every line except
    those spoken for another run."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - "
                                           "%(message)s"))
    handler.addFilter(lambda record: _SPEAKING_FOR.get() in (None, run_dir))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _warn_about_work(cfg: DictConfig) -> None:
    t = cfg.train
    if max(t.d_steps, t.g_steps) > UNUSUAL_STEPS_PER_ROUND:
        log.warning("train.d_steps=%d and train.g_steps=%d: each round runs %d updates, "
                    "%d in all for train.steps=%d (the tutorial's k is 1 to 5); progress is "
                    "counted in rounds", t.d_steps, t.g_steps, t.d_steps + t.g_steps,
                    t.steps * (t.d_steps + t.g_steps), t.steps)


def _describe_failure(err: BaseException) -> tuple[str, str]:
    """(status, error) for a launch that ended with `err`."""
    if isinstance(err, (Interrupted, KeyboardInterrupt)):
        return "interrupted", str(err) or "interrupted by SIGINT"
    if isinstance(err, ConfigError):
        return "failed", f"config error: {err}"
    if out_of_memory(err):
        first = str(err).splitlines()[0] if str(err) else ""
        return "failed", (f"{type(err).__name__}: {first} (out of memory: lower "
                          "train.batch_size or norm.ref_batch_size, model.g_width or "
                          "model.d_width, pack fewer runs per GPU with fanout.runs_per_gpu, "
                          "or stack fewer seeds with fanout.vectorize_seeds)")
    return "failed", f"{type(err).__name__}: {err}"


def out_of_memory(err: BaseException) -> bool:
    """An allocation failure, however torch words it (a CPU allocation that fails is a
    RuntimeError naming the bytes)."""
    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and any(
            words in str(err) for words in ("can't allocate memory", "out of memory",
                                            "not enough memory")))


def _what_is_kept(run_dir: Path) -> str:
    """What an interrupted run leaves to resume from, as it is on disk."""
    if any((Path(run_dir) / "checkpoints").glob("*.pt")):
        return "its last checkpoint is kept: relaunch the same command to resume from it"
    return "no checkpoint had been written yet: a relaunch starts from the first round"


class Launch:
    """One launch of a run into its dir. While open it owns the dir (a lock, the run's log
    file) and the run's record: `trainer()` checks the config against what the dir holds,
    `accept()` makes this launch's config and record replace the previous ones, `failed()`
    records a failure without touching a previous record that was good."""

    def __init__(self, cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None,
                 identity: RunIdentity | None = None):
        self.cfg, self.run_dir, self.overrides = cfg, Path(run_dir), overrides
        self.identity = identity  # None: ganlab.launch.run_identity

    def __enter__(self) -> Launch:
        with ExitStack() as stack:
            stack.enter_context(RunDirLock(self.run_dir))
            stack.enter_context(_file_log(self.run_dir / "train.log", self.run_dir))
            with speaking_for(self.run_dir):
                self._open()
            self._stack = stack.pop_all()
        return self

    def _open(self) -> None:
        cfg, run_dir = self.cfg, self.run_dir
        log.info("run dir %s", run_dir.resolve())
        for path in remove_stale_temporaries(run_dir):
            log.info("removed %s, left by a writer that did not finish", path)
        self.previous = read_previous(run_dir)
        # The evaluation protocol joins `comparability` once the evaluator is built.
        self.result = ResultFile(run_dir / "result.json", live=False, seed=cfg.seed,
                                 trick=trick_dict(cfg), hparams=hparams_dict(cfg),
                                 comparability=comparability_dict(cfg, None),
                                 eval_settings=eval_settings(cfg),
                                 study=study_record(cfg), overrides=seedless(self.overrides),
                                 defaults=defaults_record(cfg.data.name),
                                 choices=_choices(), host=_host_record())
        self.result.launches_before = launches_of(self.previous)

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def accept(self) -> None:
        save_config(self.run_dir, self.cfg, self.overrides)
        self.result.go_live()

    def trainer(self, stop: StopSignals) -> Trainer:
        """The run's Trainer, once its config is checked and agrees with the dir's."""
        cfg, run_dir, previous = self.cfg, self.run_dir, self.previous
        saved = run_dir / ".hydra" / "config.yaml"
        if previous is not None and saved.exists():
            if _nothing_to_keep(run_dir, previous):
                _set_aside(run_dir, previous)
            else:
                refuse_drift(run_dir, experiment_config(load_config(run_dir, [])),
                             experiment_config(cfg), "a run")
        _warn_about_work(cfg)
        return Trainer(cfg, run_dir, self.result, previous, stop,
                       plan=resume_plan(cfg, run_dir, previous),
                       identity=self.identity or run_identity(cfg, run_dir))

    def failed(self, err: BaseException) -> None:
        _record_failure(self.run_dir, self.result, self.previous, err, self.accept)


def run(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None,
        identity: RunIdentity | None = None) -> dict:
    """Train one run into `run_dir`; returns its record.

    A relaunch into a dir that holds a run resumes it; one that fails before it is accepted
    leaves the previous record, config and checkpoints as they were and writes
    `result.failed-<time>.json` beside them. A fresh run that fails still writes its
    result.json (status failed). A config that cannot run (ganlab.preflight) is refused
    before anything is written. `overrides` are saved with the config; `identity`: how the
    run appears in W&B (default: `run_identity`; a re-run keeps its original's group)."""
    preflight(cfg)
    with Launch(cfg, run_dir, overrides, identity) as launch, StopSignals() as stop:
        try:
            return launch.trainer(stop).fit(launch.accept)
        except BaseException as err:
            with stop.shielded():  # another signal waits until the record says how it ended
                launch.failed(err)
            if isinstance(err, Interrupted) and not err.at_once:
                stop.pass_on(err.signum)  # a cluster's requeue, once the checkpoint is saved
            raise


def _nothing_to_keep(run_dir: Path, previous: dict) -> bool:
    """Whether the run in `run_dir` failed or was stopped before its first checkpoint and
    evaluation: it holds nothing a relaunch could lose, so a corrected config may take its
    place (`_set_aside` keeps its record)."""
    return (previous["status"] in ("failed", "interrupted") and not previous["history"]
            and not any((Path(run_dir) / "checkpoints").glob("*.pt")))


def _set_aside(run_dir: Path, previous: dict) -> None:
    """Keep a replaced run's record beside the new one, as result.replaced-<time>.json."""
    path = write_failure(run_dir, previous, kind="replaced")
    log.info("%s held a run that %s before its first checkpoint (its record is now %s); "
             "this launch replaces it", run_dir, previous["status"], path.name)


def _record_failure(run_dir: Path, result: ResultFile, previous: dict | None,
                    err: BaseException, accept) -> None:
    if isinstance(err, (RunDirBusy, SystemExit)) or (
            result.live and result.data["status"] != "running"):
        return  # the dir is not ours, or the loop has recorded how it ended
    status, error = _describe_failure(err)
    if status == "interrupted":
        error = f"{error}; {_what_is_kept(run_dir)}"
    ended = {**result.data["host"], "ended": time.time()}
    try:
        if result.live:  # a failure during training: the run's record says so
            result.update(status=status, error=error, host=ended)
        elif previous is None:  # a new run: its record says why it never started
            result.update(status=status, error=error, host=ended)
            accept()
        else:  # the previous record stays; the failed attempt is reported beside it
            path = write_failure(run_dir, {**result.data, "status": status, "error": error,
                                           "host": ended})
            log.error("this launch did not start; the previous record (%s at step %s) is "
                      "left as it was, and this attempt is recorded in %s", previous["status"],
                      previous["step"], path.name)
    except StorageError as e:  # a full disk may still take the small record, or not
        log.error("could not record the failure either: %s", e)


def launcher_config(hc, cfg: DictConfig) -> dict:
    """The job's `hydra.launcher`, its interpolations (`${fanout.n_jobs}`, ...) resolved
    against the run's config."""
    launcher = OmegaConf.to_container(hc.launcher, resolve=False)
    node = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=False), "launcher": launcher})
    try:
        return OmegaConf.to_container(node.launcher, resolve=True)
    except Exception:  # an interpolation the run's config cannot resolve: read it raw
        return launcher
