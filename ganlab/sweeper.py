"""How the sweeper of `python -m ganlab.train -m` groups jobs (the sweeper itself is
hydra_plugins/ganlab_sweeper, where Hydra looks for plugins): Hydra's basic sweeper, which, with
`fanout.vectorize_seeds=S` (S > 1), hands the launcher one job per S runs that differ only by
seed. That job (`fanout.group_seeds=[...]`) trains them as one stacked model
(ganlab.train.run_group); each seed still gets the run dir, record and W&B run it would get
alone. Configs vectorised seeds cannot train (ganlab.vectorize.unsupported) are named in one
line and launched one run per job, as without the option.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

log = logging.getLogger("ganlab.sweep")


# a member's run dir is its leader's with its own seed (ganlab.train.member_runs)
SEED_SUBDIR_END = "seed=${seed}"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _seed(overrides: Sequence[str]) -> str | None:
    found = [o.split("=", 1)[1] for o in overrides if _key(o) == "seed"]
    return found[0] if len(found) == 1 else None


def subdir_problem(subdir: str) -> str | None:
    """Why runs of a sweep with this `hydra.sweep.subdir` (unresolved) cannot be grouped."""
    if not subdir.endswith(SEED_SUBDIR_END):
        return (f"hydra.sweep.subdir={subdir} (stacked seeds need run dirs that end in "
                f"{SEED_SUBDIR_END}, as the default does)")
    return None


def group_seed_jobs(batch: Sequence[Sequence[str]], size: int,
                    problems: Callable[[list[str]], list[str]]) -> list[list[str]]:
    """The batch's jobs with each run of up to `size` jobs that differ only by their `seed=`
    override folded into its first job plus `fanout.group_seeds=[...]`; a cell for which
    `problems(overrides)` names anything stays one job per seed."""
    cells: dict[tuple, list[list[str]]] = {}  # in the order of each cell's first job
    for job in batch:
        job = list(job)
        # a job without a seed is a cell of its own
        key = (id(job),) if _seed(job) is None else tuple(o for o in job if _key(o) != "seed")
        cells.setdefault(key, []).append(job)
    out: list[list[str]] = []
    for key, jobs in cells.items():
        found = problems(jobs[0]) if len(jobs) > 1 else []
        if found:
            log.warning("fanout.vectorize_seeds: %s runs one seed per job; vectorised seeds do "
                        "not support %s", ",".join(key) or "the base config", "; ".join(found))
        if len(jobs) == 1 or found:
            out += jobs
            continue
        first: dict[str, list[str]] = {}  # each seed's first job, in order
        repeated = [j for j in jobs if first.setdefault(_seed(j), j) is not j]
        distinct = list(first.values())
        for start in range(0, len(distinct), size):
            chunk = distinct[start:start + size]
            seeds = ",".join(_seed(j) for j in chunk)
            out.append(chunk[0] + ([f"fanout.group_seeds=[{seeds}]"] if len(chunk) > 1 else []))
        out += repeated  # a seed listed twice runs again on its own, as without the option
    return out
