"""A worker killed without a word (kill -9, the out-of-memory killer) breaks joblib's pool,
which kills the other workers too. The sweeper's launcher then tells runs apart by their
records: the stopped ones are recorded `interrupted` and go on alone, one at a time; a run
killed even alone is left `interrupted`; runs that ended on their own and finished runs are
not launched again; jobs that had not started go on with the others. (The same with real
processes and SIGKILL: tests/test_nothing_left.py.)"""

from __future__ import annotations

import json
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from ganlab import stops, sweeper
from ganlab.sweeper import SurvivesLostWorkers


def _write(run_dir: Path, status: str, step: int = 50, checkpoint: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(
        {"status": status, "error": None, "seed": 0, "trick": {}, "comparability": {},
         "metrics": {"fid": 12.5}, "history": [{"step": step}], "step": step,
         "host": {"launches": [{"pid": 1}]}}))
    if checkpoint:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")


class FakeLauncher:
    """Plays each launch from a script: {job name: status it leaves}; a script entry with
    `lost=True` ends in a broken pool (after writing the records), like loky's."""

    def __init__(self, root: Path, script: list[dict]):
        self.root, self.script, self.calls = root, list(script), []

    def launch(self, batch, initial_job_idx):
        names = [job[0] for job in batch]
        self.calls.append(names)
        step = self.script.pop(0)
        for name, status in step["leaves"].items():
            assert name in names, (name, names)
            _write(self.root / name, status, checkpoint=step.get("checkpoint", True))
        if step.get("lost"):
            raise BrokenProcessPool("A worker process managed by the executor was "
                                    "unexpectedly terminated")
        return [f"return of {n}" for n in names]


@pytest.fixture(autouse=True)
def _no_lost_runs_left_over(monkeypatch):
    monkeypatch.setattr(stops, "LOST_RUNS", [])
    monkeypatch.setattr(sweeper, "HOLDER_WAIT_S", 0.5)


def _wrapped(tmp_path: Path, script: list[dict]) -> tuple[SurvivesLostWorkers, FakeLauncher]:
    fake = FakeLauncher(tmp_path, script)
    return SurvivesLostWorkers(fake, lambda job: [tmp_path / job[0]]), fake


def test_after_a_lost_pool_each_job_goes_where_its_record_says(tmp_path, caplog):
    # before this launch: d completed, e interrupted by an earlier Ctrl-C (resumable)
    _write(tmp_path / "d", "completed")
    _write(tmp_path / "e", "interrupted")
    wrapped, fake = _wrapped(tmp_path, [
        # a and b were killed mid-way; c stopped on purpose (SIGTERM to its worker)
        {"leaves": {"a": "running", "b": "running", "c": "interrupted"}, "lost": True},
        {"leaves": {"e": "completed", "f": "completed"}},  # the jobs that had not started
        {"leaves": {"a": "completed"}},  # the suspects, one at a time
        {"leaves": {"b": "completed"}},
    ])
    jobs = [[name] for name in "abcdef"]
    returns = wrapped.launch(jobs, initial_job_idx=0)
    assert fake.calls == [list("abcdef"), ["e", "f"], ["a"], ["b"]]
    assert returns == ["return of e", "return of f", "return of a", "return of b"]
    assert json.loads((tmp_path / "c" / "result.json").read_text())["status"] == "interrupted"
    assert stops.LOST_RUNS == []
    assert ("2 run(s) stopped mid-way, recorded `interrupted`; they go on from their "
            "checkpoints one at a time, alone, after the 2 other job(s)") in caplog.text


def test_a_killed_run_is_recorded_interrupted_with_everything_it_had(tmp_path, caplog):
    wrapped, fake = _wrapped(tmp_path, [
        {"leaves": {"a": "running"}, "lost": True},
        {"leaves": {}, "lost": True},  # a again, alone: the victim
    ])
    wrapped.launch([["a"]], initial_job_idx=0)
    record = json.loads((tmp_path / "a" / "result.json").read_text())
    assert record["status"] == "interrupted"
    assert record["metrics"] == {"fid": 12.5} and record["history"] == [{"step": 50}]
    assert record["error"] == (
        "its worker process died without a word at or after step 50 (SIGKILL: kill -9 or "
        "the out-of-memory killer); a relaunch resumes it from its newest checkpoint")
    assert fake.calls == [["a"], ["a"]]  # once more, alone; never a third time
    assert stops.LOST_RUNS == [str(tmp_path / "a")]
    assert f"{tmp_path / 'a'} was killed again while it ran alone" in caplog.text


