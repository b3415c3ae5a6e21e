"""How the sweeper of `python -m ganlab.train -m` groups jobs (the sweeper itself is
hydra_plugins/ganlab_sweeper, where Hydra looks for plugins): Hydra's basic sweeper, which, with
`fanout.vectorize_seeds=S` (S > 1), hands the launcher one job per S runs that differ only by
seed. That job (`fanout.group_seeds=[...]`) trains them as one stacked model
(ganlab.train.run_group); each seed still gets the run dir, record and W&B run it would get
alone. Configs vectorised seeds cannot train (ganlab.vectorize.unsupported) are named in one
line and launched one run per job, as without the option.

With `fanout.seeds=auto` the sweep runs in stages (`StagedSeeds`): seeds are added only
where the comparer's plan says a verdict is still open; each stage is recorded in the sweep
dir's `stages.json`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor
from pathlib import Path

from ganlab import stops
from ganlab.config import DEFAULT_SUBDIR, SEED_SUBDIR_END
from ganlab.result import TERMINAL

log = logging.getLogger("ganlab.sweep")


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


# -- a launch into a sweep dir that holds another study ------------------------------------------
def cell_keys(overrides: Sequence[str]) -> frozenset[str]:
    """The keys that name a job's cell (ganlab.config.sweep_cell's)."""
    from ganlab.config import CELL_EXCLUDED_ROLES, role_of

    return frozenset(_key(o) for o in overrides
                     if role_of(o.partition("=")[0]) not in CELL_EXCLUDED_ROLES)


def changed_axes(sweep_dir: Path, jobs: Sequence[Sequence[str]]) -> str | None:
    """What a warning says when a launch would add cells to `sweep_dir` that are named by
    other keys than every cell it holds (their records' overrides): a relaunch with a changed
    or extra key does not touch those runs, but its cells land beside them, and the comparer
    reads them all as variants of one study. None when each new cell's keys are those of a
    cell there (a relaunch of any earlier command of the dir), or the dir holds no runs."""
    from ganlab.result import RecordError, read_result

    held: set[frozenset[str]] = set()
    for cell in sorted(p for p in Path(sweep_dir).glob("*") if p.is_dir()):
        for run_dir in sorted(cell.glob("seed=*")):  # the first readable record of the cell
            try:
                record = read_result(run_dir)
            except RecordError:
                continue
            if record and record.get("overrides") is not None:
                held.add(cell_keys(record["overrides"]))
                break
    new = {cell_keys(job) for job in jobs}
    if not held or new <= held:
        return None
    had, asked = set().union(*held), set().union(*(new - held))
    added, missing = sorted(asked - had), sorted(had - asked)
    what = "; ".join(part for part in (
        f"it sets {', '.join(added)}, which they do not" if added else "",
        f"it leaves out {', '.join(missing)}, which they set" if missing else "") if part)
    return (f"{sweep_dir} holds runs whose cells are named by other keys than this launch's "
            f"({what or 'in another combination'}): its cells go beside them, nothing is "
            "overwritten, and the comparer will read them all as variants of one study; for "
            "another study, give it its own hydra.sweep.dir")


# -- seeds in stages (fanout.seeds=auto) ----------------------------------------------------------
STAGES_FILE = "stages.json"


def _without_seed(job: Sequence[str]) -> list[str]:
    return [o for o in job if _key(o) != "seed"]


def first_stage_params(params: dict, seeds_min: int) -> dict:
    """The sweeper's params with the seed list replaced by the first stage's seeds."""
    return {**{k: v for k, v in params.items() if _key(str(k)) != "seed"},
            "seed": ",".join(str(s) for s in range(seeds_min))}


def stage_jobs(found: dict, cells: dict[str, list[str]]) -> tuple[list[list[str]], list[str]]:
    """The jobs of a plan's next stage: each entry's seeds in its cell's overrides (from the
    first stage's jobs, else the overrides its records carry); and the entries it could not
    place."""
    jobs, lost = [], []
    for entry in found["add_seeds"]:
        base = cells.get(entry["cell"]) or entry["overrides"]
        if base is None:
            lost.append(f"{entry['variant']} ({entry['cell']})")
            continue
        jobs += [[*_without_seed(base), f"seed={s}"] for s in entry["seeds"]]
    return jobs, lost


def design_stage(found: dict) -> str:
    """The next stage as the design counts it (its looks), not as this launch does: after
    a relaunch the plan's "after stage 2 of 3" is followed by "stage 3 of 3", whatever
    this launch ran before."""
    looks = found["design"]["looks"]
    targets = sorted({v["next_look"] for v in found["variants"] if v.get("next_look")})
    if not targets or any(n not in looks for n in targets):
        return "next stage"
    stages = ", ".join(str(looks.index(n) + 1) for n in targets)
    seeds = ", ".join(map(str, targets))
    return (f"stage{'s' if len(targets) > 1 else ''} {stages} of {len(looks)} (to {seeds} "
            "paired seeds)")


def read_stages(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / STAGES_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else []
    except (OSError, json.JSONDecodeError):
        return []  # a damaged file: the records themselves hold every result


def record_stage(sweep_dir: Path, launch: int, stage: int, jobs: list[list[str]],
                 found: dict | None, started: float) -> None:
    """Append a stage to the sweep's `stages.json`: the launch of the sweep command it ran
    in (a relaunch after a kill is the next), its runs and the plan that followed."""
    from ganlab.storage import atomic_write_json

    stages = read_stages(sweep_dir)
    stages.append({
        "launch": launch, "stage": stage, "started": started, "ended": time.time(),
        "runs": [{"overrides": _without_seed(j), "seed": _seed(j)} for j in jobs],
        "decided": None if found is None else found["decided"],
        "verdicts": None if found is None else
        {f"[{v['class']}] {v['variant']}": v["verdict"] for v in found["variants"]
         if not v["baseline"]}})
    atomic_write_json(sweep_dir / STAGES_FILE, stages)


def _refuse_another_design(sweep_dir: Path, fan) -> None:
    """A sweep's design is fixed before its first look: relaunching it with other
    seeds_min/step/max would spend alpha over looks the earlier stages were not planned
    for. Refused before anything launches."""
    from ganlab.compare.runs import load_results
    from ganlab.compare.stats import Design
    from ganlab.compare.tables import CompareError, study_design
    from ganlab.config import ConfigError

    if not sweep_dir.is_dir():
        return
    try:
        recorded = study_design(load_results([sweep_dir]))
    except CompareError as e:
        raise ConfigError(f"hydra.sweep.dir={sweep_dir}: {e}") from None
    wanted = Design.sequential(fan.seeds_min, fan.seeds_step, fan.seeds_max)
    if recorded is not None and recorded != wanted:
        raise ConfigError(
            f"fanout.seeds_min/seeds_step/seeds_max: the runs in {sweep_dir} were planned "
            f"with analyses at {', '.join(map(str, recorded.looks))} paired seeds, not "
            f"{', '.join(map(str, wanted.looks))}; a sequential design cannot change after "
            "its first look. Relaunch with the recorded values, or start a new sweep dir")


class StagedSeeds:
    """`fanout.seeds=auto`: the first stage runs `seeds_min` seeds of every cell; after each
    stage the plan (ganlab.compare.plan, over the records of the sweep dir) names the seeds
    that take each open variant to its next look, and they run as the next stage, through
    the same launcher, until every verdict is decided or at `seeds_max`. A relaunch of the
    same command resumes: finished runs are skipped and the plan, read from the records,
    picks up where the killed stage stopped. `seed=` on the command line runs those seeds as
    one stage by hand (what `compare --plan` prints)."""

    def __init__(self, sweeper) -> None:
        self.sweeper = sweeper

    def sweep(self, arguments: list[str], run_batch: Callable) -> list:
        from ganlab.config import ConfigError, sweep_cell

        s, fan = self.sweeper, self.sweeper.config.fanout
        sweep_dir = Path(s.config.hydra.sweep.dir)
        try:  # refused before anything launches, in one line (not Hydra's traceback)
            if fan.seeds_max < fan.seeds_min:
                raise ConfigError(f"fanout.seeds_max={fan.seeds_max} is not allowed with "
                                  f"fanout.seeds_min={fan.seeds_min}; it must be >= "
                                  "fanout.seeds_min")
            _refuse_another_design(sweep_dir, fan)
        except ConfigError as err:
            print(f"ganlab: config error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if any(_key(a) == "seed" for a in arguments):  # one stage by hand
            return run_batch(arguments)
        s.params = first_stage_params(dict(s.params or {}), fan.seeds_min)
        log.info("fanout.seeds=auto: stage 1 runs seeds 0-%d of every cell; later stages add "
                 "%d seed(s) to each variant whose verdict is still open, up to %d",
                 fan.seeds_min - 1, fan.seeds_step, fan.seeds_max)
        launch = 1 + max((st.get("launch", 1) for st in read_stages(sweep_dir)), default=0)
        started = time.time()
        returns = run_batch(arguments)
        cells = {sweep_cell(job): _without_seed(job) for batch in s.overrides for job in batch}
        jobs = [job for batch in s.overrides for job in batch]
        stage, asked = 1, set()
        while True:
            found = self._plan(sweep_dir)
            record_stage(sweep_dir, launch, stage, jobs, found, started)
            if found is None:
                return returns
            for line in found["lines"]:
                log.info("%s", line)
            jobs, lost = stage_jobs(found, cells)
            if lost:
                log.warning("fanout.seeds=auto: no overrides known for %s; run their seeds "
                            "by hand (python -m ganlab.compare %s --plan)", ", ".join(lost),
                            sweep_dir)
            again = {tuple(j) for j in jobs} & asked
            if found["decided"] or not jobs or again:
                if again:
                    log.warning("fanout.seeds=auto: %d run(s) of the last stage did not "
                                "finish (interrupted, or failed before training: their "
                                "result.json says why); stopping here (relaunch to resume or "
                                "replace them)", len(again))
                return returns
            stage += 1
            asked |= {tuple(j) for j in jobs}
            log.info("%s: %d run(s)", design_stage(found), len(jobs))
            started = time.time()
            returns += s.launch_stage(jobs)

    @staticmethod
    def _plan(sweep_dir: Path) -> dict | None:
        from ganlab.compare.plan import plan
        from ganlab.compare.runs import load_results
        from ganlab.compare.tables import CompareError

        try:
            return plan(load_results([sweep_dir]))
        except CompareError as e:
            log.error("fanout.seeds=auto: no plan after this stage: %s", e)
            return None


# -- a worker killed without a word (kill -9, the out-of-memory killer) ---------------------------
# joblib's loky pool raises a subclass (TerminatedWorkerError) and kills the other workers
POOL_LOST = (BrokenExecutor,)
POOL_RESTARTS_MAX = 3  # lost pools in a row that no record explains, before giving up
HOLDER_WAIT_S = 30.0  # how long the pool's other workers may take to let go of their runs


def _seed_value(value: str) -> str:
    value = value.strip()
    return str(int(value)) if value.lstrip("-").isdigit() else value


def job_run_dirs(sweep_dir: Path, subdir: str, job: Sequence[str],
                 default_seed) -> list[Path] | None:
    """The run dirs of one job (a seed group's: one per seed) under conf/config.yaml's
    `hydra.sweep.subdir` (`subdir`, unresolved); None under any other subdir."""
    from ganlab.config import sweep_cell

    if subdir != DEFAULT_SUBDIR:
        return None
    given = {_key(o): o.partition("=")[2] for o in job if "=" in o}
    if given.get("fanout.group_seeds", "").strip("[] "):
        seeds = given["fanout.group_seeds"].strip("[] ").split(",")
    else:
        seeds = [given.get("seed", str(default_seed))]
    cell = Path(sweep_dir) / sweep_cell(list(job))
    return [cell / f"seed={_seed_value(seed)}" for seed in seeds]


def _stamp(run_dir: Path) -> tuple[int, int] | None:
    """Which version of the run's record is there: records are replaced whole (atomic
    rename), so a new write is a new inode; None when there is none."""
    try:
        st = (run_dir / "result.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _status(run_dir: Path) -> str | None:
    from ganlab.result import RecordError, read_result

    try:
        record = read_result(run_dir)
    except RecordError:
        return None
    return record["status"] if record else None


def mark_killed(run_dir: Path, stamp) -> bool:
    """A record its run's process could not finish (it says `running`) becomes
    `interrupted`, with how it ended; everything it holds (scores, history, launches) is
    kept. Done under the run dir's lock and only if the record is still the version `stamp`
    names: a launch that took the dir since is not written over. True if marked."""
    from ganlab.result import RecordError, read_result
    from ganlab.rundir import RunDirBusy, RunDirLock
    from ganlab.storage import atomic_write_json

    try:
        with RunDirLock(run_dir):
            record = read_result(run_dir)
            if record is None or record["status"] != "running" or _stamp(run_dir) != stamp:
                return False
            resume = ("a relaunch resumes it from its newest checkpoint"
                      if any((run_dir / "checkpoints").glob("*.pt"))
                      else "no checkpoint yet: a relaunch starts it again")
            atomic_write_json(run_dir / "result.json", {
                **record, "status": "interrupted",
                "error": f"its worker process died without a word at or after step "
                         f"{record['step']} (SIGKILL: kill -9 or the out-of-memory killer); "
                         f"{resume}"})
            return True
    except (RunDirBusy, RecordError):
        return False


class SurvivesLostWorkers:
    """The sweeper's launcher, wrapped so that a sweep goes on when one of its worker
    processes is killed without a word (kill -9, the out-of-memory killer). joblib's pool then
    breaks and kills its other workers too, so the records of both runs stay `running` and
    nothing tells the victim from the bystander. After a lost pool each job of the batch is
    looked up by its run dirs (`run_dirs`; None where they cannot be known) and by whether
    this attempt wrote their records (each record's version is noted before the launch):

    - a run this attempt left `running` is recorded `interrupted` and becomes a suspect: the
      suspects go on from their checkpoints one at a time, alone, after the other jobs; a
      suspect killed while alone was the victim and is left unfinished (stops.LOST_RUNS:
      the sweep exits 1), so a run that is killed every time (out of memory) does not loop
      and no bystander pays for it;
    - a run that ended on its own in this attempt (completed, diverged, failed, or
      `interrupted` by a signal sent to its worker) stays as it is;
    - a job that had not started, or whose run dirs are unknown, goes on with the other
      jobs; after POOL_RESTARTS_MAX lost pools in a row that no record explains, those jobs
      are given up (stops.LOST_RUNS) rather than launched forever."""

    def __init__(self, launcher, run_dirs: Callable[[Sequence[str]], list[Path] | None]):
        self.launcher, self.run_dirs = launcher, run_dirs

    def __getattr__(self, name: str):
        return getattr(self.launcher, name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        together, alone, returns, blank = list(job_overrides), [], [], 0
        while together or alone:
            batch = together or [alone.pop(0)]
            plans = [(job, self.run_dirs(job)) for job in batch]
            before = {d: _stamp(d) for _, found in plans for d in found or []}
            try:
                returns += list(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
                together = [] if together else together
                continue
            except POOL_LOST as err:
                reason = type(err).__name__
            killed, suspects, waiting = self._after_lost_pool(plans, before)
            if not together:  # killed while it ran alone: the victim, left unfinished
                victim = [d for _, found in plans for d in found or []
                          if _status(d) not in TERMINAL] or [" ".join(batch[0])]
                stops.LOST_RUNS.extend(map(str, victim))
                log.error("%s was killed again while it ran alone (%s: kill -9 or the "
                          "out-of-memory killer): left unfinished; relaunch the same command "
                          "to resume it from its checkpoint", ", ".join(map(str, victim)),
                          reason)
                continue
            blank = 0 if killed else blank + 1
            if blank > POOL_RESTARTS_MAX:  # lost again and again, and no record says why
                log.error("a worker process of the sweep was lost %d times in a row with no "
                          "run of it recorded as started; %d job(s) not launched again: "
                          "relaunch the same command to resume them", blank, len(waiting))
                stops.LOST_RUNS.extend(" ".join(job) for job in waiting)
                together = []
                continue
            together, alone = waiting, alone + suspects
            log.warning(
                "a worker process of the sweep died without a word (%s: kill -9 or the "
                "out-of-memory killer) and took the pool's other workers with it: %d run(s) "
                "stopped mid-way, recorded `interrupted`; they go on from their checkpoints "
                "one at a time, alone, after the %d other job(s)",
                reason, len(killed), len(waiting))
        return returns

    def _after_lost_pool(self, plans: list, before: dict) -> tuple[list, list, list]:
        """(run dirs this attempt left `running`, now `interrupted`; their jobs; the jobs
        that had not started or cannot be looked up)."""
        from ganlab.rundir import held_by_another

        killed, suspects, waiting = [], [], []
        deadline = time.monotonic() + HOLDER_WAIT_S  # the pool's other workers let go
        while time.monotonic() < deadline and any(held_by_another(d) for d in before):
            time.sleep(0.2)
        for job, found in plans:
            if found is None:  # run dirs unknown (a custom hydra.sweep.subdir)
                waiting.append(job)
                continue
            hit, pending = False, False
            for run_dir in found:
                stamp = _stamp(run_dir)
                holder = held_by_another(run_dir)
                if holder:  # another process runs it (another launch): its business
                    log.warning("%s is still held by %s after the lost pool: left to it",
                                run_dir, holder)
                elif stamp is not None and stamp != before[run_dir]:  # this attempt's
                    if _status(run_dir) == "running" and mark_killed(run_dir, stamp):
                        killed.append(run_dir)
                        hit = True
                else:  # not started in this attempt
                    pending = pending or _status(run_dir) not in TERMINAL
            if hit:
                suspects.append(job)
            elif pending:
                waiting.append(job)
        return killed, suspects, waiting
