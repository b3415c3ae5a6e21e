"""ganlab's Hydra sweeper (conf/hydra/sweeper/ganlab.yaml): the basic sweeper, whose job
batches fold runs that differ only by seed into one job when `fanout.vectorize_seeds` > 1
(ganlab.sweeper.group_seed_jobs), and which runs seeds in stages with `fanout.seeds=auto`
(ganlab.sweeper.StagedSeeds)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class SeedGroupingSweeper(BasicSweeper):
    _next_job_idx = 0

    def sweep(self, arguments: list[str]):
        if self.config.fanout.seeds != "auto":
            return super().sweep(arguments)
        from ganlab.sweeper import StagedSeeds

        return StagedSeeds(self).sweep(list(arguments), self._first_stage)

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

    def _problems(self, overrides: list[str]) -> list[str]:
        from ganlab.vectorize import unsupported

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return unsupported(cfg)
