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
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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
from ganlab.configure import check, check_overrides, load_config, register_configs
from ganlab.evaluate import build_evaluator
from ganlab.evaluate.score import score
from ganlab.result import (
    TERMINAL,
    ResultFile,
    comparability_dict,
    hparams_dict,
    trick_dict,
)
from ganlab.rundir import RunDirBusy, RunDirLock, read_previous, save_config, write_failure
from ganlab.stops import (
    Interrupted,
    ProgressLines,
    StopSignals,
    is_launcher_worker,
    stop_workers_too,
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
        self.ckpt_path = run_dir / "checkpoints" / LAST
        self.gan = build_gan(cfg, self.device)
        self.data = self.gan.data
        # fused, foreach and loop Adam differ in the last bits: the record says which ran
        result.update(host={**result.data["host"], "device": str(self.device),
                            "optimizer_impl": resolve_optimizer_impl(
                                cfg.train.optimizer_impl, self.device)})
        # May train the feature classifier and cache real statistics on first use.
        self.evaluator = build_evaluator(cfg, self.data, self.device)
        # the record says what ran: a plug-in may force separate real/fake batches in D
        result.update(comparability=comparability_dict(cfg, self.evaluator.protocol()),
                      trick={**trick_dict(cfg),
                             "norm.split_real_fake": self.gan.split_real_fake})
        self.counters = Counters()
        self.history: list[dict] = []
        self.last_train: dict[str, float] = {}

    # -- checkpoints -------------------------------------------------------------------
    def save(self) -> None:
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
                           title=f"{cfg.data.name}  step {c.step}")
        entry = {"step": c.step, "images_seen": c.images_seen, "g_updates": c.g_updates,
                 "d_updates": c.d_updates, "wall_s": round(c.wall_s, 3), "num_samples": n,
                 "metrics": {**self.last_train, **metrics}}
        self.history.append(entry)
        self.tracker.log(metrics, c.step)
        self.tracker.log_image("samples", path, c.step)
        return metrics

    def _read_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        values = {f"train/{k}": v for k, v in self.gan.read_stats(stats).items()}
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
    def fit(self, accept=None) -> dict:
        """Train to `train.steps`. `accept()` is called once the launch is accepted (the
        checkpoint, if any, restored and consistent), before anything is written."""
        cfg, previous = self.cfg, self.previous
        t, e = cfg.train, cfg.eval
        state = load_latest(self.ckpt_path.parent)
        if state is not None:
            refuse_drift(self.run_dir, state["config"], experiment_config(cfg), "a checkpoint")
        if previous and previous["status"] in TERMINAL:
            reached = state["counters"]["step"] if state is not None else previous["step"]
            done = previous["status"] == "completed" and max(reached, previous["step"]) >= t.steps
            # a diverged run would diverge again at the same step: relaunching leaves it alone
            if previous["status"] == "diverged" or done:
                log.info("%s is already %s; nothing to do", self.run_dir, previous["status"])
                return previous
            if state is None:
                raise CheckpointError(
                    f"{self.run_dir} is {previous['status']} at step {previous['step']} and "
                    f"has no checkpoint to extend it to train.steps={t.steps}")
        if state is not None and state["counters"]["step"] > t.steps:
            raise ConfigError(
                f"{self.run_dir} has trained {state['counters']['step']} rounds, more than "
                f"train.steps={t.steps}; a run is not shortened: relaunch it with "
                f"train.steps>={state['counters']['step']}, or launch into a new directory")
        if state is not None:
            self.restore(state)
        c = self.counters
        self.result.update(step=c.step, history=self.history, metrics=self.last_metrics)
        if accept is not None:
            accept()
        self.tracker = build_tracker(  # tagged with what ran, as the record says
            cfg.logger, run_dir=self.run_dir, name=self.run_dir.name, group=_wandb_group(),
            tags=[f"{k}={v}" for k, v in self.result.data["trick"].items()],
            config=flatten(cfg))
        # the evaluation protocol travels with the scores into W&B too
        self.tracker.summary(flatten(self.result.data["comparability"], "comparability/"))
        kill_at = int(os.environ.get(KILL_AFTER_STEP_ENV, "0"))
        bar = tqdm(total=t.steps, initial=c.step, desc=self.run_dir.name, dynamic_ncols=True,
                   disable=not (t.progress and sys.stderr.isatty()), leave=False)
        progress = ProgressLines(t.steps, c.step, enabled=t.progress and bar.disable)
        status, error, interrupted = "completed", None, None
        self.gan.G.train()
        self.gan.D.train()
        self.stop.deferred = True
        # the loop reads plain ints: an OmegaConf attribute costs microseconds per read
        steps, d_steps, g_steps = t.steps, t.d_steps, t.g_steps
        eval_every, ckpt_every, log_every = e.every, t.checkpoint_every, t.log_every
        try:
            start = time.perf_counter()
            while c.step < steps:
                if self.stop.requested is not None:
                    interrupted = Interrupted(self.stop.requested)
                    c.wall_s += time.perf_counter() - start
                    self.save()  # between rounds: a consistent state to resume from
                    status = "interrupted"
                    error = (f"{interrupted} at step {c.step}; checkpoint saved: relaunch the "
                             "same command to resume")
                    log.warning("%s", error)
                    break
                stats = self.gan.train_step()
                c.step += 1
                c.d_updates += d_steps
                c.g_updates += g_steps
                c.images_seen += self.gan.round_images
                bar.update()
                progress.update(c.step)
                eval_due = c.step == steps or (eval_every > 0 and c.step % eval_every == 0)
                ckpt_due = c.step == steps or (ckpt_every > 0 and c.step % ckpt_every == 0)
                if not (eval_due or ckpt_due or c.step % log_every == 0):
                    continue
                self.last_train = self._read_stats(stats)  # the one sync with the device
                self.tracker.log(self.last_train, c.step)
                bar.set_postfix({k[6:]: f"{v:.3g}" for k, v in self.last_train.items()
                                 if k in ("train/loss_d", "train/loss_g")})
                if eval_due or ckpt_due:
                    c.wall_s += time.perf_counter() - start
                    if eval_due:
                        metrics = self.evaluate()
                        log.info("step %d/%d  %s", c.step, steps, _fmt(
                            {**self.last_train, **metrics}))
                        self.result.update(step=c.step, metrics={**self.last_train, **metrics},
                                           history=self.history)
                    if ckpt_due:
                        self.save()
                    if kill_at and c.step >= kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    start = time.perf_counter()
        except Diverged as err:
            status, error = "diverged", str(err)
            log.warning("run diverged: %s", err)
        finally:
            self.stop.deferred = False
            bar.close()
        final = self.last_metrics
        self.result.update(status=status, error=error, step=c.step, metrics=final,
                           history=self.history,
                           host={**self.result.data["host"], "ended": time.time()})
        self.tracker.summary({"status": status, **final})
        self.tracker.finish(exit_code=0 if status == "completed" else 1)
        if interrupted is not None:
            raise interrupted
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


