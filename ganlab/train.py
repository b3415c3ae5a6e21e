"""Train one GAN from a composed config: `python -m ganlab.train [overrides]` (`-m` sweeps).

The command line only: bad overrides, a place that cannot be written and every config that
cannot run are refused in one line before Hydra starts (a sweep's cells by its sweeper),
each job gets its share of the cores, and a run's end becomes an exit code. The work is
ganlab.launch (a run into its dir: `run`), ganlab.loop (`Trainer`) and ganlab.stacked
(`run_group`, vectorised seeds); their public names are importable from here too.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ganlab.config import CONF_DIR, ConfigError
from ganlab.configure import check_overrides, compose, register_configs, repeated_keys
from ganlab.keyhelp import command_help
from ganlab.launch import (  # noqa: F401 (the public names of a run, importable from here)
    USER_ERRORS,
    _describe_failure,
    apply_thread_budget,
    launcher_config,
    out_of_memory,
    run,
)
from ganlab.loop import Trainer  # noqa: F401
from ganlab.preflight import preflight
from ganlab.stacked import run_group  # noqa: F401
from ganlab.stops import (
    Interrupted,
    exit_now,
    is_launcher_worker,
    stop_the_sweep_with_its_workers,
    wait_for_sibling_runs,
    watch_the_sweep,
)
from ganlab.storage import StorageError, check_writable

log = logging.getLogger("ganlab.train")


register_configs()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> dict | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    watch_the_sweep()  # a worker of a sweep ends with it
    apply_thread_budget(cfg.train.threads, launcher_config(hc, cfg))
    try:
        if len(cfg.fanout.group_seeds) > 1:  # seeds grouped by ganlab.sweeper
            records = run_group(cfg, run_dir, overrides=list(hc.overrides.task))
            return records[0] if records else None
        return run(cfg, run_dir, overrides=list(hc.overrides.task))
    except Interrupted as err:
        # a stop to one joblib worker alone: the job ends, the worker stays, and the pool and
        # the other workers' runs go on (the pool kills them all when one worker exits); the
        # sweep's closing line counts the run and exits 1. Otherwise the stop is the whole
        # sweep's: the run resumes when relaunched
        worker = is_launcher_worker()
        if worker and multirun and not wait_for_sibling_runs(hc.sweep.dir, err.signum):
            log.warning("run %s: %s; the sweep goes on (relaunch it to resume this run)",
                        run_dir, err)
            return None
        print(f"ganlab: {err}; relaunch the same command to resume", file=sys.stderr)
        if worker:  # a worker would stay on, idle: end it with the run, after its siblings
            exit_now(128 + err.signum)
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


def main() -> None:
    """`python -m ganlab.train`: a bad override or place, or a config that cannot run, ends
    in one line (exit 2) before Hydra starts; `--help` describes every group and key."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the run takes it over
    args = sys.argv[1:]
    if {"-h", "--help", "-sc", "--shell-completion"} & set(args):  # tab completion: Hydra's
        return print(command_help()) if {"-h", "--help"} & set(args) else _hydra_main()
    multirun = bool({"-m", "--multirun"} & set(args))
    if multirun:
        stop_the_sweep_with_its_workers()  # Ctrl-C, SIGTERM, and its death (ganlab.stops)
    try:
        for line in repeated_keys(args):
            print(f"ganlab: {line}", file=sys.stderr)
        check_overrides(args)
        key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
        check_writable(Path(next((a[len(key):] for a in args if a.startswith(key)), "outputs")))
        if not multirun and all(not a.startswith("-") for a in args):
            # refused here, before Hydra makes the run dir (a sweep's sweeper checks its cells)
            preflight(compose(args))
    except (ConfigError, StorageError) as err:
        prefix = "config error: " if isinstance(err, ConfigError) else ""
        print(f"ganlab: {prefix}{err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
    if not multirun:
        exit_now(0)


if __name__ == "__main__":
    # Run the importable module's main, not this `__main__` copy: launchers that pickle the
    # task (submitit, Ray) then pickle it by reference, and its classes stay the same.
    import importlib

    importlib.import_module("ganlab.train").main()
