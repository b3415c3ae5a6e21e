"""Nothing left behind, nothing mis-recorded: a sweep's workers end with it however it is
stopped (Ctrl-C to the terminal's process group or to the sweep alone, SIGKILL), configs
that cannot run are refused before anything is written, evaluations are drawn in bounded
chunks and stop when asked, a damaged checkpoint has a way back, a stacked seed reruns bit
for bit, and a record keeps every launch that trained it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ganlab.evaluate as evaluate_pkg
from ganlab.callbacks import summary_line, sweep_status_counts
from ganlab.config import ConfigError
from ganlab.evaluate.__main__ import main as evaluate_main
from ganlab.evaluate.score import EvaluationStopped, score
from ganlab.memory import check_fits, needs
from ganlab.rerun import main as rerun_main
from ganlab.rundir import RunDirLock, held_by_another
from ganlab.stops import Interrupted, StopSignals
from ganlab.train import Trainer, _describe_failure, run
from ganlab.train import main as train_main
from tests.helpers import REPO, assert_same_tensors, load_weights, run_cli, run_here
from tests.test_faults import FAST, _evaluated, _result, _wait_for

SWEEP = ["-m", "launcher=joblib", "fanout.n_jobs=2", "seed=0,1", "train.steps=100000",
         "eval.every=200", "train.checkpoint_every=200", *FAST]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] not in "ZX"
    except OSError:
        return False


def _start_sweep(tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.train", *SWEEP,
                             f"hydra.sweep.dir={tmp_path}"], cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "offline"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's
    _wait_for(lambda: len([p for p in tmp_path.glob("*/seed=*") if _evaluated(p)]) == 2,
              timeout=120)
    return proc


def _records(tmp_path: Path) -> list[dict]:
    return [_result(p) for p in sorted(tmp_path.glob("*/seed=*"))]


# -- no worker outlives its sweep; Ctrl-C however delivered ---------------------------------

@pytest.mark.heavy
@pytest.mark.parametrize("how", ["terminal", "sweep alone"])
def test_ctrl_c_leaves_every_run_interrupted_with_one_closing_line(tmp_path, how):
    proc = _start_sweep(tmp_path)
    if how == "terminal":  # a terminal sends SIGINT to the whole process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=150)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    # the last line is the sweep's own: no traceback, no library warning after it
    assert lines[-1] == "ganlab: sweep stopped; relaunch the same command to resume it"
    assert "Traceback" not in err and "leaked" not in err
    records = _records(tmp_path)
    assert [r["status"] for r in records] == ["interrupted", "interrupted"]
    for r in records:
        assert "checkpoint saved" in r["error"]
        assert not _alive(r["host"]["pid"])


@pytest.mark.heavy
def test_ctrl_c_waits_for_a_sibling_still_in_its_evaluation(tmp_path):
    # two runs out of step (batch 64 and 2048) with long evaluations: the first worker to
    # finish its stop must not end before the other has written its checkpoint (joblib's
    # pool kills every worker the moment one ends)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganlab.train", "-m", "launcher=joblib", "fanout.n_jobs=2",
         "seed=0", "train.batch_size=64,2048", "eval.every=150", "eval.num_samples=400000",
         "train.steps=100000", "train.checkpoint_every=150", *FAST[:3],
         f"hydra.sweep.dir={tmp_path}"], cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(lambda: len([p for p in tmp_path.glob("*/seed=*") if _evaluated(p)]) == 2,
              timeout=120)
    time.sleep(6)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=150)
    assert proc.returncode == 130, err[-2000:]
    records = _records(tmp_path)
    assert [r["status"] for r in records] == ["interrupted", "interrupted"], records
    assert all("checkpoint saved" in r["error"] for r in records)
    assert not (tmp_path / ".stopping").exists()


SIBLING = """
import sys, time
from ganlab.rundir import RunDirLock
with RunDirLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""
WAITER = """
import signal, sys, time
from ganlab.stops import wait_for_sibling_runs
started = time.monotonic()
whole = wait_for_sibling_runs(sys.argv[1], signal.SIGTERM)
print(time.monotonic() - started, whole)
"""


