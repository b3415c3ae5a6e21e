"""The training loop of one run: `Trainer` plays rounds of the run's GAN from where its
checkpoint left it to `train.steps`, evaluates and checkpoints when due, and records how the
run ended (completed, diverged, interrupted). It knows counters, schedules and bookkeeping;
what a trick does lives in the parts the GAN is built from (ganlab.assemble), and what a
relaunch does with a run dir in ganlab.launch. It reads no global Hydra state.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.contrib.logging import logging_redirect_tqdm

from ganlab.assemble import build_gan, resolve_device, resolve_optimizer_impl
from ganlab.checkpoint import LAST, load_latest, save_checkpoint
from ganlab.config import (
    RESUME_FIXED_ROLES,
    ConfigError,
    flatten,
    keys_with_role,
)
from ganlab.configure import schema_default
from ganlab.evaluate import build_evaluator
from ganlab.evaluate.score import EvaluationStopped, score
from ganlab.graphs import GraphedRound, refuse_uncapturable
from ganlab.result import (
    ResultFile,
    comparability_dict,
    trick_dict,
)
from ganlab.stops import (
    Interrupted,
    Progress,
    StopSignals,
)
from ganlab.tracking import BUDGET_KEYS, RunIdentity, best_values, build_tracker

log = logging.getLogger("ganlab.train")


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class Counters:
    step: int = 0  # rounds completed (the x-axis of every curve)
    d_updates: int = 0  # D optimiser steps
    g_updates: int = 0  # G optimiser steps
    images_seen: int = 0  # real samples shown to D (its updates and feature matching's)
    wall_s: float = 0.0  # training time, excluding evaluation and checkpoint I/O


@dataclass
class Resume:
    """What a launch does with its run dir's checkpoint (ganlab.launch.resume_plan)."""

    state: dict | None  # the checkpoint to restore, None for a fresh start
    done: dict | None = None  # the run's record, when there is nothing to do
    repair_to: int | None = None  # the record's step, when a checkpoint is trained back to it


def experiment_config(cfg: DictConfig) -> dict:
    """What a relaunch into the same run dir must agree on (ganlab.config's roles)."""
    return keys_with_role(cfg, RESUME_FIXED_ROLES)


def refuse_drift(run_dir: Path, saved: dict, current: dict, what: str) -> None:
    # a key that did not exist when `saved` was written ran as its default (eval.ema=0)
    saved = {**{k: schema_default(k) for k in current if k not in saved}, **saved}
    changed = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
               for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        raise ConfigError(
            f"{run_dir} holds {what} of another experiment ({'; '.join(changed)}); it is left "
            "as it was. To train this config, launch it into a new directory "
            f"(hydra.run.dir=...), or `python -m ganlab.rerun {run_dir} KEY=VALUE ...`")


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, result: ResultFile,
                 previous: dict | None = None, stop: StopSignals | None = None,
                 plan: Resume | None = None, identity: RunIdentity | None = None):
        """`previous`: the run dir's record as it was before this launch, if any; `plan`:
        what this launch does with the dir's checkpoint (ganlab.launch.resume_plan);
        `identity`: how the run appears in W&B (ganlab.launch; default: its dir's name)."""
        self.cfg, self.run_dir, self.result = cfg, run_dir, result
        self.previous, self.stop, self.plan = previous, stop or StopSignals(), plan
        self.identity = identity or RunIdentity(name=run_dir.name)
        self.device = resolve_device(cfg.train.device)
        refuse_uncapturable(cfg, self.device)
        self.ckpt_path = run_dir / "checkpoints" / LAST
        self.gan = build_gan(cfg, self.device)
        self.data = self.gan.data
        # fused, foreach and loop Adam differ in the last bits: the record says which ran
        result.update(host={**result.data["host"], "device": str(self.device),
                            "gpu": (torch.cuda.get_device_name(self.device)
                                    if self.device.type == "cuda" else None),
                            "optimizer_impl": resolve_optimizer_impl(
                                cfg.train.optimizer_impl, self.device),
                            "cuda_graphs": bool(cfg.train.cuda_graphs)})
        # May train the feature classifier and cache real statistics on first use.
        self.evaluator = build_evaluator(cfg, self.data, self.device)
        # the record says what ran: a plug-in may force separate real/fake batches in D
        result.update(comparability=comparability_dict(cfg, self.evaluator.protocol()),
                      trick={**trick_dict(cfg),
                             "norm.d_batches": self.gan.d_batches})
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
        self.tracker.log({**metrics, **{k: entry[k] for k in BUDGET_KEYS}}, c.step)
        self.tracker.log_image("samples", path, c.step)
        self.tracker.summary(best_values(self.history))
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
        # log lines go above the bar, never through it
        redirect = nullcontext() if self.progress.bar.disable else logging_redirect_tqdm()
        try:
            self.resume_clock()
            with redirect:
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
        """Everything before the first round; the run's record if there is nothing to do.
        What a relaunch does (resume, extend, repair a checkpoint, or nothing) is decided
        by the launch (`self.plan`, ganlab.launch.resume_plan); a Trainer made without one
        resumes from its checkpoint, if any."""
        cfg = self.cfg
        t = cfg.train
        plan = self.plan or Resume(load_latest(self.ckpt_path.parent))
        if plan.done is not None:
            return plan.done
        state, self.repair_to = plan.state, plan.repair_to
        if state is not None:
            self.restore(state)
        c = self.counters
        self.result.update(step=c.step, history=self.history, metrics=self.last_metrics,
                           host={**self.result.data["host"], "from_step": c.step})
        if accept is not None and not self.repair_to:  # a repair writes no record
            accept()
        # the evaluation protocol travels with the config into W&B, where runs are filtered
        self.tracker = build_tracker(
            cfg.logger, run_dir=self.run_dir, identity=self.identity,
            config={**flatten(cfg), **flatten(self.result.data["comparability"],
                                              "comparability/")})
        where = self.tracker.record()
        if where is not None:
            self.result.update(wandb=where)
        self.progress = Progress(t.steps, self.identity.name, "rounds", start=c.step,
                                 enabled=t.progress, lines_say="step")
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
        self.progress.update(1)
        last = c.step == self.steps
        eval_due = self.eval_due(c.step)
        ckpt_due = last or (self.ckpt_every > 0 and c.step % self.ckpt_every == 0)
        if not (eval_due or ckpt_due or c.step % self.log_every == 0):
            return None
        self.last_train = self._read_stats(read_stats())
        self.tracker.log(self.last_train, c.step)
        self.progress.bar.set_postfix({k[6:]: f"{v:.3g}" for k, v in self.last_train.items()
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
        if hasattr(self, "progress"):
            self.progress.bar.close()
        if hasattr(self, "tracker"):
            self.tracker.summary({"status": "failed"})
            self.tracker.finish(exit_code=1)

    def finish(self, status: str, error: str | None) -> dict:
        """Record how the run ended; re-raises a stop request once recorded."""
        self.progress.bar.close()
        final = self.last_metrics
        with self.stop.shielded():  # a stop signal now waits for the record
            self.result.update(status=status, error=error, step=self.counters.step,
                               metrics=final, history=self.history,
                               host={**self.result.data["host"], "ended": time.time()})
        self.tracker.summary({"status": status, **final, **best_values(self.history)})
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