def test_a_run_killed_before_its_first_checkpoint_says_it_starts_again(tmp_path):
    wrapped, fake = _wrapped(tmp_path, [
        {"leaves": {"a": "running"}, "checkpoint": False, "lost": True},
        {"leaves": {"a": "completed"}},
    ])
    seen, original = [], sweeper.mark_killed

    def mark_and_look(run_dir, stamp):  # the record between the kill and the relaunch
        marked = original(run_dir, stamp)
        seen.append(json.loads((run_dir / "result.json").read_text()))
        return marked

    sweeper.mark_killed = mark_and_look
    try:
        wrapped.launch([["a"]], initial_job_idx=0)
    finally:
        sweeper.mark_killed = original
    assert fake.calls == [["a"], ["a"]]
    assert seen[0]["status"] == "interrupted"
    assert seen[0]["error"].endswith("no checkpoint yet: a relaunch starts it again")
    assert json.loads((tmp_path / "a" / "result.json").read_text())["status"] == "completed"


def test_a_record_another_launch_holds_is_not_written_over(tmp_path):
    from ganlab.rundir import RunDirLock

    _write(tmp_path / "a", "running")
    with RunDirLock(tmp_path / "a"):  # taken by another launch since
        assert not sweeper.mark_killed(tmp_path / "a", sweeper._stamp(tmp_path / "a"))
    stamp = sweeper._stamp(tmp_path / "a")
    _write(tmp_path / "a", "running", step=80)  # rewritten since the stamp was taken
    assert not sweeper.mark_killed(tmp_path / "a", stamp)
    assert json.loads((tmp_path / "a" / "result.json").read_text())["status"] == "running"


def test_a_job_names_the_run_dirs_its_runs_write():
    from ganlab.sweeper import DEFAULT_SUBDIR, job_run_dirs

    sweep = Path("outputs/sweeps/s")
    job = ["experiment=labels", "labels=kplus1", "launcher=joblib", "seed=03"]
    assert job_run_dirs(sweep, DEFAULT_SUBDIR, job, 0) == [sweep / "labels=kplus1" / "seed=3"]
    grouped = ["labels=none", "seed=0", "fanout.group_seeds=[0,1,2]"]
    assert job_run_dirs(sweep, DEFAULT_SUBDIR, grouped, 0) == [
        sweep / "labels=none" / f"seed={s}" for s in (0, 1, 2)]
    # no seed on the command line: the config's; a bare `~key` is no value
    assert job_run_dirs(sweep, DEFAULT_SUBDIR, ["~extras.x", "labels=none"], 7) == [
        sweep / "labels=none,extras.x" / "seed=7"]  # as sweep_cell names it
    assert job_run_dirs(sweep, "${hydra.job.override_dirname}", job, 0) is None


def test_a_pool_lost_again_and_again_before_any_run_starts_gives_up(tmp_path, caplog):
    restarts = sweeper.POOL_RESTARTS_MAX
    wrapped, fake = _wrapped(tmp_path, [{"leaves": {}, "lost": True}] * (restarts + 1))
    assert wrapped.launch([["a"], ["b"]], initial_job_idx=0) == []
    assert len(fake.calls) == restarts + 1
    assert stops.LOST_RUNS == ["a", "b"]
    assert "2 job(s) not launched again: relaunch the same command" in caplog.text


def test_jobs_whose_run_dirs_are_unknown_go_on_with_the_others_then_count_as_lost(tmp_path):
    fake = FakeLauncher(tmp_path, [{"leaves": {}, "lost": True}, {"leaves": {"a": "completed"}}])
    wrapped = SurvivesLostWorkers(fake, lambda job: None)  # a custom hydra.sweep.subdir
    assert wrapped.launch([["a"]], initial_job_idx=0) == ["return of a"]
    assert fake.calls == [["a"], ["a"]] and stops.LOST_RUNS == []
    restarts = sweeper.POOL_RESTARTS_MAX
    fake = FakeLauncher(tmp_path, [{"leaves": {}, "lost": True}] * (restarts + 1))
    SurvivesLostWorkers(fake, lambda job: None).launch([["b", "x=1"]], initial_job_idx=0)
    assert stops.LOST_RUNS == ["b x=1"]  # the sweep exits 1


def test_other_failures_are_not_taken_for_a_lost_worker(tmp_path):
    class Failing:
        def launch(self, batch, initial_job_idx):
            raise ValueError("a launcher's own error")

    with pytest.raises(ValueError, match="own error"):
        SurvivesLostWorkers(Failing(), lambda job: None).launch([["a"]], initial_job_idx=0)
