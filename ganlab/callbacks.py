"""Hydra callbacks: the sweep's closing summary, printed last (after the launcher's
workers have shut down, so their teardown messages cannot bury it)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ganlab import stops
from ganlab.result import RecordError, count_statuses, read_result
from ganlab.rundir import held_by_another

log = logging.getLogger("ganlab.sweep")


def _status(run_dir: Path) -> str:
    try:
        return read_result(run_dir)["status"]
    except RecordError:
        return "unreadable"


def sweep_status_counts(sweep_dir: Path):
    """Runs by status; a run dir another process still holds (a worker of an earlier
    launch that has not ended) counts as `busy`, whatever its record says so far."""
    return count_statuses([{"status": "busy" if held_by_another(p.parent) else _status(p.parent)}
                           for p in sorted(sweep_dir.rglob("result.json"))])


def refused_launches(sweep_dir: Path, since: float) -> list[Path]:
    """The launches of this sweep that were refused before they started (each leaves
    `result.failed-<time>.json` beside the record it did not touch)."""
    return [p for p in sorted(sweep_dir.rglob("result.failed-*.json"))
            if p.stat().st_mtime >= since]


def stopped_this_launch(sweep_dir: Path, since: float) -> list[Path]:
    """Run dirs whose record this launch left `interrupted`: something stopped the run on its
    own (SIGTERM to its worker, a cluster job cancelled or out of time) while the sweep went
    on. A stop of the whole sweep never gets here (it exits 128 + signal at once)."""
    found = []
    for path in sorted(sweep_dir.rglob("result.json")):
        try:
            if path.stat().st_mtime >= since and _status(path.parent) == "interrupted":
                found.append(path.parent)
        except OSError:  # removed meanwhile
            continue
    return found


def summary_line(sweep_dir: Path, counts, refused: int = 0) -> str:
    extra = [f"{counts[s]} {name}" for s, name in (
        ("interrupted", "interrupted"), ("running", "unfinished"), ("unreadable", "unreadable"),
        ("busy", "still held by another process (not counted: relaunch once it has ended)"))
        if counts[s]]
    if refused:
        extra.append(f"{refused} launch{'es' if refused > 1 else ''} refused (the record "
                     "before it kept; see result.failed-*.json)")
    return (f"sweep {sweep_dir}: {counts['completed']} completed, {counts['diverged']} "
            f"diverged, {counts['failed']} failed" + "".join(f", {e}" for e in extra))


def closing_table(sweep_dir: Path) -> str:
    """The sweep's primary metric per variant (`compare --brief`), then the command that
    compares it."""
    from ganlab.compare.runs import load_results
    from ganlab.compare.tables import default_metric, format_brief

    command = f"next: python -m ganlab.compare {sweep_dir}"
    try:
        results = load_results([sweep_dir])
        metric = default_metric(results)
        table = format_brief(results, [metric]).rstrip()
    except Exception as e:  # nothing comparable yet: the command still applies
        log.debug("no closing table: %s", e)
        return command
    return f"{metric} per variant (mean ± sd over seeds; no tests yet):\n{table}\n{command}"


class SweepSummary(Callback):
    """Count the sweep's runs by status at the end; a sweep with failed runs, or with runs
    this launch left unfinished, exits 1 (a script that compares after `train -m` must not
    take a part of the study for the whole)."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        stops.LOST_RUNS.clear()  # this sweep's only
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if sweep_dir is not None:  # whose runs a stop signal stops
            stops.SWEEP_DIR = Path(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stops.shut_down_ray()  # its workers' teardown output before the summary line
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = sweep_status_counts(sweep_dir)
        refused = refused_launches(sweep_dir, self.started)
        for handler in logging.getLogger().handlers:
            handler.flush()
        log.info(summary_line(sweep_dir, counts, len(refused)))
        print(closing_table(sweep_dir), flush=True)
        if stops.LOST_RUNS:  # ganlab.sweeper.SurvivesLostWorkers
            log.error("%d run(s) left unfinished after their worker process was lost; "
                      "relaunch the same command to resume them", len(stops.LOST_RUNS))
        lost = {Path(p) for p in stops.LOST_RUNS}
        stopped = [p for p in stopped_this_launch(sweep_dir, self.started) if p not in lost]
        if stopped:
            log.error("%d run(s) of this launch were stopped on their own before they finished "
                      "(recorded `interrupted`, e.g. %s); relaunch the same command to resume "
                      "them", len(stopped), stopped[0])
        if (counts["failed"] or counts["unreadable"] or counts["busy"] or refused
                or stops.LOST_RUNS or stopped):
            sys.exit(1)