@pytest.mark.parametrize("whole_sweep", [True, False])
def test_a_stopped_worker_waits_for_its_siblings_only_when_the_whole_sweep_stops(
        tmp_path, whole_sweep):
    # two worker processes of one sweep (children of this process): one still holds its
    # run for 3 s, the other has let go of its own and is about to end
    if whole_sweep:  # what the sweep's process writes before it signals its workers
        (tmp_path / ".stopping").write_text(str(os.getpid()))
    sibling = subprocess.Popen([sys.executable, "-c", SIBLING, str(tmp_path / "cell" / "seed=1"),
                                "3"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert sibling.stdout.readline().strip() == "held"
    waited, whole = subprocess.run([sys.executable, "-c", WAITER, str(tmp_path)], cwd=REPO,
                                   capture_output=True, text=True, check=True).stdout.split()
    sibling.wait(timeout=30)
    if whole_sweep:
        assert float(waited) > 1.5  # it ended only once the sibling had let go of its run
        assert whole == "True"  # and then the worker ends with the sweep
    else:  # a stop sent to this worker alone: at once, and the worker stays for the next job
        assert float(waited) < 1.0
        assert whole == "False"


@pytest.mark.heavy
def test_workers_of_a_killed_sweep_stop_with_a_checkpoint_and_a_relaunch_finds_them(tmp_path):
    proc = _start_sweep(tmp_path)
    proc.kill()  # SIGKILL: the sweep says nothing to its workers
    proc.communicate(timeout=30)
    pids = [r["host"]["pid"] for r in _records(tmp_path)]
    _wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=60)
    records = _records(tmp_path)
    assert [r["status"] for r in records] == ["interrupted", "interrupted"]
    assert all(list((p / "checkpoints").glob("*.pt")) for p in tmp_path.glob("*/seed=*"))
    assert not any(held_by_another(p) for p in tmp_path.glob("*/seed=*"))


# -- a worker killed without a word: the sweep goes on --------------------------------------

LOSES_A_WORKER = ["-m", "launcher=joblib", "fanout.n_jobs=2", "seed=0,1,2", "train.steps=1500",
                  "eval.every=250", "train.checkpoint_every=250", *FAST]
LOSES_A_WORKER_CELL = "eval.num_samples=100,train.steps=1500"


def _losing_sweep(tmp_path: Path) -> subprocess.Popen:
    """The sweep of LOSES_A_WORKER into `tmp_path` (the same command resumes it)."""
    return subprocess.Popen([sys.executable, "-m", "ganlab.train", *LOSES_A_WORKER,
                             f"hydra.sweep.dir={tmp_path}"], cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "offline"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_worker_of(run_dir: Path, not_pid: int | None = None) -> int:
    """SIGKILL to the worker process running `run_dir` (another than `not_pid`), once it has
    written a checkpoint: what the out-of-memory killer does."""
    def running_in_a_new_worker() -> bool:
        try:
            record = _result(run_dir)
        except (OSError, ValueError):
            return False
        # the record may say step 250 a moment before the checkpoint of step 250 is written
        return (record["status"] == "running" and record["host"]["pid"] != not_pid
                and record["step"] >= 250 and held_by_another(run_dir) is not None
                and any((run_dir / "checkpoints").glob("*.pt")))

    _wait_for(running_in_a_new_worker, timeout=180)
    pid = _result(run_dir)["host"]["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.heavy
def test_a_sweep_goes_on_when_a_worker_is_killed_and_resumes_its_runs(tmp_path):
    proc = _losing_sweep(tmp_path)
    killed = _kill_worker_of(tmp_path / LOSES_A_WORKER_CELL / "seed=0")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out + err)[-3000:]
    assert "Traceback" not in out + err
    # one line says what happened: the run killed and the sibling the pool took with it
    assert ("a worker process of the sweep died without a word (TerminatedWorkerError: "
            "kill -9 or the out-of-memory killer) and took the pool's other workers with it: "
            "2 run(s) stopped mid-way, recorded `interrupted`") in out + err
    records = {p.name: _result(p) for p in sorted((tmp_path / LOSES_A_WORKER_CELL).glob("seed=*"))}
    assert {k: r["status"] for k, r in records.items()} == {
        "seed=0": "completed", "seed=1": "completed", "seed=2": "completed"}
    first = records["seed=0"]["host"]["launches"]
    # the killed run went on from its checkpoint in a new worker, not from scratch
    assert [launch["pid"] for launch in first][0] == killed and len(first) == 2
    assert first[1]["pid"] != killed and records["seed=0"]["step"] == 1500
    # the bystander went on too; the two went on alone, one after the other, after seed 2
    second = records["seed=1"]["host"]["launches"]
    assert len(second) == 2 and records["seed=1"]["step"] == 1500
    (third,) = records["seed=2"]["host"]["launches"]
    assert first[1]["started"] >= third["ended"] and second[1]["started"] >= first[1]["ended"]
    assert not any(_alive(r["host"]["pid"]) for r in records.values())


@pytest.mark.heavy
def test_sigterm_to_one_worker_stops_its_run_alone_and_the_pool_goes_on(tmp_path):
    proc = _losing_sweep(tmp_path)
    cell = tmp_path / LOSES_A_WORKER_CELL
    _wait_for(lambda: all(_evaluated(cell / f"seed={s}") for s in (0, 1)), timeout=180)
    worker = _result(cell / "seed=0")["host"]["pid"]
    os.kill(worker, signal.SIGTERM)  # e.g. a user stopping one run that goes nowhere
    out, err = proc.communicate(timeout=600)
    err += out
    assert proc.returncode == 1, err[-3000:]  # the study is not whole: the sweep says so
    assert "Traceback" not in err and "died without a word" not in err
    assert "interrupted by SIGTERM" in err and "the sweep goes on" in err
    assert (f"1 run(s) of this launch were stopped on their own before they finished "
            f"(recorded `interrupted`, e.g. {cell / 'seed=0'})") in err
    records = {s: _result(cell / f"seed={s}") for s in (0, 1, 2)}
    assert records[0]["status"] == "interrupted" and 0 < records[0]["step"] < 1500
    # the pool did not break: the sibling ran on in its one launch, and the stopped run's
    # worker took the next job
    assert [records[s]["status"] for s in (1, 2)] == ["completed", "completed"]
    assert [len(records[s]["host"]["launches"]) for s in (1, 2)] == [1, 1]
    assert records[2]["host"]["pid"] == worker
    again = _losing_sweep(tmp_path)
    tail = "".join(again.communicate(timeout=600))[-3000:]
    assert again.returncode == 0, tail
    resumed = _result(cell / "seed=0")
    assert resumed["status"] == "completed" and len(resumed["host"]["launches"]) == 2
    assert resumed["host"]["launches"][1]["from_step"] > 0


@pytest.mark.heavy
def test_a_run_killed_again_after_its_relaunch_is_left_interrupted_and_the_sweep_exits_1(
        tmp_path):
    proc = _losing_sweep(tmp_path)
    run_dir = tmp_path / LOSES_A_WORKER_CELL / "seed=0"
    first = _kill_worker_of(run_dir)
    _kill_worker_of(run_dir, not_pid=first)  # the out-of-memory killer, once more
    out, err = proc.communicate(timeout=600)
    err += out
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    assert f"{run_dir} was killed again while it ran alone" in err
    assert "1 run(s) left unfinished after their worker process was lost" in err
    record = _result(run_dir)
    assert record["status"] == "interrupted"
    assert "died without a word" in record["error"] and "resumes it" in record["error"]
    assert len(record["host"]["launches"]) == 2
    # the bystander the pool killed with it went on alone and finished
    others = [_result(tmp_path / LOSES_A_WORKER_CELL / f"seed={s}") for s in (1, 2)]
    assert [r["status"] for r in others] == ["completed", "completed"]
    assert len(others[0]["host"]["launches"]) == 2
    # nothing is lost: the same command resumes it from its checkpoint and finishes it
    again = _losing_sweep(tmp_path)
    tail = "".join(again.communicate(timeout=600))[-3000:]
    assert again.returncode == 0, tail
    assert _result(run_dir)["status"] == "completed"
    assert len(_result(run_dir)["host"]["launches"]) == 3


def test_a_run_dir_another_process_holds_is_not_counted_completed(tmp_path):
    run_dir = tmp_path / "cell" / "seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(
        {"status": "completed", "seed": 0, "trick": {}, "comparability": {}, "metrics": {},
         "history": []}))
    with RunDirLock(run_dir):  # held, as a worker of an earlier launch would
        assert held_by_another(run_dir) is not None
        counts = sweep_status_counts(tmp_path)
        assert counts["busy"] == 1 and counts["completed"] == 0
        assert "1 still held by another process" in summary_line(tmp_path, counts)
    assert held_by_another(run_dir) is None
    assert sweep_status_counts(tmp_path)["completed"] == 1


