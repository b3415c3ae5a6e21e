"""Experiment tracking: Weights & Biases, offline unless the user asks for online.

A tracker never kills training nor blocks it: online mode that cannot reach W&B within
`logger.init_timeout` seconds says so once and logs offline instead (the copy lands in the
run dir, for `wandb sync`); any later W&B error is reported once, and the tracker turns
itself off for the rest of the run.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from ganlab.metrics import METRICS
from ganlab.registry import Registry

log = logging.getLogger(__name__)
TRACKERS: Registry[type] = Registry("logger")


@TRACKERS.register("none")
class NullTracker:
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def log_image(self, key: str, path: Path, step: int) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


@TRACKERS.register("wandb")
class WandbTracker(NullTracker):
    open_runs: set = set()  # the W&B runs of this process not yet finished
    def __init__(self, *, run_dir: Path, project: str, entity: str | None, mode: str,
                 group: str | None, tags: list[str], name: str, config: dict[str, Any],
                 init_timeout: float = 10.0):
        self.run = None
        id_file = run_dir / "wandb_id.txt"  # a resumed run appends to the same W&B run
        try:
            import wandb

            self._wandb = wandb
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id)

            def init(mode: str):
                return wandb.init(
                    project=project, entity=entity, mode=mode, group=group, tags=tags,
                    name=name, id=run_id, resume="allow", dir=str(run_dir), config=config,
                    reinit="create_new", settings=wandb.Settings(
                        silent=True, console="off", init_timeout=init_timeout))

            try:
                self.run = init(mode)
            except Exception as e:
                if mode != "online":
                    raise
                log.warning("W&B online could not start within %gs (%s); logging offline to "
                            "%s instead: upload it later with `wandb sync %s`", init_timeout,
                            type(e).__name__, run_dir / "wandb", run_dir / "wandb")
                if not WandbTracker.open_runs:  # (stack-mates' runs would go down with it)
                    wandb.teardown()  # the failed attempt holds the run id
                self.run = init("offline")
            WandbTracker.open_runs.add(self.run)
            for name, metric in METRICS.items():  # the run's summary keeps each one's best
                if metric.direction:
                    self.run.define_metric(name, summary="max" if metric.direction > 0
                                           else "min")
        except Exception as e:  # no login, a bad entity, no disk...: train anyway
            self._fail("init", e)

    def _fail(self, what: str, e: Exception) -> None:
        log.warning("W&B %s failed (%s: %s); continuing without W&B", what, type(e).__name__, e)
        self._close()

    def _close(self) -> None:
        WandbTracker.open_runs.discard(self.run)
        self.run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as e:
                self._fail("log", e)

    def log_image(self, key: str, path: Path, step: int) -> None:
        if self.run is not None:
            try:
                self.run.log({key: self._wandb.Image(str(path))}, step=step)
            except Exception as e:
                self._fail("log_image", e)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.summary.update(values)
            except Exception as e:
                self._fail("summary", e)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
                self._close()
                # stop W&B's service now: a launcher's worker may exit right after the run,
                # and a service torn down then prints connection errors over the sweep (once
                # no run of this process is open: stacked seeds each have one)
                if not WandbTracker.open_runs:
                    self._wandb.teardown()
            except Exception as e:
                self._fail("finish", e)


def build_tracker(logger_cfg, *, run_dir: Path, name: str, group: str | None, tags: list[str],
                  config: dict[str, Any]) -> NullTracker:
    tracker = TRACKERS.choose(logger_cfg.name)
    if tracker is NullTracker or logger_cfg.mode == "disabled":
        return NullTracker()
    # An explicit WANDB_MODE in the environment wins (e.g. CI forcing offline).
    mode = os.environ.get("WANDB_MODE", logger_cfg.mode)
    return tracker(run_dir=run_dir, project=logger_cfg.project, entity=logger_cfg.entity,
                   mode=mode, group=logger_cfg.group or group,
                   tags=list(logger_cfg.tags) + tags, name=name, config=config,
                   init_timeout=logger_cfg.init_timeout)
