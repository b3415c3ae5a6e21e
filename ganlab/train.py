"""Train one GAN from a composed config: `python -m ganlab.train [overrides]` (`-m` sweeps).

The loop knows counters, schedules and bookkeeping; what a trick does lives in the parts the
GAN is built from (ganlab.assemble). Running the same command into the same run directory
resumes from `checkpoints/last.pt`, bit-identically on CPU.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ganlab.assemble import build_gan, resolve_device
from ganlab.checkpoint import load_checkpoint, save_checkpoint
from ganlab.config import RESUME_FIXED_ROLES, ConfigError, flatten, keys_with_role, sweep_cell
from ganlab.configure import check, register_configs
from ganlab.evaluate import build_evaluator
from ganlab.evaluate.score import score
from ganlab.result import (
    TERMINAL,
    ResultFile,
    comparability_dict,
    hparams_dict,
    read_result,
    trick_dict,
)
from ganlab.tracking import build_tracker

log = logging.getLogger("ganlab.train")

# Test hook: SIGKILL the process after this many G steps, to test resume from a real kill.
KILL_AFTER_STEP_ENV = "GANLAB_KILL_AFTER_STEP"


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class Counters:
    step: int = 0  # G rounds completed (the x-axis of every curve)
    d_updates: int = 0  # D optimiser steps
    g_updates: int = 0  # G optimiser steps
    images_seen: int = 0  # real images shown to D
    wall_s: float = 0.0  # training time, excluding evaluation and checkpoint I/O


def _experiment_config(cfg: DictConfig) -> dict:
    """What a relaunch into the same run dir must agree on (ganlab.config's roles)."""
    return keys_with_role(cfg, RESUME_FIXED_ROLES)


def _config_drift(saved: dict, current: dict) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} vs {current.get(k)!r}" for k in keys
            if saved.get(k) != current.get(k)]


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, result: ResultFile,
                 previous: dict | None = None):
        """`previous`: the run dir's result.json as it was before this launch, if any."""
        self.cfg, self.run_dir, self.result = cfg, run_dir, result
        self.previous = previous
        self.device = resolve_device(cfg.train.device)
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"
        self.gan = build_gan(cfg, self.device)
        self.data = self.gan.data
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
                         "config": _experiment_config(self.cfg),
                         "torch_rng": torch.get_rng_state()}, self.ckpt_path)

    def try_resume(self) -> bool:
        """Restore the last checkpoint, if any; refuse one of another experiment."""
        if not self.ckpt_path.exists():
            return False
        state = load_checkpoint(self.ckpt_path)
        drift = _config_drift(state["config"], _experiment_config(self.cfg))
        if drift:
            raise ConfigError(f"{self.run_dir} holds a checkpoint of another experiment "
                              f"({'; '.join(drift)}); use a new run directory")
        self.gan.load_state_dict(state["gan"])
        self.counters = Counters(**state["counters"])
        self.history = list(state["history"])
        self.last_train = dict(state["last_train"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", self.ckpt_path, self.counters.step)
        return True

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
    def fit(self) -> dict:
        cfg = self.cfg
        t, e = cfg.train, cfg.eval
        previous = self.previous
        resumed = self.try_resume()
        c = self.counters  # after resuming: the restored counters
        # a diverged run would diverge again at the same step: relaunching leaves it alone
        if previous and previous["status"] in TERMINAL and (
                previous["status"] == "diverged" or (resumed and c.step >= t.steps)):
            log.info("%s is already %s; nothing to do", self.run_dir, previous["status"])
            self.result.update(**previous)
            return self.result.data
        if resumed:
            self.result.update(step=c.step, history=self.history, metrics=self.last_metrics)
        self.tracker = build_tracker(
            cfg.logger, run_dir=self.run_dir, name=self.run_dir.name,
            group=_wandb_group(), tags=[f"{k}={v}" for k, v in trick_dict(cfg).items()],
            config=flatten(cfg))
        # the evaluation protocol travels with the scores into W&B too
        self.tracker.summary(flatten(self.result.data["comparability"], "comparability/"))
        kill_at = int(os.environ.get(KILL_AFTER_STEP_ENV, "0"))
        bar = tqdm(total=t.steps, initial=c.step, desc=self.run_dir.name, dynamic_ncols=True,
                   disable=not (t.progress and sys.stderr.isatty()), leave=False)
        status, error = "completed", None
        self.gan.G.train()
        self.gan.D.train()
        try:
            start = time.perf_counter()
            while c.step < t.steps:
                stats = self.gan.train_step()
                c.step += 1
                c.d_updates += t.d_steps
                c.g_updates += t.g_steps
                c.images_seen += t.d_steps * t.batch_size
                bar.update()
                eval_due = c.step == t.steps or (e.every > 0 and c.step % e.every == 0)
                ckpt_due = c.step == t.steps or (t.checkpoint_every > 0
                                                 and c.step % t.checkpoint_every == 0)
                if not (eval_due or ckpt_due or c.step % t.log_every == 0):
                    continue
                self.last_train = self._read_stats(stats)  # the one sync with the device
                self.tracker.log(self.last_train, c.step)
                bar.set_postfix({k[6:]: f"{v:.3g}" for k, v in self.last_train.items()
                                 if k in ("train/loss_d", "train/loss_g")})
                if eval_due or ckpt_due:
                    c.wall_s += time.perf_counter() - start
                    if eval_due:
                        metrics = self.evaluate()
                        log.info("step %d/%d  %s", c.step, t.steps, _fmt(
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
            bar.close()
        final = self.last_metrics
        self.result.update(status=status, error=error, step=c.step, metrics=final,
                           history=self.history,
                           host={**self.result.data["host"], "ended": time.time()})
        self.tracker.summary({"status": status, **final})
        self.tracker.finish(exit_code=0 if status == "completed" else 1)
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


def _host_record() -> dict:
    """Where and when the run ran (a launcher's device assignment shows up here)."""
    return {"hostname": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "started": time.time(), "ended": None}


def run(cfg: DictConfig, run_dir: Path | str) -> dict:
    """Train one run into `run_dir`; always leaves its result.json. Returns its contents."""
    run_dir = Path(run_dir)
    saved_config = run_dir / ".hydra" / "config.yaml"
    if not saved_config.exists():  # a run started from Python, not the CLI: save it too
        saved_config.parent.mkdir(parents=True, exist_ok=True)
        saved_config.write_text(OmegaConf.to_yaml(cfg))
    previous = read_result(run_dir)  # read before this launch rewrites it
    result = ResultFile(run_dir / "result.json")
    try:
        # The evaluation protocol joins `comparability` once the evaluator is built.
        result.update(seed=cfg.seed, trick=trick_dict(cfg), hparams=hparams_dict(cfg),
                      comparability=comparability_dict(cfg, None),
                      study=OmegaConf.to_container(cfg.study, resolve=True),
                      host=_host_record())
        check(cfg)
        return Trainer(cfg, run_dir, result, previous).fit()
    except ConfigError as err:
        result.update(status="failed", error=f"config error: {err}")
        raise
    except Exception as err:
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise


register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return run(cfg, run_dir)
    except ConfigError as err:
        if not multirun:
            print(f"ganlab: config error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("config error: %s", err)
    except Exception:
        if not multirun:
            raise
        # The run's result.json already says failed; the sweep goes on to the next run.
        log.exception("run %s failed", run_dir)
    return read_result(run_dir)


if __name__ == "__main__":
    main()
