"""Faults the way users cause them: a changed key on relaunch, damaged files, two launches at
once, impossible configs, SIGTERM and Ctrl-C, read-only and full disks, W&B without a
network, typos, and inputs the comparer must not trip on. A record that was good before a
fault stays good after it."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import ganlab.storage as storage
from ganlab.compare.__main__ import main as compare_main
from ganlab.compare.runs import group_runs, load_results
from ganlab.compare.tables import CompareError, build_tables
from ganlab.config import ConfigError, group_options
from ganlab.launch import _warn_about_work
from ganlab.storage import StorageError, atomic_write_json
from ganlab.train import run
from tests.helpers import REPO, assert_same_tensors, load_weights, run_here

FAST = ["logger=none", "train.progress=false", "train.device=cpu", "eval.num_samples=100"]


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """The bytes of everything a good record is made of."""
    files = [run_dir / "result.json", *(run_dir / ".hydra").glob("*"),
             *(run_dir / "checkpoints").glob("*")]
    return {p.name: p.read_bytes() for p in files}


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganlab.train", *args], cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _evaluated(run_dir: Path) -> bool:
    try:
        return bool(_result(run_dir)["history"])
    except (OSError, ValueError, KeyError):
        return False


# -- a relaunch never spoils the record -----------------------------------------------------

def test_a_relaunch_with_a_changed_key_is_refused_and_the_record_kept(tmp_path):
    args = ["train.steps=20", "eval.every=10", *FAST, f"hydra.run.dir={tmp_path}"]
    assert run_here(*args).returncode == 0
    before = _snapshot(tmp_path)
    out = run_here(*args, "train.lr_d=1e-3")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"ganlab: config error: {tmp_path} holds a run of another experiment (train.lr_d: "
        "0.0002 -> 0.001); it is left as it was. To train this config, launch it into a new "
        f"directory (hydra.run.dir=...), or `python -m ganlab.rerun {tmp_path} KEY=VALUE ...`"]
    assert _snapshot(tmp_path) == before  # result.json, .hydra/ and checkpoints untouched
    (attempt,) = tmp_path.glob("result.failed-*.json")
    record = json.loads(attempt.read_text())
    assert record["status"] == "failed" and "train.lr_d" in record["error"]
    assert record["hparams"]["train.lr_d"] == 0.001  # what was attempted


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    args = ["train.checkpoint_every=20", "eval.every=20", *FAST]
    run_dir, reference = tmp_path / "run", tmp_path / "reference"
    assert run_here("train.steps=40", *args, f"hydra.run.dir={run_dir}").returncode == 0
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.pt", "last.pt.sha256", "prev.pt",
                                                      "prev.pt.sha256"]
    data = (ckpts / "last.pt").read_bytes()
    (ckpts / "last.pt").write_bytes(data[: len(data) // 2])  # an interrupted copy
    (ckpts / "last.pt.tmp").write_bytes(b"half")  # and a writer that never finished
    longer = run_here("train.steps=60", *args, f"hydra.run.dir={run_dir}")
    assert longer.returncode == 0, longer.stderr
    log = longer.stdout + longer.stderr
    assert f"{ckpts / 'last.pt'} is damaged" in log
    assert f"resuming from {ckpts / 'prev.pt'} instead (step 20)" in log
    assert f"removed {ckpts / 'last.pt.tmp'}" in log
    assert not (ckpts / "last.pt.tmp").exists()
    assert _result(run_dir)["status"] == "completed" and _result(run_dir)["step"] == 60
    # resumed from step 20, the run equals one that never stopped
    assert run_here("train.steps=60", *args, f"hydra.run.dir={reference}").returncode == 0
    assert_same_tensors(load_weights(run_dir), load_weights(reference))


def test_when_no_checkpoint_is_good_the_run_stops_naming_them(tmp_path):
    args = ["train.checkpoint_every=10", "eval.every=10", *FAST, f"hydra.run.dir={tmp_path}"]
    assert run_here("train.steps=20", *args).returncode == 0
    for name in ("last.pt", "prev.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"not a checkpoint")
    before = _snapshot(tmp_path)
    out = run_here("train.steps=30", *args)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"ganlab: no usable checkpoint in {tmp_path / 'checkpoints'}")
    assert "last.pt is damaged" in line and "prev.pt is damaged" in line
    assert _snapshot(tmp_path) == before  # the completed record is still there


def test_an_unreadable_record_is_moved_aside_and_the_sweep_goes_on(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", "train.steps=10", "eval.every=0", *FAST,
            f"hydra.sweep.dir={sweep}"]
    assert run_here(*args).returncode == 0
    (damaged,) = sweep.glob("*/seed=1/result.json")
    damaged.write_text('{"status": "compl')  # a record cut off mid-write
    # the comparer lists it by path and goes on, or refuses with --strict
    assert compare_main([str(sweep), "--brief"]) == 0
    assert f"skipped {damaged} is unreadable" in capsys.readouterr().err
    assert compare_main([str(sweep), "--brief", "--strict"]) == 2
    assert "1 unreadable result.json (--strict)" in capsys.readouterr().err
    # a relaunch keeps the damaged file aside and rebuilds the record from the checkpoint
    again = run_here(*args)
    assert again.returncode == 0, again.stderr
    assert "2 completed, 0 diverged, 0 failed" in again.stdout + again.stderr
    (aside,) = damaged.parent.glob("result.damaged-*.json")
    assert aside.read_text() == '{"status": "compl'
    assert _result(damaged.parent)["status"] == "completed"


# -- one owner --------------------------------------------------------------------------------

def test_a_second_launch_into_a_busy_dir_stops_at_once_naming_the_holder(tmp_path):
    first = _popen("train.steps=100000", "eval.every=200", *FAST, f"hydra.run.dir={tmp_path}")
    try:
        _wait_for(lambda: _evaluated(tmp_path))
        started = time.monotonic()
        second = run_here("train.steps=100000", "eval.every=200", *FAST,
                         f"hydra.run.dir={tmp_path}")
        assert time.monotonic() - started < 30
        assert second.returncode == 2
        (line,) = second.stderr.splitlines()
        assert line.startswith(f"ganlab: {tmp_path} is in use by pid {first.pid} on ")
        assert "launch into another hydra.run.dir" in line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    # the log has one writer: one start line
    assert (tmp_path / "train.log").read_text().count("run dir ") == 1
    assert _result(tmp_path)["status"] == "interrupted"


# -- every way a run ends -------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_checkpoints_then_records_interrupted(tmp_path, sig, code):
    run_dir, reference = tmp_path / "run", tmp_path / "reference"
    args = ["eval.every=200", "norm=batch", *FAST]
    proc = _popen("train.steps=100000", *args, f"hydra.run.dir={run_dir}")
    _wait_for(lambda: _evaluated(run_dir))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    name = signal.Signals(sig).name
    assert f"ganlab: interrupted by {name}; relaunch the same command to resume" in err
    record = _result(run_dir)
    step = record["step"]
    assert record["status"] == "interrupted" and f"interrupted by {name} at step {step}" in (
        record["error"])
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["counters"]["step"] == step  # saved at the round it stopped after
    if sig == signal.SIGINT:
        return  # resuming is the same for both signals: checked once
    # relaunched (here with a nearer end), it resumes where it stopped, exactly
    resumed = run_here(f"train.steps={step + 30}", *args, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0 and f"at step {step}" in resumed.stdout + resumed.stderr
    assert run_here(f"train.steps={step + 30}", *args, f"hydra.run.dir={reference}"
                   ).returncode == 0
    assert_same_tensors(load_weights(run_dir), load_weights(reference))


def test_out_of_memory_is_recorded_with_what_to_lower(make_cfg, tmp_path, monkeypatch):
    from ganlab.gan import GAN

    def oom(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(GAN, "train_step", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run(make_cfg("train.steps=5"), tmp_path)
    record = _result(tmp_path)
    assert record["status"] == "failed"
    assert record["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert "lower train.batch_size or norm.ref_batch_size" in record["error"]


def test_impossible_reference_batches_are_refused_before_training(make_cfg, mnist_root,
                                                                  tmp_path, monkeypatch):
    # a machine with 1 GiB free, whatever this one has
    monkeypatch.setattr("ganlab.memory.available_bytes", lambda device: 2 ** 30)
    base = ["data=mnist", f"data.root={mnist_root}", "eval.features=none"]
    with pytest.raises(ConfigError, match=r"norm.ref_batch_size=100000 is not allowed with "
                                          r"norm.d=virtual: .* 60000 samples; it must be <= "
                                          "60000"):
        run(make_cfg(*base, "norm.d=virtual", "norm.ref_batch_size=100000"), tmp_path / "d")
    # G's reference batch is drawn z: any size fits the data, not this machine's memory
    with pytest.raises(ConfigError, match=r"needs about \d+\.\d GiB, more than the 1\.0 GiB "
                                          r"free on cpu; most of it .* is the round: lower "
                                          r"norm.ref_batch_size \(now 100000\)"):
        run(make_cfg(*base, "norm.g=virtual", "norm.ref_batch_size=100000"), tmp_path / "g")
    # refused before anything is written: no run dir, no record for the comparer to find
    assert not (tmp_path / "d").exists() and not (tmp_path / "g").exists()


def test_a_lopsided_round_is_announced_with_its_numbers(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="ganlab.train"):
        _warn_about_work(make_cfg("train.d_steps=1000000", "train.steps=1"))
    assert ("train.d_steps=1000000 and train.g_steps=1: each round runs 1000001 updates, "
            "1000001 in all for train.steps=1") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ganlab.train"):
        _warn_about_work(make_cfg("train.d_steps=5"))
    assert caplog.text == ""


# -- disks ----------------------------------------------------------------------------------

@contextmanager
def _tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (the patched-writer tests cover "
                    "the same paths)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_disk_gets_one_line(tmp_path):
    with _tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        out = run_here("train.steps=5", *FAST, f"hydra.run.dir={ro / 'run'}")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"ganlab: {ro / 'run'} cannot be written (Read-only file system): write elsewhere: "
        "hydra.run.dir=... for a run, --out for ganlab.rerun / ganlab.compare"]


def test_a_full_disk_gets_one_line_and_leaves_no_half_file(tmp_path):
    with _tmpfs(tmp_path / "full", "400k") as full:
        out = run_here("train.steps=30", "eval.every=10", "train.checkpoint_every=10", *FAST,
                      f"hydra.run.dir={full / 'run'}")
        assert out.returncode == 2
        assert out.stderr.splitlines() == [
            f"ganlab: no space left to write {full / 'run' / 'checkpoints' / 'last.pt'}: free "
            "some space, or write elsewhere: hydra.run.dir=... for a run, --out for "
            "ganlab.rerun / ganlab.compare"]
        assert list(full.rglob("*.tmp")) == []
        assert _result(full / "run")["status"] == "failed"  # the small record still fit


@pytest.mark.parametrize("code, fragment", [(errno.ENOSPC, "no space left to write"),
                                            (errno.EROFS, "cannot be written")])
def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch,
                                                                    code, fragment):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"status": "completed"})
    real = storage._write_file

    def failing(path, data):
        real(path, data[: len(data) // 2])  # part of it reached the disk
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(storage, "_write_file", failing)
    with pytest.raises(StorageError, match=f"{fragment}.*{target}|{target}.*{fragment}"):
        atomic_write_json(target, {"status": "failed", "error": "x" * 1000})
    assert json.loads(target.read_text()) == {"status": "completed"}
    assert list(tmp_path.iterdir()) == [target]


def test_a_full_disk_during_training_is_recorded(make_cfg, tmp_path, monkeypatch):
    import ganlab.checkpoint as checkpoint

    def full(path, data):
        raise StorageError(storage.explain(OSError(errno.ENOSPC, "No space"), path))

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    with pytest.raises(StorageError, match="no space left to write .*last.pt"):
        run(make_cfg("train.steps=10", "eval.every=5", "train.checkpoint_every=5"), tmp_path)
    record = _result(tmp_path)
    assert record["status"] == "failed" and "no space left" in record["error"]
    assert record["step"] == 5 and record["history"]  # what was scored is kept


# -- W&B without a network -------------------------------------------------------------------

def test_wandb_online_without_a_network_falls_back_offline_within_seconds(tmp_path):
    env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "ganlab.train", "train.steps=10", "eval.every=0",
         "eval.num_samples=100", "train.progress=false", "logger.mode=online",
         "logger.init_timeout=3", f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True,
        text=True, timeout=120,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "WANDB_MODE"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.monotonic() - started < 60  # not W&B's default 90 s wait
    log = out.stdout + out.stderr
    assert log.count("W&B online could not start within 3s") == 1
    assert f"wandb sync {tmp_path / 'wandb'}" in log
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    assert _result(tmp_path)["status"] == "completed"


# -- bad config input ------------------------------------------------------------------------

@pytest.mark.parametrize("override, line", [
    ("smoothing.real_taget=0.9", "smoothing.real_taget is not a config key (did you mean "
                                 "smoothing.real_target?)"),
    ("train.steps=abc", "train.steps='abc' is not allowed; train.steps takes an integer"),
    ("norm=virtul", "norm='virtul' is not allowed; choose one of: "
                    + ", ".join(sorted(group_options("norm"))) + " (did you mean virtual?)"),
])
def test_config_typos_end_in_one_line(tmp_path, override, line):
    out = run_here(override, "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    assert out.returncode == 2
    (printed,) = out.stderr.splitlines()
    assert printed.startswith(f"ganlab: config error: {line}")
    assert not (tmp_path / "r").exists()


# -- the comparer never trips on input -------------------------------------------------------

CLASS = {"labels": "none", "data.name": "ring8", "data.split": "train", "model.name": "mlp",
         "eval": {"metrics": "modes2d", "num_samples": 2500}}


def _write(root: Path, name: str, seed: int, status: str = "completed", metrics=None,
           history=None, d_steps: int = 1, eval_protocol="same") -> None:
    comparability = dict(CLASS, eval=CLASS["eval"] if eval_protocol == "same" else None)
    atomic_write_json(root / name / f"seed={seed}" / "result.json", {
        "status": status, "error": None, "seed": seed,
        "trick": {"train.d_steps": d_steps, "labels.name": "none"},
        "hparams": {"train.lr_d": 2e-4}, "comparability": comparability,
        "metrics": metrics or {}, "history": history or [], "step": 10, "study": {}})


def test_unknown_or_absent_metrics_are_named_with_the_ones_that_exist(tmp_path, capsys):
    for s in range(3):
        _write(tmp_path, "k1", s, metrics={"eval/modes_covered": 8, "eval/hq_pct": 90.0})
    assert compare_main([str(tmp_path), "--metric", "fidd", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "--metric eval/fidd: no run of class" in err
    assert "its metrics: eval/hq_pct, eval/modes_covered" in err
    assert compare_main([str(tmp_path), "--metric", "fid", "--no-wandb"]) == 2  # a 2-D class
    assert "--metric eval/fid: no run of class" in capsys.readouterr().err


def test_a_matched_budget_without_a_point_says_what_would_work(tmp_path):
    def hist(points):
        return [{"step": s, "g_updates": s, "images_seen": i, "wall_s": w,
                 "metrics": {"eval/modes_covered": 8}} for s, i, w in points]

    for s in range(3):  # k=5 sees 5x the images: its first point lies past k=1's last
        _write(tmp_path, "k1", s, metrics={"eval/modes_covered": 8}, d_steps=1,
               history=hist([(10, 640, 1.0), (20, 1280, 2.0)]))
        _write(tmp_path, "k5", s, metrics={"eval/modes_covered": 8}, d_steps=5,
               history=hist([(10, 3200, 3.0), (20, 6400, 6.0)]))
    with pytest.raises(CompareError, match=r"--match images_seen: at the largest budget every "
                                           r"run reached \(1280\), d_steps=5 has no evaluation "
                                           r"of eval/modes_covered \(its first is at 3200\). "
                                           "Try --match final or --match g_steps"):
        build_tables(load_results([tmp_path]), "modes_covered", match="images_seen")


def test_runs_that_failed_before_evaluating_count_in_their_own_class(tmp_path):
    for s in range(3):
        _write(tmp_path, "ok", s, metrics={"eval/modes_covered": 8})
    _write(tmp_path, "refused", 0, status="failed", d_steps=2, eval_protocol=None)
    (group,) = group_runs(load_results([tmp_path]))  # one class, not a look-alike second
    (t,) = build_tables(load_results([tmp_path]), "modes_covered",
                        baselines=[{"train.d_steps": "1"}])
    assert [(r.label, r.n, r.failed) for r in t.rows] == [("d_steps=1", 3, 0),
                                                          ("d_steps=2", 0, 1)]
    assert len(group.runs) == 4


def test_baselines_speak_the_train_commands_language(tmp_path):
    for s in range(3):
        for name, real in (("none", 1.0), ("one_sided", 0.9)):
            atomic_write_json(tmp_path / name / f"seed={s}" / "result.json", {
                "status": "completed", "error": None, "seed": s,
                "trick": {"smoothing.real_target": real, "smoothing.fake_target": 0.0},
                "hparams": {}, "comparability": CLASS, "metrics": {"eval/modes_covered": s},
                "history": [], "step": 10, "study": {}})
    results = load_results([tmp_path])
    (t,) = build_tables(results, "modes_covered", baselines=[{"smoothing": "one_sided"}])
    assert next(r for r in t.rows if r.is_baseline).settings["smoothing.real_target"] == 0.9
    # no baseline given and no preset: the axis's "off" setting, not the first label
    (t,) = build_tables(results, "modes_covered")
    assert next(r for r in t.rows if r.is_baseline).settings["smoothing.real_target"] == 1.0
    with pytest.raises(CompareError, match="no run records smoothing.real_targt "
                                           r"\(did you mean smoothing.real_target\?\)"):
        build_tables(results, "modes_covered", baselines=[{"smoothing.real_targt": "1"}])
    with pytest.raises(CompareError, match="not an option of smoothing; choose one of: "
                                           "beta_only, none, one_sided, two_sided"):
        build_tables(results, "modes_covered", baselines=[{"smoothing": "sideways"}])


# -- stopping, requeueing and relaunching: the rest of the ways a run ends ------------------

def test_a_second_stop_signal_stops_a_long_round_at_once(tmp_path):
    # one round of 10^7 D updates would take hours: the first SIGTERM says it waits for the
    # round, the second stops at once and keeps the last checkpoint (none here)
    proc = _popen("train.steps=10", "train.d_steps=10000000", "eval.every=0", *FAST,
                  f"hydra.run.dir={tmp_path}")
    _wait_for(lambda: (tmp_path / "result.json").exists())
    time.sleep(2)  # inside the round
    proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert proc.poll() is None  # still finishing the round
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert ("ganlab: SIGTERM: stopping after this round with a checkpoint; send it again to "
            "stop at once") in err
    record = _result(tmp_path)
    assert record["status"] == "interrupted" and record["step"] == 0
    # the record says what is on disk: no checkpoint had been written, and it says so
    assert record["error"].endswith("a second time: stopped at once); no checkpoint had been "
                                    "written yet: a relaunch starts from the first round")
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


REQUEUE_SCRIPT = """
import signal, sys
from pathlib import Path
from ganlab.configure import compose
from ganlab.train import run

