"""Seeds in stages (`fanout.seeds=auto`): the sweep runs the first stage, asks the plan, adds
seeds only where a verdict is open, records each stage, resumes after a kill, and works
through another launcher with vectorised seed groups."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ganlab.compare.__main__ import main as compare_main
from ganlab.compare.plan import plan
from ganlab.compare.runs import load_results
from ganlab.sweeper import first_stage_params, stage_jobs
from tests.helpers import REPO, run_here

TINY = ["train.steps=4", "train.batch_size=16", "eval.every=0", "eval.num_samples=100",
        "logger=none", "train.progress=false"]
STAGED = ["-m", "smoothing=none,one_sided", "fanout.seeds=auto", "fanout.seeds_min=3",
          "fanout.seeds_step=1", "fanout.seeds_max=4", 'study.baselines=["smoothing=none"]']


def _seeds(sweep: Path) -> dict[str, list[int]]:
    """Each variant's seeds, by its smoothing option (the cell folders also name the rest of
    the overrides)."""
    out: dict[str, list[int]] = {}
    for path in sorted(sweep.rglob("result.json")):
        record = json.loads(path.read_text())
        cell = next(part for part in path.parent.parent.name.split(",")
                    if part.startswith("smoothing="))
        out.setdefault(cell, []).append(record["seed"])
    return {cell: sorted(seeds) for cell, seeds in out.items()}


def test_the_first_stage_replaces_the_seed_list():
    params = first_stage_params({"smoothing": "none,one_sided", "seed": "0,1,2,3,4"}, 3)
    assert params == {"smoothing": "none,one_sided", "seed": "0,1,2"}


def test_stage_jobs_are_the_cells_overrides_with_the_planned_seeds():
    found = {"add_seeds": [
        {"variant": "one_sided", "cell": "smoothing=one_sided", "seeds": [3, 4],
         "overrides": None},
        {"variant": "lost", "cell": "gone", "seeds": [3], "overrides": None},
        {"variant": "kept", "cell": "other", "seeds": [5], "overrides": ["norm=batch", "seed=1"]},
    ]}
    jobs, lost = stage_jobs(found, {"smoothing=one_sided": ["smoothing=one_sided", "x=1"]})
    assert jobs == [["smoothing=one_sided", "x=1", "seed=3"],
                    ["smoothing=one_sided", "x=1", "seed=4"], ["norm=batch", "seed=5"]]
    assert lost == ["lost (gone)"]


def test_the_log_counts_stages_as_the_design_does():
    from ganlab.sweeper import design_stage

    design = {"looks": [3, 5, 7]}
    found = {"design": design, "variants": [{"next_look": 7}, {"next_look": None}, {}]}
    assert design_stage(found) == "stage 3 of 3 (to 7 paired seeds)"
    found["variants"].append({"next_look": 5})  # a variant a failed seed held back
    assert design_stage(found) == "stages 2, 3 of 3 (to 5, 7 paired seeds)"
    assert design_stage({"design": design, "variants": []}) == "next stage"


def test_a_staged_sweep_adds_seeds_where_open_and_records_each_stage(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_here(*STAGED, *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "stage 1 runs seeds 0-2 of every cell" in log
    assert "stage 2 of 2 (to 4 paired seeds): 2 run(s)" in log
    # at 4 rounds nothing covers a mode: both are open after stage 1, so each gets seed 3,
    # and at the design's maximum the sweep stops
    assert _seeds(sweep) == {"smoothing=none": [0, 1, 2, 3], "smoothing=one_sided": [0, 1, 2, 3]}
    stages = json.loads((sweep / "stages.json").read_text())
    assert [s["stage"] for s in stages] == [1, 2] and len(stages[0]["runs"]) == 6
    assert [r["seed"] for r in stages[1]["runs"]] == ["3", "3"]
    assert stages[-1]["decided"] is True  # nothing more to run (open at the maximum)
    records = load_results([sweep])
    assert {json.dumps(r["study"]["design"]) for r in records} == {
        json.dumps({"min": 3, "step": 1, "max": 4})}
    assert all("seed=" not in " ".join(r["overrides"]) for r in records)
    found = plan(records)
    assert found["decided"] and found["design"]["source"] == "recorded"
    # relaunched with another design: refused in one line before anything launches
    changed = [a if a != "fanout.seeds_max=4" else "fanout.seeds_max=6" for a in STAGED]
    refused = run_here(*changed, *TINY, f"hydra.sweep.dir={sweep}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "planned with analyses at 3, 4 paired seeds, not 3, 4, 5, 6" in refused.stderr
    assert _seeds(sweep) == {"smoothing=none": [0, 1, 2, 3], "smoothing=one_sided": [0, 1, 2, 3]}
    # the report says at which stage each verdict stands
    assert compare_main([str(sweep), "--no-wandb"]) == 0
    doc = json.loads((sweep / "report.json").read_text())
    row = doc["classes"][0]["tables"][0]["rows"][1]
    assert doc["settings"]["design"] == [3, 4] and row["stage"] == 2 and row["look"] == 4


def test_a_stage_by_hand_runs_just_the_seeds_given(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_here(*STAGED, "seed=5", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _seeds(sweep) == {"smoothing=none": [5], "smoothing=one_sided": [5]}
    assert not (sweep / "stages.json").exists()


@pytest.mark.slow  # submitit polls its jobs: ~35 s; the staging is launcher-generic (joblib below)
def test_stages_go_through_submitit(tmp_path):
    # the SLURM launcher's code path (jobs pickled, submitted, collected), run locally
    sweep = tmp_path / "sweep"
    out = run_here(*STAGED, "launcher=submitit_local", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _seeds(sweep) == {"smoothing=none": [0, 1, 2, 3], "smoothing=one_sided": [0, 1, 2, 3]}
    assert len(json.loads((sweep / "stages.json").read_text())) == 2


@pytest.mark.heavy
def test_stages_go_through_joblib_with_vectorised_seed_groups(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_here(*STAGED, "launcher=joblib", "fanout.n_jobs=2", "fanout.vectorize_seeds=4",
                  *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _seeds(sweep) == {"smoothing=none": [0, 1, 2, 3], "smoothing=one_sided": [0, 1, 2, 3]}
    stacks = {r["seed"]: r["host"].get("seed_stack") for r in load_results([sweep])}
    assert stacks[0] == [0, 1, 2]  # stage 1: each cell's three seeds as one stacked model
    assert stacks[3] in (None, [3])  # stage 2: one seed per cell, alone


@pytest.mark.heavy
def test_a_killed_staged_sweep_resumes_where_it_stopped(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "ganlab.train", *STAGED, *TINY[:-2], "train.steps=30",
            "train.checkpoint_every=10", "logger=none", "train.progress=false",
            f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (sweep / "stages.json").exists() and time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before its first stage was recorded"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # between stage 1 and the end of stage 2
    proc.wait()
    again = run_here(*STAGED, *TINY[:-2], "train.steps=30", "train.checkpoint_every=10",
                    "logger=none", "train.progress=false", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _seeds(sweep) == {"smoothing=none": [0, 1, 2, 3], "smoothing=one_sided": [0, 1, 2, 3]}
    assert {r["status"] for r in load_results([sweep])} == {"completed"}
    stages = json.loads((sweep / "stages.json").read_text())
    assert stages[-1]["decided"] is True and stages[-1]["launch"] == 2  # the relaunch's



def _archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_study_goes_on_from_its_records_alone(tmp_path):
    """`python -m ganlab.records` (results and configs; no checkpoints, samples, logs or the
    machine's paths): a sweep restored from it compares as before, its runs are complete,
    and the next stage adds only the new seeds."""
    sweep = tmp_path / "made" / "study"
    first = run_here(*STAGED, "seed=0,1,2", *TINY, f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert any(sweep.rglob("checkpoints/*")) and any(sweep.rglob("samples/*"))
    (sweep / "stages.json").write_text("[]")  # what a staged launch leaves (not seed=0,1,2)
    archive = tmp_path / "records.tar.gz"
    packed = run_here(str(sweep), str(archive), module="ganlab.records")
    assert packed.returncode == 0, packed.stderr
    assert "6 runs' records" in packed.stdout and "note:" not in packed.stdout
    files = _archive(archive)
    runs = {n.split("/seed=")[0] + "/seed=" + n.split("/seed=")[1].split("/")[0]
            for n in files if "/seed=" in n}
    assert len(runs) == 6
    for run in runs:  # every run with its record and both config files, nothing else
        assert sorted(n[len(run) + 1:] for n in files if n.startswith(run + "/")) == [
            ".hydra/config.yaml", ".hydra/overrides.yaml", "result.json"]
        assert files[f"{run}/result.json"] == (sweep.parent / run / "result.json").read_bytes()
    assert set(files) - {n for n in files if "/seed=" in n} == {
        "study/multirun.yaml", "study/stages.json"}
    multirun = OmegaConf.create(files["study/multirun.yaml"].decode())
    assert multirun.hydra.sweep.dir == "study" and "runtime" not in multirun.hydra
    assert not any(str(tmp_path).encode() in data for data in files.values())
    restored_root = tmp_path / "restored"
    restored_root.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(restored_root), "--keep-old-files"],
                   check=True)
    restored = restored_root / "study"
    assert len(list(restored.rglob("result.json"))) == 6
    # restoring over records already there stops instead of overwriting them
    again = subprocess.run(["tar", "-xzf", str(archive), "-C", str(restored_root),
                            "--keep-old-files"], capture_output=True)
    assert again.returncode != 0

    assert compare_main([str(sweep), "--no-wandb"]) == 0
    assert compare_main([str(restored), "--no-wandb"]) == 0
    made, back = (json.loads((d / "report.json").read_text())["classes"]
                  for d in (sweep, restored))
    assert [[(r["variant"], r["values"]) for r in t["rows"]] for t in made[0]["tables"]] == \
           [[(r["variant"], r["values"]) for r in t["rows"]] for t in back[0]["tables"]]

    before = {p: p.read_bytes() for p in restored.rglob("result.json")}
    on = run_here(*STAGED, *TINY, f"hydra.sweep.dir={restored}")
    assert on.returncode == 0, on.stderr[-3000:]
    # at 4 rounds both variants are open after 3 seeds: seed 3 of each is trained; the
    # restored runs are complete and left exactly as they were
    assert _seeds(restored) == {"smoothing=none": [0, 1, 2, 3],
                                "smoothing=one_sided": [0, 1, 2, 3]}
    assert all(p.read_bytes() == data for p, data in before.items())
    assert len(list(restored.rglob("checkpoints"))) == 2


def test_records_refuse_what_they_cannot_keep_and_keep_the_archive_they_had(tmp_path,
                                                                           monkeypatch):
    sweep = tmp_path / "study"
    out = run_here("-m", "smoothing=none", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    archive = tmp_path / "records.tar.gz"
    made = run_here(str(sweep), str(archive), module="ganlab.records")
    assert made.returncode == 0, made.stderr[-3000:]
    assert f"--keep-old-files` (makes <dir>/{sweep.name})" in made.stdout, made.stdout
    good = archive.read_bytes()

    def refused(target: Path, needle: str, out: Path = archive) -> None:
        got = run_here(str(target), str(out), module="ganlab.records")
        assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
        assert needle in got.stderr and len(got.stderr.strip().splitlines()) == 1, got.stderr
        assert archive.read_bytes() == good

    damaged = sorted(sweep.rglob("result.json"))[1]
    one_record = damaged.read_text()
    damaged.write_text('{"status": "comple')
    refused(sweep, f"{damaged} is unreadable")
    refused(tmp_path / "typo", "no such directory")
    refused(damaged, "is a file, not a sweep dir")
    refused(sweep, "is a directory: name the archive", out=tmp_path)
    damaged.write_text(one_record)
    (sweep / "multirun.yaml").write_text("hydra: {unclosed")
    refused(sweep, f"{sweep / 'multirun.yaml'} is not a readable multirun.yaml")
    (sweep / "multirun.yaml").write_bytes(b"hydra:\n  sweep: \xff\xfe\n")  # not text
    refused(sweep, f"{sweep / 'multirun.yaml'} is not a readable multirun.yaml")
    (sweep / "multirun.yaml").unlink()
    (sweep / "multirun.yaml").mkdir()  # a folder where the file should be
    refused(sweep, f"{sweep / 'multirun.yaml'} is unreadable")
    (sweep / "multirun.yaml").rmdir()

    def full(path, data):  # the disk fills while the archive is written
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr("ganlab.storage._write_file", full)
        refused(sweep, f"could not write {archive} (No space left on device); an archive "
                       f"already there is left as it was")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.tar.gz", "study"]

    one = run_here(str(damaged.parent.parent / "seed=0"), str(tmp_path / "one.tgz"),
                   module="ganlab.records")
    assert one.returncode == 0 and "1 run's records" in one.stdout
    assert sorted(_archive(tmp_path / "one.tgz")) == [
        "seed=0/.hydra/config.yaml", "seed=0/.hydra/overrides.yaml", "seed=0/result.json"]
    # a run in progress (its checkpoint would not travel) is left out, by name; a failed one
    # is kept (the comparer counts it) and named, as is a path of this machine it names
    record = json.loads(one_record)
    damaged.write_text(json.dumps({**record, "status": "running"}))
    partial = run_here(str(sweep), str(tmp_path / "partial.tgz"), module="ganlab.records")
    assert partial.returncode == 0 and "1 run's records" in partial.stdout
    assert f"left out, not finished (a relaunch trains it again): {damaged.parent}" in \
        partial.stdout
    for other in sorted(sweep.rglob("result.json"))[:1]:
        other.write_text(json.dumps({**json.loads(other.read_text()), "status": "running"}))
    refused(sweep, "no run has finished yet (2 running or interrupted)")
    error = f"no space left to write {damaged.parent}/checkpoints/last.pt"
    damaged.write_text(json.dumps({**record, "status": "failed", "error": error}))
    kept = run_here(str(sweep), str(tmp_path / "failed.tgz"), module="ganlab.records")
    assert kept.returncode == 0 and "1 run's records" in kept.stdout
    assert "kept, failed (the comparer counts it; " in kept.stdout
    name = f"study/{damaged.parent.relative_to(sweep).as_posix()}/result.json"
    assert f"note: {name} names {tmp_path}" in kept.stdout


def test_records_keep_each_nested_sweep_with_its_own_path(tmp_path):
    top = tmp_path / "top"
    for part in ("a", "b"):
        out = run_here("-m", "smoothing=none", "seed=0", *TINY,
                       f"hydra.sweep.dir={top / part}")
        assert out.returncode == 0, out.stderr[-3000:]
        (top / part / "stages.json").write_text(f'["{part}"]')
    packed = run_here(str(top), str(tmp_path / "r.tgz"), module="ganlab.records")
    assert packed.returncode == 0 and "2 runs' records" in packed.stdout, packed.stderr
    files = _archive(tmp_path / "r.tgz")
    for part in ("a", "b"):
        assert files[f"top/{part}/stages.json"] == f'["{part}"]'.encode()
        conf = OmegaConf.create(files[f"top/{part}/multirun.yaml"].decode())
        assert conf.hydra.sweep.dir == f"top/{part}"