# -- refused before anything is written ---------------------------------------------------

REFUSED = [
    (["norm=reference", "norm.ref_batch_size=100000000"], "lower norm.ref_batch_size"),
    (["model.g_width=100000"], "lower model.g_width"),
    (["data=mnist", "eval.final_num_samples=1000000000"], "lower eval.final_num_samples"),
    (["data.train_size=1000", "norm.d=reference", "norm.ref_batch_size=5000"],
     "drawn from data.train_size=1000; it must be <= 1000"),
    (["smoothing.real_target=0.9", "smoothing.fake_target=0.95"], "smoothing.fake_target"),
    (["train.betas_g=[0.5]"], "train.betas_g"),
    (["labels=conditional", "labels.fraction=0.5"], "labels.fraction"),
    (["model=dcgan"], "model='dcgan' does not fit"),
    (["train.device=cuda"], "train.device"),
]


@pytest.mark.parametrize("overrides, key", REFUSED)
def test_a_refused_launch_writes_nothing(tmp_path, overrides, key, monkeypatch, capsys):
    # the command line's own main, in this process (the refusal comes before Hydra starts;
    # the cross-key case also runs as a real process below)
    if "train.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    keys = {o.split("=", 1)[0] for o in overrides}
    fast = [a for a in FAST if a.split("=", 1)[0] not in keys]
    args = [*overrides, *fast, f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", ["ganlab.train", *args])
    with pytest.raises(SystemExit) as exit_:
        train_main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ganlab: config error: ") and key in line
    assert not (tmp_path / "run").exists()
    if key == "smoothing.fake_target":
        out = run_cli(*args)
        assert out.returncode == 2 and out.stderr.splitlines() == [line]
        assert not (tmp_path / "run").exists()


def test_a_key_given_twice_is_said_with_the_value_used(tmp_path):
    out = run_here("train.lr_g=1e-3", "train.lr_g=2e-3", "train.steps=2", *FAST,
                  f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == ("ganlab: train.lr_g is given 2 times (train.lr_g=1e-3, "
                                          "train.lr_g=2e-3): the last one, train.lr_g=2e-3, "
                                          "is used")
    assert _result(tmp_path)["hparams"]["train.lr_g"] == 2e-3


def test_a_sweep_is_refused_before_its_first_job_when_any_cell_is(tmp_path):
    out = run_here("-m", "smoothing.real_target=0.9", "smoothing.fake_target=0.0,0.95", *FAST,
                  "train.steps=2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        "ganlab: config error: smoothing.fake_target=0.95: "
        "smoothing.fake_target=0.95 is not allowed")
    assert not (tmp_path / "sweep").exists()  # the valid first cell did not train either


def test_run_refuses_before_it_opens_the_dir(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="beta must be < 1 - alpha"):
        run(make_cfg("smoothing.real_target=0.9", "smoothing.fake_target=0.95"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_memory_estimate_names_the_part_and_the_key(make_cfg):
    cfg = make_cfg("norm=reference", "norm.ref_batch_size=100000")
    parts = needs(cfg)
    assert parts["reference batches"][1] == "norm.ref_batch_size"
    # the reference batch's activations dominate a round at 100000 vs a batch of 64
    assert parts["round"][0] > 100 * needs(make_cfg())["round"][0]
    with pytest.raises(ConfigError, match=r"needs about \d+\.\d GiB for 2 runs at once, more "
                                          r"than the 0\.0 GiB free on cpu; .* the round: "
                                          r"lower norm.ref_batch_size \(now 100000\)"):
        check_fits(cfg, "cpu", at_once=2, available=1000)
    check_fits(make_cfg(), "cpu", available=2 ** 34)  # the default fits 16 GiB


def test_an_allocation_failure_is_one_line_naming_keys():
    status, error = _describe_failure(RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 40000000000 bytes. Error code 12"))
    assert status == "failed" and "\n" not in error
    assert "out of memory: lower train.batch_size or norm.ref_batch_size, model.g_width" in error


# -- evaluation in chunks, and a stop during it -----------------------------------------------

def _gan_and_evaluator(cfg):
    from ganlab.assemble import build_gan

    gan = build_gan(cfg, torch.device("cpu"))
    return gan, evaluate_pkg.build_evaluator(cfg, gan.data, torch.device("cpu"))


def test_an_evaluation_in_chunks_equals_one_pass(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("eval.num_samples=1000", "eval.batch_size=100")
    gan, evaluator = _gan_and_evaluator(cfg)
    kwargs = dict(seed=0, step=5, final=False, eval_cfg=cfg.eval, coupling_batch=64,
                  picture=tmp_path / "a.png", title="t")
    whole, n = score(gan, evaluator, **kwargs)
    monkeypatch.setattr(type(evaluator), "chunk_samples", 250)  # 4 chunks of 2.5 batches
    chunked, _ = score(gan, evaluator, **{**kwargs, "picture": tmp_path / "b.png"})
    assert n == 1000 and chunked == whole
    calls = []
    with pytest.raises(EvaluationStopped):
        score(gan, evaluator, **kwargs, stop=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3  # asked before each chunk, stopped before the third


def test_a_stop_during_an_evaluation_is_honoured_and_the_relaunch_evaluates_first(make_cfg,
                                                                                  tmp_path):
    args = ("train.steps=30", "eval.every=10", "train.checkpoint_every=10")
    straight = run(make_cfg(*args), tmp_path / "straight")
    original = Trainer.evaluate

    def stop_inside(self):  # a SIGTERM arriving while step 20 is evaluated
        if self.counters.step == 20:
            self.stop.requested = signal.SIGTERM
        return original(self)

    Trainer.evaluate = stop_inside
    try:
        with pytest.raises(Interrupted):
            run(make_cfg(*args), tmp_path / "cut")
    finally:
        Trainer.evaluate = original
    cut = _result(tmp_path / "cut")
    assert cut["status"] == "interrupted" and cut["step"] == 20
    assert [h["step"] for h in cut["history"]] == [10]  # step 20's evaluation never ran
    resumed = run(make_cfg(*args), tmp_path / "cut")
    def untimed(history):
        return [{k: v for k, v in h.items() if k != "wall_s"} for h in history]

    # step 20 evaluated on relaunch, as the straight run did
    assert untimed(resumed["history"]) == untimed(straight["history"])
    assert_same_tensors(load_weights(tmp_path / "cut"), load_weights(tmp_path / "straight"))


def test_a_second_signal_while_the_record_is_written_waits_for_it():
    stop = StopSignals()
    with stop:
        stop.deferred = False
        with pytest.raises(Interrupted) as first:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert not first.value.at_once
        # the sweep's SIGTERM right after the terminal's SIGINT: the same stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        with pytest.raises(Interrupted) as held:
            with stop.shielded():
                os.kill(os.getpid(), signal.SIGINT)  # the same again: at once, after the block
                time.sleep(0.1)
                finished = True
        assert finished and held.value.at_once


# -- a way back from a damaged checkpoint ---------------------------------------------------

def test_evaluate_on_a_damaged_checkpoint_leads_back_to_a_scorable_run(make_cfg, tmp_path,
                                                                        capsys):
    run(make_cfg("train.steps=30", "eval.every=10", "train.checkpoint_every=10"), tmp_path)
    before = _result(tmp_path)
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"garbage")
    assert evaluate_main([str(tmp_path)]) == 2
    advice = capsys.readouterr().err
    assert f"python -m ganlab.rerun {tmp_path} --out {tmp_path}" in advice
    assert rerun_main([str(tmp_path), "--out", str(tmp_path)]) == 0
    after = _result(tmp_path)
    assert after["metrics"] == before["metrics"] and after["host"] == before["host"]
    assert evaluate_main([str(tmp_path)]) == 0


def test_evaluate_says_plainly_when_no_checkpoint_is_left(make_cfg, tmp_path, capsys):
    run(make_cfg("train.steps=10"), tmp_path)
    for p in (tmp_path / "checkpoints").glob("*.pt"):
        p.write_bytes(b"garbage")
    assert evaluate_main([str(tmp_path)]) == 2
    assert "no good checkpoint left to score" in capsys.readouterr().err
    assert _result(tmp_path)["status"] == "completed"  # the record stands


# -- a stacked seed reruns bit for bit; a record keeps every launch --------------------------

def test_a_seed_trained_in_a_stack_reruns_bit_for_bit(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    out = run_here("-m", "seed=0,1", "fanout.vectorize_seeds=2", "train.steps=30",
                   "eval.every=15", *FAST, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("as one stacked model") == 1  # said once, not once per seed
    (run_dir,) = sweep.glob("*/seed=1")
    assert _result(run_dir)["host"]["launches"][-1]["seed_stack"] == [0, 1]
    assert rerun_main([str(run_dir), "--out", str(tmp_path / "again")]) == 0
    said = capsys.readouterr().err
    assert "trained stacked with seeds [0, 1]" in said and "bit for bit" in said
    assert_same_tensors(load_weights(tmp_path / "again"), load_weights(run_dir))
    assert _result(tmp_path / "again")["metrics"] == _result(run_dir)["metrics"]
    assert not (tmp_path / "again.stack").exists()


def test_the_record_keeps_one_entry_per_launch(make_cfg, tmp_path, caplog):
    run(make_cfg("train.steps=20", "train.checkpoint_every=10"), tmp_path)
    run(make_cfg("train.steps=40", "train.checkpoint_every=10"), tmp_path)
    launches = _result(tmp_path)["host"]["launches"]
    assert [(x["from_step"], x["to_step"], x["status"]) for x in launches] == [
        (0, 20, "completed"), (20, 40, "completed")]
    assert all("threads" in x and "optimizer_impl" in x for x in launches)
    with caplog.at_level(logging.INFO, logger="ganlab.train"):
        run(make_cfg("train.steps=30", "train.checkpoint_every=10"), tmp_path)
    assert "already completed, at step 40: longer than the train.steps=30 asked" in caplog.text
