"""Train one GAN from a composed config: `python -m ganlab.train [overrides]` (`-m` sweeps).

The loop knows counters, schedules and bookkeeping; what a trick does lives in the parts the
GAN is built from (ganlab.assemble). Running the same command into the same run directory
resumes from its last good checkpoint, bit-identically on CPU.

A launch owns its run dir (ganlab.rundir) and is *accepted* only once its config agrees with
what the dir holds and the checkpoint (if any) has been restored: until then nothing of the
previous record is touched, and a failure is reported beside it. Every way a run ends is
recorded: completed, diverged (a NaN/inf loss), failed (with the error), interrupted
(SIGTERM/SIGINT: a checkpoint first, then the status; relaunching resumes; see ganlab.stops).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ganlab.assemble import build_gan, resolve_device, resolve_optimizer_impl
from ganlab.checkpoint import LAST, CheckpointError, load_latest, save_checkpoint
from ganlab.config import (
    CONF_DIR,
    RESUME_FIXED_ROLES,
    ConfigError,
    eval_settings,
    flatten,
    keys_with_role,
    sweep_cell,
)
from ganlab.configure import (
    check_overrides,
    compose,
    load_config,
    register_configs,
    repeated_keys,
)
from ganlab.cores import thread_budget
from ganlab.evaluate import build_evaluator
from ganlab.evaluate.score import EvaluationStopped, score
from ganlab.graphs import GraphedRound, uncapturable
from ganlab.preflight import preflight
from ganlab.result import (
    TERMINAL,
    ResultFile,
    comparability_dict,
    hparams_dict,
    launches_of,
    seedless,
    study_record,
    trick_dict,
)
from ganlab.rundir import RunDirBusy, RunDirLock, read_previous, save_config, write_failure
from ganlab.stops import (
    SWEEP_PID_ENV,
    Interrupted,
    ProgressLines,
    StopSignals,
    is_launcher_worker,
    stop_workers_too,
    watch_the_sweep,
)
from ganlab.storage import StorageError, explain, remove_stale_temporaries
from ganlab.tracking import build_tracker

log = logging.getLogger("ganlab.train")

# Test hook: SIGKILL the process after this many rounds, to test resume from a real kill.
KILL_AFTER_STEP_ENV = "GANLAB_KILL_AFTER_STEP"
# errors a user can act on: one line on the console, no traceback
USER_ERRORS = (ConfigError, StorageError, RunDirBusy, CheckpointError)
# k or g_steps above this gets a warning with the numbers (the tutorial's k is 1 to 5)
UNUSUAL_STEPS_PER_ROUND = 100


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class Counters:
    step: int = 0  # rounds completed (the x-axis of every curve)
    d_updates: int = 0  # D optimiser steps
    g_updates: int = 0  # G optimiser steps
    images_seen: int = 0  # real samples shown to D (its updates and feature matching's)
    wall_s: float = 0.0  # training time, excluding evaluation and checkpoint I/O


def experiment_config(cfg: DictConfig) -> dict:
    """What a relaunch into the same run dir must agree on (ganlab.config's roles)."""
    return keys_with_role(cfg, RESUME_FIXED_ROLES)


def refuse_drift(run_dir: Path, saved: dict, current: dict, what: str) -> None:
    changed = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
               for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        raise ConfigError(
            f"{run_dir} holds {what} of another experiment ({'; '.join(changed)}); it is left "
            "as it was. To train this config, launch it into a new directory "
            f"(hydra.run.dir=...), or `python -m ganlab.rerun {run_dir} KEY=VALUE ...`")


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, result: ResultFile,
                 previous: dict | None = None, stop: StopSignals | None = None):
        """`previous`: the run dir's record as it was before this launch, if any."""
        self.cfg, self.run_dir, self.result = cfg, run_dir, result
        self.previous, self.stop = previous, stop or StopSignals()
        self.device = resolve_device(cfg.train.device)
        if cfg.train.cuda_graphs:
            problems = uncapturable(cfg, self.device)
            if problems:
                raise ConfigError("train.cuda_graphs=true cannot capture this config's round: "
                                  f"{'; '.join(problems)}")
        self.ckpt_path = run_dir / "checkpoints" / LAST
        self.gan = build_gan(cfg, self.device)
        self.data = self.gan.data
        # fused, foreach and loop Adam differ in the last bits: the record says which ran
        result.update(host={**result.data["host"], "device": str(self.device),
                            "optimizer_impl": resolve_optimizer_impl(
                                cfg.train.optimizer_impl, self.device),
                            "cuda_graphs": bool(cfg.train.cuda_graphs)})
        # May train the feature classifier and cache real statistics on first use.
        self.evaluator = build_evaluator(cfg, self.data, self.device)
        # the record says what ran: a plug-in may force separate real/fake batches in D
        result.update(comparability=comparability_dict(cfg, self.evaluator.protocol()),
                      trick={**trick_dict(cfg),
                             "norm.split_real_fake": self.gan.split_real_fake})
        self.counters = Counters()
        self.history: list[dict] = []
        self.last_train: dict[str, float] = {}
        self.interrupted: Interrupted | None = None
        self.eval_pending = False  # an evaluation due at this step that a stop cut short
        self.repair_to: int | None = None  # the record's step, when retraining a checkpoint
        self.log_prefix = ""  # names the run in console lines where several share a process

    # -- checkpoints -------------------------------------------------------------------
    def save(self) -> None:
        with self.stop.shielded():  # a second stop signal waits for the checkpoint's end
            save_checkpoint({"gan": self.gan.state_dict(), "counters": asdict(self.counters),
                             "history": self.history, "last_train": self.last_train,
                             "config": experiment_config(self.cfg),
                             "torch_rng": torch.get_rng_state()}, self.ckpt_path,
                            keep_previous=True)

    def restore(self, state: dict) -> None:
        self.gan.load_state_dict(state["gan"])
        self.counters = Counters(**state["counters"])
        self.history = list(state["history"])
        self.last_train = dict(state["last_train"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", self.ckpt_path.parent, self.counters.step)

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> dict:
        c, cfg = self.counters, self.cfg
        path = self.run_dir / "samples" / f"step_{c.step:07d}.png"
        metrics, n = score(self.gan, self.evaluator, seed=cfg.seed, step=c.step,
                           final=c.step == cfg.train.steps, eval_cfg=cfg.eval,
                           coupling_batch=cfg.train.batch_size, picture=path,
                           title=f"{cfg.data.name}  step {c.step}",
                           stop=lambda: self.stop.requested is not None)
        entry = {"step": c.step, "images_seen": c.images_seen, "g_updates": c.g_updates,
                 "d_updates": c.d_updates, "wall_s": round(c.wall_s, 3), "num_samples": n,
                 "metrics": {**self.last_train, **metrics}}
        self.history.append(entry)
        self.tracker.log(metrics, c.step)
        self.tracker.log_image("samples", path, c.step)
        return metrics

    def _read_stats(self, stats: dict[str, float]) -> dict[str, float]:
        values = {f"train/{k}": v for k, v in stats.items()}
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            raise Diverged(f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} "
                           f"at step {self.counters.step}")
        return values

    @property
    def last_metrics(self) -> dict:
        """The metrics of the latest evaluation (empty before the first)."""
        return self.history[-1]["metrics"] if self.history else {}

    # -- the loop --------------------------------------------------------------------------
    # A run is `start` (resume, accept, open the tracker), then rounds, each followed by
    # `count_round` and, when due, `write` (evaluation, checkpoint), then `finish`. `fit`
    # plays them for this run's GAN; `run_group` plays them for each of several runs whose
    # rounds one stacked model (ganlab.vectorize.SeedStack) plays.
    def fit(self, accept=None) -> dict:
        """Train to `train.steps`. `accept()` is called once the launch is accepted (the
        checkpoint, if any, restored and consistent), before anything is written."""
        done = self.start(accept)
        return done if done is not None else self.train()

    def train(self) -> dict:
        """The rounds from where `start` left the run to `train.steps`, then `finish`."""
        status, error = "completed", None
        self.stop.deferred = True
        try:
            self.resume_clock()
            while not self.finished:
                if self.stop.requested is not None:
                    status, error = self.interrupt()
                    break
                stats = self.play_round()
                due = self.count_round(partial(self.gan.read_stats, stats))
                if due:
                    self.pause_clock()
                    self.write(*due)
                    self.resume_clock()
        except Diverged as err:
            status, error = self.diverged(err)
        finally:
            self.stop.deferred = False
        return self.finish(status, error)

    def start(self, accept=None) -> dict | None:
        """Everything before the first round; the run's record if there is nothing to do."""
        cfg, previous = self.cfg, self.previous
        t = cfg.train
        state = load_latest(self.ckpt_path.parent)
        if state is not None:
            refuse_drift(self.run_dir, state["config"], experiment_config(cfg), "a checkpoint")
        self.repair_to = None
        reached = state["counters"]["step"] if state is not None else None
        if (previous and previous["status"] == "completed" and state is not None
                and reached < previous["step"] and t.steps <= previous["step"]):
            # the newest good checkpoint is behind the record (a damaged one was set aside):
            # train it back to the record's step, the record left as it is (bit for bit on
            # CPU), so that the run can be re-scored again
            self.repair_to = previous["step"]
            log.warning("%s is completed at step %d, but its newest good checkpoint is at "
                        "step %d: retraining rounds %d-%d to restore a checkpoint at the "
                        "record's step; the record is left as it is", self.run_dir,
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
                             "step %d); nothing to do", self.run_dir, longer, t.steps, longer)
                else:
                    log.info("%s is already %s; nothing to do", self.run_dir,
                             previous["status"])
                return previous
            if state is None:
                raise CheckpointError(
                    f"{self.run_dir} is {previous['status']} at step {previous['step']} and "
                    f"has no checkpoint to extend it to train.steps={t.steps}")
        if state is not None and state["counters"]["step"] > t.steps and not self.repair_to:
            raise ConfigError(
                f"{self.run_dir} has trained {state['counters']['step']} rounds, more than "
                f"train.steps={t.steps}; a run is not shortened: relaunch it with "
                f"train.steps>={state['counters']['step']}, or launch into a new directory")
        if state is not None:
            self.restore(state)
        c = self.counters
        self.result.update(step=c.step, history=self.history, metrics=self.last_metrics,
                           host={**self.result.data["host"], "from_step": c.step})
        if accept is not None and not self.repair_to:  # a repair writes no record
            accept()
        self.tracker = build_tracker(  # tagged with what ran, as the record says
            cfg.logger, run_dir=self.run_dir, name=self.run_dir.name, group=_wandb_group(),
            tags=[f"{k}={v}" for k, v in self.result.data["trick"].items()],
            config=flatten(cfg))
        # the evaluation protocol travels with the scores into W&B too
        self.tracker.summary(flatten(self.result.data["comparability"], "comparability/"))
        self.kill_at = int(os.environ.get(KILL_AFTER_STEP_ENV, "0"))
        self.bar = tqdm(total=t.steps, initial=c.step, desc=self.run_dir.name,
                        dynamic_ncols=True, leave=False,
                        disable=not (t.progress and sys.stderr.isatty()))
        self.progress = ProgressLines(t.steps, c.step, enabled=t.progress and self.bar.disable)
        self.gan.G.train()
        self.gan.D.train()
        # the round the loop plays: the GAN's own, or its capture in a CUDA graph (captured
        # anew after every restore: a graph holds the addresses of the state it captured)
        self.play_round = (GraphedRound(self.gan) if cfg.train.cuda_graphs
                           else self.gan.train_step)
        # the loop reads plain ints: an OmegaConf attribute costs microseconds per read
        self.steps, self.d_steps, self.g_steps = self.repair_to or t.steps, t.d_steps, t.g_steps
        self.eval_every, self.ckpt_every = cfg.eval.every, t.checkpoint_every
        self.log_every = t.log_every
        # an evaluation a stop request cut short (the checkpoint holds its round) runs first
        if c.step > 0 and self.eval_due(c.step) and (
                not self.history or self.history[-1]["step"] != c.step):
            log.info("%sstep %d: running the evaluation the last launch stopped",
                     self.log_prefix, c.step)
            self.write(True, False)
        return None

    @property
    def finished(self) -> bool:
        """All rounds played and evaluated."""
        return self.counters.step >= self.steps and not self.eval_pending

    def eval_due(self, step: int) -> bool:
        return step == self.steps or (self.eval_every > 0 and step % self.eval_every == 0)

    def resume_clock(self) -> None:
        self._clock = time.perf_counter()

    def pause_clock(self) -> None:
        """Training time stops while the run evaluates or saves."""
        self.counters.wall_s += time.perf_counter() - self._clock

    def count_round(self, read_stats) -> tuple[bool, bool] | None:
        """Count a finished round; at a log step read its stats (`read_stats()`: the one sync
        with the device; Diverged if one is not finite) and log them. Returns (evaluation
        due, checkpoint due) when either is, for `write`."""
        c = self.counters
        c.step += 1
        c.d_updates += self.d_steps
        c.g_updates += self.g_steps
        c.images_seen += self.gan.round_images
        self.bar.update()
        self.progress.update(c.step)
        last = c.step == self.steps
        eval_due = self.eval_due(c.step)
        ckpt_due = last or (self.ckpt_every > 0 and c.step % self.ckpt_every == 0)
        if not (eval_due or ckpt_due or c.step % self.log_every == 0):
            return None
        self.last_train = self._read_stats(read_stats())
        self.tracker.log(self.last_train, c.step)
        self.bar.set_postfix({k[6:]: f"{v:.3g}" for k, v in self.last_train.items()
                              if k in ("train/loss_d", "train/loss_g")})
        return (eval_due, ckpt_due) if eval_due or ckpt_due else None

    def write(self, eval_due: bool, ckpt_due: bool) -> None:
        """A due evaluation (into the record) and checkpoint, from the GAN's current state."""
        c = self.counters
        if eval_due:
            try:
                metrics = self.evaluate()
            except EvaluationStopped:
                # the checkpoint below holds this round's state: a relaunch evaluates it first
                self.eval_pending = True
                log.info("%sstep %d: evaluation stopped by the stop request; a relaunch runs "
                         "it first", self.log_prefix, c.step)
                eval_due = False
        if eval_due:
            self.eval_pending = False
            log.info("%sstep %d/%d  %s", self.log_prefix, c.step, self.steps,
                     _fmt({**self.last_train, **metrics}))
            self.result.update(step=c.step, metrics={**self.last_train, **metrics},
                               history=self.history)
        if ckpt_due:
            self.save()
        if self.kill_at and c.step >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def interrupt(self) -> tuple[str, str]:
        """A stop request between rounds: checkpoint the consistent state, then say so."""
        self.interrupted = Interrupted(self.stop.requested)
        self.pause_clock()
        self.save()
        error = (f"{self.interrupted} at step {self.counters.step}; checkpoint saved: relaunch "
                 "the same command to resume")
        log.warning("%s", error)
        return "interrupted", error

    def diverged(self, err: Diverged) -> tuple[str, str]:
        log.warning("run diverged: %s", err)
        return "diverged", str(err)

    def abandon(self) -> None:
        """A run ended by an error outside its loop: close what `start` opened (the caller
        records the error)."""
        if hasattr(self, "bar"):
            self.bar.close()
        if hasattr(self, "tracker"):
            self.tracker.summary({"status": "failed"})
            self.tracker.finish(exit_code=1)

    def finish(self, status: str, error: str | None) -> dict:
        """Record how the run ended; re-raises a stop request once recorded."""
        self.bar.close()
        final = self.last_metrics
        with self.stop.shielded():  # a stop signal now waits for the record
            self.result.update(status=status, error=error, step=self.counters.step,
                               metrics=final, history=self.history,
                               host={**self.result.data["host"], "ended": time.time()})
        self.tracker.summary({"status": status, **final})
        self.tracker.finish(exit_code=0 if status == "completed" else 1)
        if self.repair_to and status == "completed":
            kept = {k: v for k, v in self.previous["metrics"].items() if k.startswith("eval/")}
            same = {k: v for k, v in final.items() if k.startswith("eval/")} == kept
            log.log(logging.INFO if same else logging.WARNING,
                    "%s: a checkpoint at step %d is restored; %s", self.run_dir,
                    self.counters.step, "its scores equal the record's" if same else
                    "its scores differ from the record's (not bit for bit on this device); "
                    "the record is left as it was")
            return self.previous
        if status == "interrupted" and self.interrupted is not None:
            raise self.interrupted
        return self.result.data


def _fmt(values: dict) -> str:
    return "  ".join(f"{k.split('/')[-1]}={v:.4g}" if isinstance(v, float) else
                     f"{k.split('/')[-1]}={v}" for k, v in values.items())


def _wandb_group() -> str | None:
    """The W&B group: the sweep cell (overrides without the seed), for multiruns."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    return sweep_cell(hc.overrides.task) if hc.mode == RunMode.MULTIRUN else None


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
    CPU threads it had."""
    return {"hostname": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": torch.get_num_threads(), "threads_from": _THREADS_FROM,
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

    def __init__(self, cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None):
        self.cfg, self.run_dir, self.overrides = cfg, Path(run_dir), overrides

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
        return Trainer(cfg, run_dir, self.result, previous, stop)

    def failed(self, err: BaseException) -> None:
        _record_failure(self.run_dir, self.result, self.previous, err, self.accept)


def run(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None) -> dict:
    """Train one run into `run_dir`; returns its record.

    A relaunch into a dir that holds a run resumes it; one that fails before it is accepted
    leaves the previous record, config and checkpoints as they were and writes
    `result.failed-<time>.json` beside them. A fresh run that fails still writes its
    result.json (status failed). A config that cannot run (ganlab.preflight) is refused
    before anything is written. `overrides` are saved with the config."""
    preflight(cfg)
    with Launch(cfg, run_dir, overrides) as launch, StopSignals() as stop:
        try:
            return launch.trainer(stop).fit(launch.accept)
        except BaseException as err:
            with stop.shielded():  # another signal waits until the record says how it ended
                launch.failed(err)
            if isinstance(err, Interrupted) and not err.at_once:
                stop.pass_on(err.signum)  # a cluster's requeue, once the checkpoint is saved
            raise


# -- vectorised seeds ----------------------------------------------------------------------
def member_runs(cfg: DictConfig, run_dir: Path, overrides: list[str]
                ) -> list[tuple[DictConfig, Path, list[str]]]:
    """(config, run dir, overrides) of each seed of a launch with `fanout.group_seeds`: the
    same config with its own seed, in the run dir beside this one that a launch of that seed
    alone would use, with the overrides it would have (so `rerun` runs it alone)."""
    seeds = list(cfg.fanout.group_seeds)
    if run_dir.name != f"seed={cfg.seed}":
        raise ConfigError(f"fanout.vectorize_seeds needs each run dir named seed=<seed> (as "
                          f"hydra.sweep.subdir ends by default); this run's is {run_dir.name!r}")
    mine = [o for o in overrides
            if o.split("=", 1)[0].lstrip("+~") not in ("seed", "fanout.group_seeds")]
    members = []
    for seed in seeds:
        member = cfg.copy()
        member.seed = seed
        member.fanout.group_seeds = []
        members.append((member, run_dir.parent / f"seed={seed}", [*mine, f"seed={seed}"]))
    return members


def run_group(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None
              ) -> list[dict]:
    """Train the runs of `fanout.group_seeds`, which differ only by seed, as one stacked
    model (ganlab.vectorize); each keeps its own run dir, record, checkpoints, samples and
    W&B run, exactly as if launched alone. Runs at different steps (a group stopped while
    saving) train in sub-groups of equal step; a run whose launch is refused or fails is
    recorded as alone and the others go on. Returns the records."""
    from ganlab.vectorize import unsupported

    problems = unsupported(cfg)
    if problems:
        raise ConfigError(f"fanout.group_seeds={list(cfg.fanout.group_seeds)}: vectorised seeds "
                          f"do not support {'; '.join(problems)}; launch the seeds one per run")
    members = member_runs(cfg, Path(run_dir), list(overrides or []))
    preflight(cfg, stack=len(members))
    records: dict[int, dict] = {}  # each run's record, once it says how the run ended
    with ExitStack() as stack, StopSignals() as stop:
        launches: dict[int, Launch] = {}
        trainers: dict[int, Trainer] = {}
        try:
            for i, (member_cfg, member_dir, member_overrides) in enumerate(members):
                try:
                    launches[i] = stack.enter_context(Launch(member_cfg, member_dir,
                                                             member_overrides))
                except Exception as err:  # not ours (busy), or not writable: not recorded
                    log.error("run %s not launched: %s", member_dir, err)
                    continue
                with speaking_for(member_dir):
                    try:
                        trainer = launches[i].trainer(stop)
                        trainer.log_prefix = f"{member_dir.name}: "
                        done = trainer.start(launches[i].accept)
                    except Exception as err:
                        launches[i].failed(err)
                        status, error = _describe_failure(err)
                        log.error("run %s did not start: %s", member_dir, error)
                        records[i] = {**launches[i].result.data, "status": status,
                                      "error": error}
                        continue
                if done is not None:
                    records[i] = done
                else:
                    trainers[i] = trainer
            by_step: dict[int, list[int]] = {}
            for i, trainer in trainers.items():
                by_step.setdefault(trainer.counters.step, []).append(i)
            for group in by_step.values():
                if len(group) == 1:  # nothing to stack it with: its own loop is faster
                    (i,) = group
                    with speaking_for(launches[i].run_dir):
                        records[i] = trainers[i].train()
                else:
                    _train_stacked([(i, launches[i], trainers[i]) for i in group], stop,
                                   records)
        except BaseException as err:
            # every run that has not recorded its end records this one
            with stop.shielded():
                for i, launch in launches.items():
                    if i in records:
                        continue
                    if i in trainers:
                        trainers[i].abandon()
                    launch.failed(err)
            if isinstance(err, Interrupted) and not err.at_once:
                stop.pass_on(err.signum)
            raise
    return [records[i] for i in sorted(records)]


def _train_stacked(group: list[tuple[int, Launch, Trainer]], stop: StopSignals,
                   records: dict[int, dict]) -> None:
    """The loop of `fit` for runs whose rounds one SeedStack plays; each run's bookkeeping
    is its own Trainer's, and each run's record goes into `records` as it ends. A run that
    diverges or fails is recorded and masked (its slot of the stack goes on, unread); a stop
    request checkpoints and records every run."""
    from ganlab.vectorize import SeedStack

    seeds = [trainer.cfg.seed for _, _, trainer in group]
    stack = SeedStack([trainer.gan for _, _, trainer in group])
    for _, launch, _trainer in group:
        launch.result.update(host={**launch.result.data["host"], "seed_stack": seeds})
    # said once on the console, and in each run's own log
    log.info("training seeds %s as one stacked model from step %d", seeds,
             group[0][2].counters.step)
    active = dict(enumerate(group))

    def end(slot: int, status: str, error: str | None = None) -> None:
        i, launch, trainer = active.pop(slot)
        with speaking_for(launch.run_dir):
            records[i] = trainer.finish(status, error)

    def fail(slot: int, err: Exception) -> None:
        i, launch, trainer = active.pop(slot)
        with speaking_for(launch.run_dir):
            log.exception("run %s failed", launch.run_dir)
            trainer.abandon()
            launch.failed(err)
            records[i] = launch.result.data

    stop.deferred = True
    try:
        for _, _, trainer in group:
            trainer.resume_clock()
        while active:
            if stop.requested is not None:
                interrupted = None
                for slot in list(active):
                    stack.unstack(slot)
                    trainer = active[slot][2]
                    with speaking_for(active[slot][1].run_dir):
                        status, error = trainer.interrupt()
                    interrupted = trainer.interrupted
                    trainer.interrupted = None  # raised once, below, for the whole group
                    end(slot, status, error)
                raise interrupted
            stats = stack.train_step()
            read = stack.stats_reader(stats)
            due = {}
            for slot in list(active):
                _, launch, trainer = active[slot]
                with speaking_for(launch.run_dir):  # its progress lines go to its log
                    try:
                        due[slot] = trainer.count_round(partial(read, slot))
                        continue
                    except Diverged as err:
                        status, error = trainer.diverged(err)
                end(slot, status, error)
            writing = [slot for slot, d in due.items() if d and slot in active]
            if writing:
                for slot in active:
                    active[slot][2].pause_clock()
                for slot in writing:
                    stack.unstack(slot)
                    try:
                        with speaking_for(active[slot][1].run_dir):
                            active[slot][2].write(*due[slot])
                    except Exception as err:
                        fail(slot, err)
                for slot in active:
                    active[slot][2].resume_clock()
            for slot in [s for s in active if active[s][2].finished]:
                end(slot, "completed")
    finally:
        stop.deferred = False


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


register_configs()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> dict | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    watch_the_sweep()  # a worker of a sweep ends with it
    apply_thread_budget(cfg.train.threads, _launcher_config(hc, cfg))
    try:
        if len(cfg.fanout.group_seeds) > 1:  # seeds grouped by ganlab.sweeper
            records = run_group(cfg, run_dir, overrides=list(hc.overrides.task))
            return records[0] if records else None
        return run(cfg, run_dir, overrides=list(hc.overrides.task))
    except Interrupted as err:
        # a stop request stops the whole sweep too; the run resumes when relaunched
        print(f"ganlab: {err}; relaunch the same command to resume", file=sys.stderr)
        if is_launcher_worker():  # a worker would stay on, idle: end it with the run
            _exit_now(128 + err.signum)
        sys.exit(128 + err.signum)
    except USER_ERRORS as err:
        prefix = "config error: " if isinstance(err, ConfigError) else ""
        if not multirun:
            print(f"ganlab: {prefix}{err}", file=sys.stderr)
            sys.exit(2)
        log.error("%s%s", prefix, err)
    except Exception as err:
        if out_of_memory(err):  # recorded in result.json with what to lower; one line here
            line = _describe_failure(err)[1]
            if not multirun:
                print(f"ganlab: {line}", file=sys.stderr)
                sys.exit(1)
            log.error("run %s failed: %s", run_dir, line)
            return None
        if not multirun:
            raise
        # The run's record already says failed; the sweep goes on to the next run.
        log.exception("run %s failed", run_dir)
    return None


def _launcher_config(hc, cfg: DictConfig) -> dict:
    """The job's `hydra.launcher`, its interpolations (`${fanout.n_jobs}`, ...) resolved
    against the run's config."""
    launcher = OmegaConf.to_container(hc.launcher, resolve=False)
    node = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=False), "launcher": launcher})
    try:
        return OmegaConf.to_container(node.launcher, resolve=True)
    except Exception:  # an interpolation the run's config cannot resolve: read it raw
        return launcher


