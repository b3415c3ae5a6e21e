"""Hydra callbacks: the sweep's closing summary."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ganlab.result import count_statuses, read_result

log = logging.getLogger("ganlab.sweep")


def sweep_status_counts(sweep_dir: Path):
    results = [read_result(p.parent) or {"status": "unreadable"}
               for p in sorted(sweep_dir.rglob("result.json"))]
    return count_statuses(results)


class SweepSummary(Callback):
    """Count the sweep's runs by status at the end; a sweep with failed runs exits 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = sweep_status_counts(sweep_dir)
        line = (f"sweep {sweep_dir}: {counts['completed']} completed, "
                f"{counts['diverged']} diverged, {counts['failed']} failed"
                + (f", {counts['running']} unfinished" if counts["running"] else ""))
        log.info(line)
        if counts["failed"] or counts["unreadable"]:
            sys.exit(1)