def requeue(signum, frame):  # what a cluster launcher does on SIGUSR2: requeue, then exit
    Path(sys.argv[1], "requeued").write_text("step saved before requeue")
    sys.exit(0)

signal.signal(signal.SIGUSR2, requeue)
run(compose(sys.argv[2:]), sys.argv[1])
"""


def test_a_cluster_time_limit_signal_checkpoints_before_the_launcher_requeues(tmp_path):
    args = ["train.steps=100000", "eval.every=200", *FAST]
    proc = subprocess.Popen([sys.executable, "-c", REQUEUE_SCRIPT, str(tmp_path), *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _evaluated(tmp_path))
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]  # the launcher's handler ran and exited
    assert (tmp_path / "requeued").exists()
    record = _result(tmp_path)
    assert record["status"] == "interrupted" and "interrupted by SIGUSR2" in record["error"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["counters"]["step"] == record["step"] > 0


def test_a_run_that_failed_before_any_checkpoint_takes_a_corrected_relaunch(
        make_cfg, tmp_path, monkeypatch):
    from ganlab.gan import GAN

    def broken(self):
        raise RuntimeError("a bug in the first launch")

    with monkeypatch.context() as m:
        m.setattr(GAN, "train_step", broken)
        with pytest.raises(RuntimeError):
            run(make_cfg("train.steps=10", "eval.every=0", "train.lr_d=1e-3"), tmp_path)
    assert _result(tmp_path)["status"] == "failed"
    # nothing to lose: another config may take the dir, the old record is kept beside
    record = run(make_cfg("train.steps=10", "eval.every=0"), tmp_path)
    assert record["status"] == "completed"
    (replaced,) = tmp_path.glob("result.replaced-*.json")
    assert json.loads(replaced.read_text())["error"] == "RuntimeError: a bug in the first launch"
    assert not list(tmp_path.glob("result.failed-*.json"))


def test_a_completed_run_without_its_checkpoints_is_left_alone(make_cfg, tmp_path):
    cfg = make_cfg("train.steps=10", "eval.every=10")
    first = run(cfg, tmp_path)
    for path in (tmp_path / "checkpoints").iterdir():
        path.unlink()  # e.g. removed to save space
    before = _snapshot(tmp_path)
    again = run(cfg, tmp_path)
    assert again["status"] == "completed" and again["metrics"] == first["metrics"]
    assert _snapshot(tmp_path) == before
    # training it further needs the weights: a clear refusal, the record kept
    with pytest.raises(Exception, match="has no checkpoint to extend it to train.steps=20"):
        run(make_cfg("train.steps=20", "eval.every=10"), tmp_path)
    assert _snapshot(tmp_path) == before


def test_the_sweep_summary_counts_launches_that_were_refused(tmp_path, caplog):
    from omegaconf import OmegaConf

    from ganlab.callbacks import SweepSummary

    _write(tmp_path, "cell", 0)
    summary = SweepSummary()
    summary.on_multirun_start(OmegaConf.create({}))
    atomic_write_json(tmp_path / "cell" / "seed=0" / "result.failed-20261127-000000-1.json",
                      {"status": "failed"})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with caplog.at_level(logging.INFO, logger="ganlab.sweep"), pytest.raises(SystemExit) as e:
        summary.on_multirun_end(config)
    assert e.value.code == 1
    assert (f"sweep {tmp_path}: 1 completed, 0 diverged, 0 failed, 1 launch refused (the "
            "record before it kept; see result.failed-*.json)") in caplog.text


def test_a_sweep_whose_run_was_stopped_on_its_own_exits_1_and_says_how_to_resume(
        tmp_path, caplog):
    from omegaconf import OmegaConf

    from ganlab.callbacks import SweepSummary

    _write(tmp_path, "old", 0, status="interrupted")  # an earlier launch's, not relaunched now
    old = tmp_path / "old" / "seed=0" / "result.json"
    os.utime(old, (1.0, 1.0))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    summary = SweepSummary()
    summary.on_multirun_start(OmegaConf.create({}))
    _write(tmp_path, "cell", 0)
    with caplog.at_level(logging.INFO, logger="ganlab.sweep"):
        summary.on_multirun_end(config)  # the old interrupted run alone: counted, no exit 1
    assert "1 completed, 0 diverged, 0 failed, 1 interrupted" in caplog.text

    summary.on_multirun_start(OmegaConf.create({}))
    _write(tmp_path, "cell", 1, status="interrupted")  # e.g. SIGTERM to its worker
    with caplog.at_level(logging.INFO, logger="ganlab.sweep"), pytest.raises(SystemExit) as e:
        summary.on_multirun_end(config)
    assert e.value.code == 1
    assert ("1 run(s) of this launch were stopped on their own before they finished (recorded "
            f"`interrupted`, e.g. {tmp_path / 'cell' / 'seed=1'}); relaunch the same command "
            "to resume them") in caplog.text


def test_rescoring_refuses_a_checkpoint_older_than_the_record(tmp_path):
    from ganlab.checkpoint import CheckpointError
    from ganlab.evaluate.__main__ import rescore

    args = ["train.steps=40", "train.checkpoint_every=20", "eval.every=20", *FAST]
    assert run_here(*args, f"hydra.run.dir={tmp_path}").returncode == 0
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    before = _result(tmp_path)
    with pytest.raises(CheckpointError, match="record is at step 40 but its newest good "
                                              "checkpoint is at step 20"):
        rescore(tmp_path, [])
    assert _result(tmp_path) == before


def test_progress_lines_for_runs_without_a_terminal(caplog):
    from ganlab.stops import ProgressLines

    lines = ProgressLines(total=200, start=0, enabled=True, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="ganlab.train"):
        time.sleep(0.01)
        lines.update(50)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("step 50/200 (25 %), ") and " rounds/s, about " in message
    caplog.clear()
    ProgressLines(total=200, start=0, enabled=False, every_s=0.0).update(50)
    assert not caplog.records


@pytest.mark.parametrize("args, line", [
    (["seed=-1"], "seed=-1 is not allowed; it must be >= 0"),
    (["logger.mode=ofline"], "logger.mode='ofline' is not allowed; choose one of: offline, "
                             "online, disabled (did you mean offline?)"),
    (["+train.stepz=3"], "train.stepz is not a config key (did you mean train.steps?)"),
    (["~train.steps"], "~train.steps would remove a key that every run needs; set it with "
                       "train.steps=VALUE instead"),
    (["train.steps=${foo}"], "train.steps=${foo}: ${foo} is not a config key"),
    (["ablation=minus_ls"], "ablation is not in the defaults list; add it with "
                            "+ablation=minus_ls"),
    (["seed=1", "hydra.run.dir=/runs/smoothing=none/seed=0"],
     "cannot read hydra.run.dir=/runs/smoothing=none/seed=0: "),
    (["hydra.run.dri=x"], "hydra.run.dri is not a Hydra setting (did you mean hydra.run.dir?)"),
    (["-m", "norm=glob(xx*)"], "norm=glob(xx*) picks no option; choose from: "
                               + ", ".join(group_options("norm"))),
])
def test_override_mistakes_are_caught_before_hydra_starts(args, line):
    from ganlab.configure import check_overrides

    with pytest.raises(ConfigError) as e:
        check_overrides(args)
    assert str(e.value).startswith(line)


@pytest.mark.parametrize("args", [
    ["-m", "norm=glob(virt*)"], ["+ablation=minus_ls"], ["train.steps=${train.log_every}"],
    ["experiment=salimans2016", "ablation@_global_=minus_ls"], ["hydra.launcher.n_jobs=2"],
    ["hydra.job.chdir=true"], ["seed=range(3)"]])
def test_well_formed_overrides_pass_the_early_check(args):
    from ganlab.configure import check_overrides

    check_overrides(args)


def test_a_run_that_failed_before_evaluating_is_counted_where_its_protocol_says():
    def record(seed, status, num_samples, protocol=True):
        proto = {"metrics": "modes2d", "features": None, "num_samples": num_samples}
        return {"status": status, "seed": seed, "trick": {"train.d_steps": 1},
                "hparams": {}, "metrics": {}, "history": [], "step": 0,
                "comparability": {**CLASS, "eval": proto if protocol else None},
                "eval_settings": {"num_samples": num_samples}}

    runs = [record(0, "completed", 2500), record(0, "completed", 10000),
            record(1, "failed", 10000, protocol=False)]
    classes = group_runs(runs)
    by_n = {c.comparability["eval"]["num_samples"]: c for c in classes}
    assert [r["status"] for r in by_n[10000].runs] == ["completed", "failed"]
    assert [r["status"] for r in by_n[2500].runs] == ["completed"]
    assert by_n[2500].label.endswith("eval=modes2d, n=2500")
    # two protocols that differ in a setting the short label leaves out read differently
    hq = [dict(record(0, "completed", 2500)), dict(record(0, "completed", 2500))]
    for r, std in zip(hq, (2.0, 3.0), strict=True):
        r["comparability"] = {**CLASS, "eval": {**r["comparability"]["eval"], "hq_std": std}}
    labels = sorted(c.label for c in group_runs(hq))
    assert labels[0].endswith("n=2500 (eval.hq_std=2.0)")
    assert labels[1].endswith("n=2500 (eval.hq_std=3.0)")


def test_runs_that_failed_before_evaluating_join_the_class_their_auto_settings_resolve_to():
    # a staged sweep's next seeds, failed at start (say, data missing): eval.features=auto
    # was never resolved in their records; the completed runs say what it resolved to
    def record(seed, status, features):
        proto = {"metrics": "fid", "features": "classifier", "num_samples": 10000}
        return {"status": status, "seed": seed, "trick": {"norm.g": "batch"},
                "hparams": {}, "metrics": {}, "history": [], "step": 0,
                "comparability": {**CLASS, "eval": proto if status == "completed" else None},
                "eval_settings": {"num_samples": 10000, "features": features}}

    runs = [record(0, "completed", "auto"), record(3, "failed", "auto"),
            record(4, "failed", "auto")]
    (only,) = group_runs(runs)
    assert [r["seed"] for r in only.runs] == [0, 3, 4]
    # a failed run whose settings fit no class gets its own, and the next one still homes
    runs += [record(5, "failed", "inception"), record(6, "failed", "inception")]
    classes = group_runs(runs)
    assert sorted(len(c.runs) for c in classes) == [2, 3]


@pytest.mark.heavy
def test_sigterm_to_a_joblib_sweep_stops_its_workers_with_checkpoints(tmp_path):
    proc = _popen("-m", "launcher=joblib", "fanout.n_jobs=2", "seed=0,1", "train.steps=100000",
                  "eval.every=200", *FAST, f"hydra.sweep.dir={tmp_path}")
    _wait_for(lambda: len([p for p in tmp_path.glob("*/seed=*") if _evaluated(p)]) == 2,
              timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "ganlab: SIGTERM: stopping 2 worker process(es) with a checkpoint each" in err
    records = [_result(p) for p in sorted(tmp_path.glob("*/seed=*"))]
    assert [r["status"] for r in records] == ["interrupted", "interrupted"]
    for r in records:  # no worker goes on training as an orphan
        assert not Path(f"/proc/{r['host']['pid']}").exists() or (
            Path(f"/proc/{r['host']['pid']}/stat").read_text().split(") ")[-1][0] in "ZX")


def test_free_memory_counts_a_container_or_job_limit(tmp_path):
    from ganlab.memory import available_bytes

    machine = available_bytes(torch.device("cpu"), cgroup=str(tmp_path / "none"))
    assert machine is not None and machine > 0
    (tmp_path / "memory.max").write_text("1000000000\n")
    (tmp_path / "memory.current").write_text("400000000\n")
    assert available_bytes(torch.device("cpu"), cgroup=str(tmp_path)) == min(
        machine, 600_000_000)
    (tmp_path / "memory.max").write_text("max\n")
    free = available_bytes(torch.device("cpu"), cgroup=str(tmp_path))
    assert abs(free - machine) < 2 ** 28  # the machine's figure (give or take its drift)


def test_a_run_is_not_shortened_by_a_smaller_budget(make_cfg, tmp_path):
    run(make_cfg("train.steps=20", "train.checkpoint_every=10", "eval.every=10"), tmp_path)
    # as if stopped at step 20 of a longer run
    record = _result(tmp_path)
    atomic_write_json(tmp_path / "result.json", {**record, "status": "interrupted"})
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match="has trained 20 rounds, more than train.steps=10; "
                                          "a run is not shortened"):
        run(make_cfg("train.steps=10", "train.checkpoint_every=10", "eval.every=10"), tmp_path)
    assert _snapshot(tmp_path) == before


def test_an_unquoted_path_with_equals_signs_is_named_with_how_to_quote_it():
    # relaunching one cell of a sweep into its folder: the folder's name holds '=' and ','
    from ganlab.configure import check_overrides

    path = "/runs/smoothing=none,train.steps=20/seed=0"
    with pytest.raises(ConfigError) as e:
        check_overrides(["seed=0", f"hydra.run.dir={path}"])
    assert str(e.value).startswith(f"cannot read hydra.run.dir={path}: ")
    assert str(e.value).endswith(f"is quoted: \"hydra.run.dir='{path}'\"")
    check_overrides(["seed=0", f"hydra.run.dir='{path}'"])  # quoted, it reads
