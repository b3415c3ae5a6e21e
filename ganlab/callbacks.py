"""Hydra callbacks: the sweep's closing summary, printed last (after the launcher's
workers have shut down, so their teardown messages cannot bury it)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ganlab.result import RecordError, count_statuses, read_result

log = logging.getLogger("ganlab.sweep")


def _status(run_dir: Path) -> str:
    try:
        return read_result(run_dir)["status"]
    except RecordError:
        return "unreadable"


def sweep_status_counts(sweep_dir: Path):
    return count_statuses([{"status": _status(p.parent)}
                           for p in sorted(sweep_dir.rglob("result.json"))])


def summary_line(sweep_dir: Path, counts) -> str:
    extra = [f"{counts[s]} {name}" for s, name in (("interrupted", "interrupted"),
                                                   ("running", "unfinished"),
                                                   ("unreadable", "unreadable"))
             if counts[s]]
    return (f"sweep {sweep_dir}: {counts['completed']} completed, {counts['diverged']} "
            f"diverged, {counts['failed']} failed" + "".join(f", {e}" for e in extra))


def _shut_down_workers() -> None:
    """Stop a Ray launcher's workers now, so that their teardown output comes before the
    summary line, not after it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


class SweepSummary(Callback):
    """Count the sweep's runs by status at the end; a sweep with failed runs exits 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _shut_down_workers()
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = sweep_status_counts(sweep_dir)
        for handler in logging.getLogger().handlers:
            handler.flush()
        log.info(summary_line(sweep_dir, counts))
        if counts["failed"] or counts["unreadable"]:
            sys.exit(1)
