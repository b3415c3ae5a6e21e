"""ganlab's Hydra sweeper (conf/hydra/sweeper/ganlab.yaml): the basic sweeper, whose job
batches fold runs that differ only by seed into one job when `fanout.vectorize_seeds` > 1
(ganlab.sweeper.group_seed_jobs)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class SeedGroupingSweeper(BasicSweeper):
    def get_job_batch(self) -> Sequence[Sequence[str]]:
        batch = super().get_job_batch()
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
