"""Vectorised seeds: the runs of `fanout.group_seeds`, which differ only by seed, trained as
one stacked model (ganlab.vectorize.SeedStack); each keeps its own run dir, record,
checkpoints, samples and W&B run, exactly as if launched alone (ganlab.launch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from ganlab.config import (
    ConfigError,
)
from ganlab.launch import Launch, _describe_failure, speaking_for
from ganlab.loop import Diverged, Trainer
from ganlab.preflight import preflight
from ganlab.stops import (
    Interrupted,
    StopSignals,
)
from ganlab.tracking import RunIdentity

log = logging.getLogger("ganlab.train")


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


def run_group(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None,
              identity: Callable[[int], RunIdentity] | None = None) -> list[dict]:
    """Train the runs of `fanout.group_seeds`, which differ only by seed, as one stacked
    model (ganlab.vectorize); each keeps its own run dir, record, checkpoints, samples and
    W&B run, exactly as if launched alone. Runs at different steps (a group stopped while
    saving) train in sub-groups of equal step; a run whose launch is refused or fails is
    recorded as alone and the others go on. `identity(seed)`: how each run appears in W&B
    (default: ganlab.launch.run_identity). Returns the records."""
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
                    launches[i] = stack.enter_context(Launch(
                        member_cfg, member_dir, member_overrides,
                        identity(member_cfg.seed) if identity else None))
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