def _check_writable(args: list[str]) -> None:
    """Where the run (or sweep) will be written must take a folder: a read-only or full disk
    ends here in one line rather than in Hydra's traceback."""
    key = "hydra.sweep.dir=" if {"-m", "--multirun"} & set(args) else "hydra.run.dir="
    target = Path(next((a[len(key):] for a in args if a.startswith(key)), "outputs"))
    existing = next(p for p in [target, *target.absolute().parents] if p.exists())
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".ganlab-probe-").cleanup()
    except OSError as e:
        raise StorageError(explain(e, target)) from None


def main() -> None:
    """`python -m ganlab.train`: bad overrides, and a place that cannot be written, end in
    one line (exit 2) before Hydra starts."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the run takes it over
    args = sys.argv[1:]
    multirun = bool({"-m", "--multirun"} & set(args))
    if multirun and threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop the sweep's workers with a checkpoint each; the workers
        # watch this process, and stop the same way if it dies without a word (SIGKILL)
        signal.signal(signal.SIGTERM, stop_workers_too)
        signal.signal(signal.SIGINT, stop_workers_too)
        os.environ[SWEEP_PID_ENV] = str(os.getpid())
        # joblib's resource trackers (started later, with this environment) clean up after
        # workers that a stop ended, without a warning printed after the sweep's last line
        os.environ["PYTHONWARNINGS"] = ",".join(
            w for w in (os.environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning")
            if w)
    try:
        for line in repeated_keys(args):
            print(f"ganlab: {line}", file=sys.stderr)
        check_overrides(args)
        _check_writable(args)
        if not multirun and all(not a.startswith("-") for a in args):
            # refused here, before Hydra makes the run dir (a sweep's sweeper checks its cells)
            preflight(compose(args))
    except (ConfigError, StorageError) as err:
        prefix = "config error: " if isinstance(err, ConfigError) else ""
        print(f"ganlab: {prefix}{err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
    if not multirun:
        _exit_now(0)


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown of torch (about a second), once
    the run's record, checkpoint and logs are written: W&B is torn down, logs flushed."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # Run the importable module's main, not this `__main__` copy: launchers that pickle the
    # task (submitit, Ray) then pickle it by reference, and its classes stay the same.
    import importlib

    importlib.import_module("ganlab.train").main()
