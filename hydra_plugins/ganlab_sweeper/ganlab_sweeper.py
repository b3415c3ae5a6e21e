"""ganlab's Hydra sweeper (conf/hydra/sweeper/ganlab.yaml): the basic sweeper, whose job
batches fold runs that differ only by seed into one job when `fanout.vectorize_seeds` > 1
(ganlab.sweeper.group_seed_jobs), which runs seeds in stages with `fanout.seeds=auto`
(ganlab.sweeper.StagedSeeds), and whose sweep goes on when a worker process is killed
(ganlab.sweeper.SurvivesLostWorkers)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class SeedGroupingSweeper(BasicSweeper):
    _next_job_idx = 0

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        from ganlab.sweeper import SurvivesLostWorkers

        self.launcher = SurvivesLostWorkers(self.launcher, self._run_dirs)

    def sweep(self, arguments: list[str]):
        self._preflight(arguments)
        if self.config.fanout.seeds != "auto":
            return super().sweep(arguments)
        from ganlab.sweeper import StagedSeeds

        return StagedSeeds(self).sweep(list(arguments), self._first_stage)

    def _preflight(self, arguments: list[str]) -> None:
        """Every cell of the sweep is checked (ganlab.preflight) before the first job
        launches: a refusal is one line, exit 2, and nothing written."""
        import sys
        import time
        from pathlib import Path

        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        from ganlab.config import ConfigError
        from ganlab.cores import runs_at_once
        from ganlab.preflight import preflight
        from ganlab.sweeper import _without_seed, changed_axes, log

        params = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        (jobs,) = self.split_arguments(parser.parse_overrides(params), None)
        try:
            launcher = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
        except Exception:  # an interpolation only a job resolves
            launcher = None
        at_once = runs_at_once(launcher)
        stack = max(1, int(self.config.fanout.vectorize_seeds))
        # one check per cell: runs that differ only by seed need the same
        cells = {tuple(_without_seed(job)): job for job in jobs}
        started = time.perf_counter()
        for job in cells.values():
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
                preflight(cfg, at_once=min(at_once, len(jobs)), stack=stack)
            except ConfigError as err:  # the cell named by what the sweep varies
                varying = {o for other in cells.values() for o in other} - set.intersection(
                    *(set(other) for other in cells.values()))
                where = ",".join(o for o in job if o in varying)
                where = f"{where}: " if where else ""
                print(f"ganlab: config error: {where}{err}", file=sys.stderr)
                raise SystemExit(2) from None
        log.debug("checked the %d cells of the sweep in %.2f s", len(cells),
                  time.perf_counter() - started)
        changed = changed_axes(Path(str(self.config.hydra.sweep.dir)), jobs)
        if changed:
            log.warning("%s", changed)

    def _first_stage(self, arguments: list[str]) -> list:
        returns = super().sweep(arguments)
        self._next_job_idx = sum(len(results) for results in returns)
        return returns

    def launch_stage(self, jobs: list[list[str]]) -> list:
        """Launch a later stage's jobs (grouped for vectorised seeds, like any batch)."""
        returns = []
        for chunk in self.split_overrides_to_chunks(jobs, self.max_batch_size):
            batch = self._grouped(chunk)
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=self._next_job_idx)
            for r in results:
                _ = r.return_value  # a job that raised stops the sweep, as in the basic one
            self._next_job_idx += len(batch)
            returns.append(results)
        return returns

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        return self._grouped(super().get_job_batch())

    def _grouped(self, batch: Sequence[Sequence[str]]) -> Sequence[Sequence[str]]:
        size = int(self.config.fanout.vectorize_seeds)
        if size <= 1:
            return batch
        from omegaconf import OmegaConf

        from ganlab.sweeper import group_seed_jobs, log, subdir_problem

        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)["subdir"]
        problem = subdir_problem(str(subdir))
        if problem:
            log.warning("fanout.vectorize_seeds: every run goes in a job of its own; "
                        "vectorised seeds do not support %s", problem)
            return batch
        return group_seed_jobs(batch, size, self._problems)

    def _run_dirs(self, job: Sequence[str]) -> list | None:
        """The run dirs of one job (ganlab.sweeper.job_run_dirs)."""
        from omegaconf import OmegaConf

        from ganlab.sweeper import job_run_dirs

        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)["subdir"]
        return job_run_dirs(str(self.config.hydra.sweep.dir), str(subdir), job,
                            self.config.seed)

    def _problems(self, overrides: list[str]) -> list[str]:
        from ganlab.vectorize import unsupported

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return unsupported(cfg)