def _host_record() -> dict:
    """Where and when the run ran (a launcher's device assignment shows up here)."""
    return {"hostname": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "started": time.time(), "ended": None}


@contextmanager
def _file_log(path: Path):
    """The run's own log file (opened once the run dir is ours)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - "
                                           "%(message)s"))
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
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return "failed", (f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                          " (out of memory: lower train.batch_size or norm.ref_batch_size, "
                          "or pack fewer runs per GPU with fanout.runs_per_gpu)")
    return "failed", f"{type(err).__name__}: {err}"


def run(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None) -> dict:
    """Train one run into `run_dir`; returns its record.

    A relaunch into a dir that holds a run resumes it; one that fails before it is accepted
    leaves the previous record, config and checkpoints as they were and writes
    `result.failed-<time>.json` beside them. A fresh run that fails still writes its
    result.json (status failed). `overrides` are saved with the config."""
    run_dir = Path(run_dir)
    with RunDirLock(run_dir), _file_log(run_dir / "train.log"), StopSignals() as stop:
        log.info("run dir %s", run_dir.resolve())
        for path in remove_stale_temporaries(run_dir):
            log.info("removed %s, left by a writer that did not finish", path)
        previous = read_previous(run_dir)
        # The evaluation protocol joins `comparability` once the evaluator is built.
        result = ResultFile(run_dir / "result.json", live=False, seed=cfg.seed,
                            trick=trick_dict(cfg), hparams=hparams_dict(cfg),
                            comparability=comparability_dict(cfg, None),
                            eval_settings=eval_settings(cfg),
                            study=OmegaConf.to_container(cfg.study, resolve=True),
                            choices=_choices(), host=_host_record())

        def accept() -> None:  # this launch's config and record replace the previous ones
            save_config(run_dir, cfg, overrides)
            result.go_live()

        try:
            check(cfg)
            saved = run_dir / ".hydra" / "config.yaml"
            if previous is not None and saved.exists():
                if _nothing_to_keep(run_dir, previous):
                    _set_aside(run_dir, previous)
                else:
                    refuse_drift(run_dir, experiment_config(load_config(run_dir, [])),
                                 experiment_config(cfg), "a run")
            _warn_about_work(cfg)
            return Trainer(cfg, run_dir, result, previous, stop).fit(accept)
        except BaseException as err:
            _record_failure(run_dir, result, previous, err, accept)
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
    try:
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
    except (MemoryError, torch.cuda.OutOfMemoryError) as err:
        # recorded in result.json with what to lower; the console gets that line
        line = _describe_failure(err)[1]
        if not multirun:
            print(f"ganlab: {line}", file=sys.stderr)
            sys.exit(1)
        log.error("run %s failed: %s", run_dir, line)
    except Exception:
        if not multirun:
            raise
        # The run's record already says failed; the sweep goes on to the next run.
        log.exception("run %s failed", run_dir)
    return None


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
        signal.signal(signal.SIGTERM, stop_workers_too)
    try:
        check_overrides(args)
        _check_writable(args)
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
