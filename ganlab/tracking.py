"""Experiment tracking: Weights & Biases, offline unless the user asks for online.

A tracker never kills training nor blocks it: online mode that cannot reach W&B within
`logger.init_timeout` seconds says so once and logs offline instead (the copy lands in the
run dir, for `wandb sync`); any later W&B error is reported once, and the tracker turns
itself off for the rest of the run.

How a run appears there (`RunIdentity`, made by ganlab.launch): one W&B group per experiment
(the sweep's study or sweep dir name, then its cell), a name unique in the sweep (cell and
seed), a job type (train / rerun / evaluate / compare) and tags for the study, the variant
and the keys the sweep varies. The budgets (`BUDGET_KEYS`) are logged with every evaluation
so W&B can plot a metric against images seen or wall time; each metric with a direction
keeps its best value in the summary under `<metric>.min` / `<metric>.max` beside the last.
The run's own record (result.json `wandb`) says where it went, so a re-run, a re-scoring and
the comparer write to the same place.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganlab.metrics import METRICS
from ganlab.registry import Registry

log = logging.getLogger(__name__)
TRACKERS: Registry[type] = Registry("logger")

# the training budget at each evaluation (result.json history), W&B's x-axes for a metric
BUDGET_KEYS = ("images_seen", "g_updates", "d_updates", "wall_s")
TAG_MAX = 64  # W&B refuses longer tags
NAME_MAX = 128  # W&B's limit on a group's and a run's name


def fit(text: str | None, limit: int = NAME_MAX) -> str | None:
    """`text` within W&B's limit: a long name keeps its start and a hash of the whole, so two
    names that differ only at the end stay apart."""
    if text is None or len(text) <= limit:
        return text
    import hashlib

    return f"{text[:limit - 10]}…{hashlib.sha1(text.encode()).hexdigest()[:9]}"


@dataclass(frozen=True)
class RunIdentity:
    """How one run appears in W&B."""

    name: str
    group: str | None = None
    sweep: str | None = None  # the experiment: a study's name, else the sweep dir's name
    job_type: str = "train"
    tags: tuple[str, ...] = ()


def best_values(history: list[dict]) -> dict[str, float]:
    """Each metric with a direction at its best over the evaluations in `history` (entries
    of result.json's history), as `<metric>.max` or `<metric>.min`."""
    best: dict[str, float] = {}
    for entry in history:
        for key, value in (entry.get("metrics") or {}).items():
            metric = METRICS.get(key)
            if (metric is None or not metric.direction or isinstance(value, bool)
                    or not isinstance(value, (int, float)) or not math.isfinite(value)):
                continue
            name = f"{key}.{'max' if metric.direction > 0 else 'min'}"
            pick = max if metric.direction > 0 else min
            best[name] = value if name not in best else pick(best[name], value)
    return best


def target(logger_cfg) -> dict[str, Any]:
    """Where a run's W&B logging goes: project, entity and mode, the config's unless the
    environment says otherwise (WANDB_PROJECT / WANDB_ENTITY where the config names none;
    WANDB_MODE always, e.g. CI forcing offline)."""
    return {"project": logger_cfg.project or os.environ.get("WANDB_PROJECT") or "ganlab",
            "entity": logger_cfg.entity or os.environ.get("WANDB_ENTITY") or None,
            "mode": os.environ.get("WANDB_MODE", logger_cfg.mode)}


@TRACKERS.register("none")
class NullTracker:
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def log_image(self, key: str, path: Path, step: int) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def config(self, values: dict[str, Any]) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...
    def record(self) -> dict[str, Any] | None:
        return None


@TRACKERS.register("wandb")
class WandbTracker(NullTracker):
    open_runs: set = set()  # the W&B runs of this process not yet finished
    def __init__(self, *, run_dir: Path, project: str, entity: str | None, mode: str,
                 identity: RunIdentity, tags: list[str], config: dict[str, Any],
                 init_timeout: float = 10.0, resume_only: bool = False):
        self.run, self.identity, self.mode = None, identity, mode
        id_file = run_dir / "wandb_id.txt"  # a resumed run appends to the same W&B run
        try:
            import wandb

            self._wandb = wandb
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            if not resume_only:
                id_file.write_text(run_id)

            def init(mode: str):
                # a run resumed only to update its scores keeps its name, group and type
                named = {} if resume_only else {
                    "group": identity.group, "tags": tags, "name": identity.name,
                    "job_type": identity.job_type, "config": config}
                return wandb.init(
                    project=project, entity=entity, mode=mode, id=run_id, resume="allow",
                    dir=str(run_dir), reinit="create_new", **named, settings=wandb.Settings(
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
                self.run, self.mode = init("offline"), "offline"
            WandbTracker.open_runs.add(self.run)
            for key in BUDGET_KEYS:  # offered as x-axes beside the step
                self.run.define_metric(key, summary="max")
        except Exception as e:  # no login, a bad entity, no disk...: train anyway
            self._fail("init", e)

    def record(self) -> dict[str, Any] | None:
        """Where this run went, for result.json (a re-run, a re-scoring and the comparer
        write to the same place)."""
        if self.run is None:
            return None
        i = self.identity
        return {"project": self.run.project, "entity": self.run.entity or None,
                "mode": self.mode, "id": self.run.id, "group": i.group, "sweep": i.sweep,
                "name": i.name, "job_type": i.job_type}

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

    def config(self, values: dict[str, Any]) -> None:
        """Change the run's config (a re-scoring's new evaluation protocol)."""
        if self.run is not None:
            try:
                self.run.config.update(values, allow_val_change=True)
            except Exception as e:
                self._fail("config", e)

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


def build_tracker(logger_cfg, *, run_dir: Path, identity: RunIdentity,
                  config: dict[str, Any], resume_only: bool = False) -> NullTracker:
    """The run's tracker. `resume_only`: reopen the W&B run of `run_dir` (its id is kept
    there) to update what it shows, keeping its name, group, job type and config."""
    tracker = TRACKERS.choose(logger_cfg.name)
    to = target(logger_cfg)
    if tracker is NullTracker or "disabled" in (logger_cfg.mode, to["mode"]):
        return NullTracker()
    if resume_only and not (run_dir / "wandb_id.txt").exists():
        return NullTracker()  # it never logged to W&B
    tags = [t[:TAG_MAX] for t in dict.fromkeys([*logger_cfg.tags, *identity.tags])]
    # the user's own grouping wins; names fit W&B's limit
    identity = RunIdentity(fit(identity.name), fit(logger_cfg.group or identity.group),
                           identity.sweep, identity.job_type, identity.tags)
    return tracker(run_dir=run_dir, **to, identity=identity, tags=tags, config=config,
                   init_timeout=logger_cfg.init_timeout, resume_only=resume_only)
