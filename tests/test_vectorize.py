"""Vectorised seeds (ganlab.vectorize, ganlab.sweeper, ganlab.train.run_group): a stacked
run of several seeds equals each seed run alone, keeps one run dir per seed, masks a seed that
diverges, and resumes from its members' own checkpoints."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from ganlab.assemble import build_gan
from ganlab.data.base import stream_state
from ganlab.result import read_result
from ganlab.sweeper import group_seed_jobs
from ganlab.train import run, run_group
from ganlab.vectorize import SeedStack, unsupported
from tests.helpers import run_here

from .conftest import REPO

SEEDS = (0, 1, 2)
ROUNDS = 20
# every trick the MLP families support under vmap, alone or mixed
TRICKS = {
    "baseline": [],
    "batch norm, separate batches": ["norm.g=batch", "norm.d=batch"],
    "batch norm, joint batches": ["norm.g=batch", "norm.d=batch", "norm.d_batches=joint"],
    "batch norm, joint in D's update only": ["norm.d=batch", "norm.d_batches=joint_inconsistent"],
    "virtual norm": ["norm.g=virtual", "norm.d=virtual", "norm.ref_batch_size=16"],
    "reference norm": ["norm.g=reference", "norm.d=reference", "norm.ref_batch_size=16"],
    "conditional": ["labels=conditional"],
    "auxiliary": ["labels=auxiliary"],
    "K+1, half labelled": ["labels=kplus1", "labels.fraction=0.5"],
    "minibatch features": ["extras=[minibatch_discrimination]"],
    "feature matching": ["extras=[feature_matching]"],
    "smoothing, k=3, g=2, minimax": ["smoothing=one_sided", "train.d_steps=3",
                                     "train.g_steps=2", "loss=minimax"],
    "pacgan D, fixed set": ["model=pacgan_mlp", "data=grid25", "data.train_size=300"],
    "average of G's weights, batch norm in G": ["eval.ema=0.9", "norm.g=batch"],
}


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _gans(make_cfg, overrides, seeds=SEEDS):
    gans = [build_gan(make_cfg(f"seed={s}", *overrides), torch.device("cpu")) for s in seeds]
    for gan in gans:
        gan.G.train()
        gan.D.train()
    return gans


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max([(a[k].double() - b[k].double()).abs().max().item() for k in a] or [0.0])


# every trick with the per-tensor Adam; the fused kernel on two of them
CASES = [(case, "loop") for case in TRICKS] + [("baseline", "fused"),
                                               ("batch norm, joint batches", "fused")]


@pytest.mark.parametrize(("case", "impl"), CASES)
def test_a_stacked_seed_equals_the_seed_run_alone(make_cfg, float64, case, impl):
    overrides = [*TRICKS[case], f"train.optimizer_impl={impl}"]
    alone = _gans(make_cfg, overrides)
    last_alone = [[g.read_stats(g.train_step()) for _ in range(ROUNDS)][-1] for g in alone]
    members = _gans(make_cfg, overrides)
    stack = SeedStack(members)
    for _ in range(ROUNDS):
        stats = stack.train_step()
    read = stack.stats_reader(stats)
    for i, (solo, member) in enumerate(zip(alone, members, strict=True)):
        stack.unstack(i)
        for net in ("G", "D"):
            assert _max_diff(getattr(solo, net).state_dict(),
                             getattr(member, net).state_dict()) <= 1e-8, (case, net, i)
        if solo.average is not None:  # the average of G's weights (eval.ema)
            assert member.average.updates == solo.average.updates == ROUNDS
            assert _max_diff(solo.average.net.state_dict(),
                             member.average.net.state_dict()) <= 1e-8, (case, i)
        for opt in ("opt_g", "opt_d"):  # Adam's moments and step count
            a, b = getattr(solo, opt).state_dict(), getattr(member, opt).state_dict()
            for p in a["state"]:
                assert _max_diff(a["state"][p], b["state"][p]) <= 1e-8
        # each seed drew from its own streams, as many numbers as alone
        assert stream_state(solo.noise)["state"].equal(stream_state(member.noise)["state"])
        assert solo.data.state_dict().keys() == member.data.state_dict().keys()
        assert (stream_state(solo.data.generator)["state"]
                .equal(stream_state(member.data.generator)["state"]))
        assert solo.round_images == member.round_images
        got = read(i)
        assert got.keys() == last_alone[i].keys()
        assert all(abs(got[k] - last_alone[i][k]) <= 1e-6 for k in got)  # read in float32


def test_seeds_differ_inside_the_stack(make_cfg):
    members = _gans(make_cfg, [])
    stack = SeedStack(members)
    stack.train_step()
    g_params = stack.state["G"][0]
    first = next(iter(g_params.values()))
    assert not torch.equal(first[0], first[1])


def test_unsupported_settings_are_named(make_cfg):
    assert unsupported(make_cfg()) == []
    assert unsupported(make_cfg("model=pacgan_mlp")) == []
    assert unsupported(make_cfg("data=mnist")) == ["model=dcgan (supported: mlp, pacgan_mlp)"]
    assert unsupported(make_cfg("extras=[historical_averaging]")) == [
        "extras.historical_averaging"]
    assert unsupported(make_cfg("extras=[feature_matching,minibatch_discrimination]")) == []


def test_the_sweeper_folds_seeds_of_a_cell_into_groups():
    batch = [[f"norm.g={n}", f"seed={s}"] for n in ("none", "batch") for s in range(5)]
    batch.append(["norm.g=virtual"])  # no seed: left alone
    batch.append(["norm.g=reference", "seed=7"])  # one seed: nothing to fold
    out = group_seed_jobs(batch, 2, lambda job: [])
    assert out == [
        ["norm.g=none", "seed=0", "fanout.group_seeds=[0,1]"],
        ["norm.g=none", "seed=2", "fanout.group_seeds=[2,3]"],
        ["norm.g=none", "seed=4"],
        ["norm.g=batch", "seed=0", "fanout.group_seeds=[0,1]"],
        ["norm.g=batch", "seed=2", "fanout.group_seeds=[2,3]"],
        ["norm.g=batch", "seed=4"],
        ["norm.g=virtual"],
        ["norm.g=reference", "seed=7"],
    ]


def test_the_sweeper_reads_plus_seed_and_leaves_a_repeated_seed_alone():
    batch = [["+seed=0"], ["+seed=1"], ["+seed=1"], ["+seed=2"]]
    assert group_seed_jobs(batch, 8, lambda job: []) == [
        ["+seed=0", "fanout.group_seeds=[0,1,2]"], ["+seed=1"]]


def test_run_dirs_not_named_by_seed_are_not_grouped():
    from ganlab.sweeper import subdir_problem

    assert subdir_problem("${ganlab.cell:${hydra.overrides.task}}/seed=${seed}") is None
    assert "hydra.sweep.subdir=${hydra.job.num} (stacked seeds need" in subdir_problem(
        "${hydra.job.num}")


def test_a_cell_that_cannot_stack_runs_one_seed_per_job(caplog):
    batch = [["model=dcgan", f"seed={s}"] for s in range(3)]
    with caplog.at_level("WARNING"):
        out = group_seed_jobs(batch, 8, lambda job: ["model=dcgan (supported: mlp)"])
    assert out == batch
    assert "vectorised seeds do not support model=dcgan (supported: mlp)" in caplog.text


FAST = ["eval.every=10", "eval.num_samples=200", "train.checkpoint_every=10", "train.steps=20"]


def _group_cfg(make_cfg, *overrides, seeds=SEEDS):
    return make_cfg(f"seed={seeds[0]}", f"fanout.group_seeds=[{','.join(map(str, seeds))}]",
                    *FAST, *overrides)


def _checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)


def test_a_group_writes_each_seed_as_its_own_run(make_cfg, tmp_path):
    records = run_group(_group_cfg(make_cfg), tmp_path / "seed=0", ["train.steps=20"])
    assert [r["seed"] for r in records] == list(SEEDS)
    for seed in SEEDS:
        run_dir = tmp_path / f"seed={seed}"
        record = read_result(run_dir)
        assert record["status"] == "completed" and record["step"] == 20
        assert record["seed"] == seed and record["host"]["seed_stack"] == list(SEEDS)
        assert [h["step"] for h in record["history"]] == [10, 20]
        assert (run_dir / "samples" / "step_0000020.png").exists()
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert overrides == ["train.steps=20", f"seed={seed}"]  # a rerun runs it alone
        saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert saved["seed"] == seed and saved["fanout"]["group_seeds"] == []
    # the seeds trained differently
    assert (read_result(tmp_path / "seed=0")["metrics"]
            != read_result(tmp_path / "seed=1")["metrics"])


def test_a_diverged_seed_is_masked_and_the_others_go_on(make_cfg, tmp_path, monkeypatch):
    clean = run_group(_group_cfg(make_cfg), tmp_path / "clean" / "seed=0", [])
    assert all(r["status"] == "completed" for r in clean)
    import ganlab.loop as train

    def poisoned(cfg, device):
        gan = build_gan(cfg, device)
        if cfg.seed == 1:
            with torch.no_grad():
                next(gan.D.parameters()).fill_(float("nan"))
        return gan

    monkeypatch.setattr(train, "build_gan", poisoned)
    records = run_group(_group_cfg(make_cfg), tmp_path / "bad" / "seed=0", [])
    assert [r["status"] for r in records] == ["completed", "diverged", "completed"]
    assert "non-finite" in records[1]["error"]
    for seed in (0, 2):  # the other seeds trained bit for bit as in the clean group
        a = _checkpoint(tmp_path / "clean" / f"seed={seed}")["gan"]
        b = _checkpoint(tmp_path / "bad" / f"seed={seed}")["gan"]
        for net in ("G", "D"):
            assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
        assert clean[seed]["metrics"] == records[seed]["metrics"]


def test_a_seed_resumed_alone_continues_its_group_checkpoint(make_cfg, tmp_path):
    run_group(_group_cfg(make_cfg), tmp_path / "seed=0", [])
    # one seed extended alone, then the group extended: its members are at different steps
    run(make_cfg("seed=1", *FAST[:-1], "train.steps=30"), tmp_path / "seed=1")
    records = run_group(_group_cfg(make_cfg, "train.steps=40"), tmp_path / "seed=0", [])
    assert [(r["status"], r["step"]) for r in records] == [("completed", 40)] * 3
    assert [h["step"] for h in records[1]["history"]] == [10, 20, 30, 40]
    assert "seed_stack" not in records[1]["host"]  # it caught up alone, in its own loop
    assert records[0]["host"]["seed_stack"] == [0, 2]


def _cli(*args, env=None, cwd=None, module="ganlab.train"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline", **(env or {})})


SWEEP = ["-m", "logger=none", "train.progress=false", "train.device=cpu", "seed=0,1,2",
         "fanout.vectorize_seeds=3", *FAST]


@pytest.mark.heavy
def test_a_killed_group_resumes_every_seed_from_its_own_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    # SIGKILL right after the first seed's checkpoint at step 10: the others have none
    killed = _cli("10", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=REPO,
                  module="tests.kill_after")
    assert killed.returncode != 0
    (cell,) = {p.parent for p in sweep.glob("*/seed=*")}
    dirs = [cell / f"seed={s}" for s in SEEDS]
    assert _checkpoint(dirs[0])["counters"]["step"] == 10
    assert not (dirs[1] / "checkpoints" / "last.pt").exists()
    again = run_here(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 completed" in again.stderr + again.stdout
    for run_dir in dirs:
        record = json.loads((run_dir / "result.json").read_text())
        assert record["status"] == "completed" and record["step"] == 20
        assert [h["step"] for h in record["history"]] == [10, 20]
    # each run's log has its own lines only
    log_text = (dirs[1] / "train.log").read_text()
    assert f"run dir {dirs[1]}" in log_text and str(dirs[0]) not in log_text
    # the seeds behind caught up together, then the group is done: a relaunch does nothing
    assert json.loads((dirs[1] / "result.json").read_text())["host"]["seed_stack"] == [1, 2]
    third = run_here(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert third.returncode == 0 and "already completed" in third.stderr + third.stdout


def test_a_stacked_round_makes_no_would_be_syncs_and_a_stats_read_makes_one(make_cfg):
    from ganlab.syncs import SyncCounter

    stack = SeedStack(_gans(make_cfg, ["labels=kplus1", "labels.fraction=0.5",
                                       "norm.g=virtual", "extras=[feature_matching]"]))
    stack.train_step()  # the optimisers' state is created in the first round
    with SyncCounter() as syncs:
        for _ in range(3):
            stats = stack.train_step()
    assert syncs.calls == {}
    read = stack.stats_reader(stats)
    with SyncCounter() as reads:
        values = [read(i) for i in range(len(SEEDS))]
    assert reads.calls == {"tolist": 1}
    assert len({v["loss_d"] for v in values}) == len(SEEDS)


@pytest.mark.heavy
def test_a_stop_signal_checkpoints_every_seed_of_a_group(make_cfg, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "logger=none", "train.progress=false", "train.device=cpu", "seed=0,1",
            "fanout.vectorize_seeds=2", "eval.every=200", "eval.num_samples=200",
            "train.steps=100000", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.train", *args], cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "offline"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(sweep.glob("*/seed=1/samples/*.png")):
        assert time.monotonic() < deadline and proc.poll() is None, "no evaluation"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    (cell,) = {p.parent for p in sweep.glob("*/seed=*")}
    records = [json.loads((cell / f"seed={s}" / "result.json").read_text()) for s in (0, 1)]
    step = records[0]["step"]
    for seed, record in enumerate(records):
        assert record["status"] == "interrupted" and record["step"] == step
        assert _checkpoint(cell / f"seed={seed}")["counters"]["step"] == step
    # relaunched (here with a nearer end), both resume from where they stopped, together
    cfg = make_cfg("seed=0", "fanout.group_seeds=[0,1]", "eval.every=200",
                   "eval.num_samples=200", f"train.steps={step + 30}")
    resumed = run_group(cfg, cell / "seed=0", [])
    assert [(r["status"], r["step"]) for r in resumed] == [("completed", step + 30)] * 2


def test_a_group_of_an_unsupported_config_is_refused_in_one_line(make_cfg, tmp_path):
    from ganlab.config import ConfigError

    cfg = _group_cfg(make_cfg, "extras=[historical_averaging]")
    with pytest.raises(ConfigError, match=r"do not support extras.historical_averaging; "):
        run_group(cfg, tmp_path / "seed=0", [])
    assert not list(tmp_path.iterdir())  # nothing written


def test_rerun_of_a_stacked_seed_runs_it_alone_to_the_same_weights(make_cfg, tmp_path):
    from ganlab.rerun import main as rerun

    run_group(_group_cfg(make_cfg), tmp_path / "sweep" / "seed=0", ["train.steps=20"])
    member = tmp_path / "sweep" / "seed=1"
    assert rerun([str(member), "--out", str(tmp_path / "alone"), "--alone"]) == 0
    record = read_result(tmp_path / "alone")
    assert record["status"] == "completed" and record["seed"] == 1
    assert "seed_stack" not in record["host"]  # trained by itself, as asked
    # float32: stacked and alone agree up to rounding after 20 rounds
    a, b = _checkpoint(member)["gan"], _checkpoint(tmp_path / "alone")["gan"]
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.allclose(a[net][k].double(), b[net][k].double(), atol=1e-4), k


def test_a_stacked_step_that_fails_is_recorded_for_every_seed(make_cfg, tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("vmap: no batching rule")

    monkeypatch.setattr(SeedStack, "train_step", broken)
    with pytest.raises(RuntimeError, match="no batching rule"):
        run_group(_group_cfg(make_cfg), tmp_path / "seed=0", [])
    for seed in SEEDS:
        record = read_result(tmp_path / f"seed={seed}")
        assert record["status"] == "failed"
        assert record["error"] == "RuntimeError: vmap: no batching rule"


def test_a_stack_resumed_from_its_members_checkpoints_equals_seeds_alone(make_cfg, float64):
    overrides = ["norm.g=batch", "norm.d=batch", "train.optimizer_impl=fused"]
    alone = _gans(make_cfg, overrides)
    for gan in alone:
        for _ in range(10):
            gan.train_step()
    saved = [copy.deepcopy(gan.state_dict()) for gan in alone]
    for gan in alone:
        for _ in range(10):
            gan.train_step()
    members = _gans(make_cfg, overrides)
    for gan, state in zip(members, saved, strict=True):
        gan.load_state_dict(state)  # as a relaunch restores each seed's checkpoint
    stack = SeedStack(members)
    for _ in range(10):
        stack.train_step()
    for i, solo in enumerate(alone):
        stack.unstack(i)
        for net in ("G", "D"):
            assert _max_diff(getattr(solo, net).state_dict(),
                             getattr(members[i], net).state_dict()) <= 1e-8


def test_one_seed_that_cannot_be_launched_leaves_the_others_running(make_cfg, tmp_path):
    (tmp_path / "seed=1" / ".lock").mkdir(parents=True)  # a lock that cannot be opened
    records = run_group(_group_cfg(make_cfg), tmp_path / "seed=0", [])
    assert [(r["seed"], r["status"]) for r in records] == [(0, "completed"), (2, "completed")]
    assert not (tmp_path / "seed=1" / "result.json").exists()


def test_a_failing_group_leaves_a_finished_seed_as_it_was(make_cfg, tmp_path, monkeypatch):
    run(make_cfg("seed=0", *FAST), tmp_path / "seed=0")  # seed 0 ran alone before
    before = (tmp_path / "seed=0" / "result.json").read_bytes()

    def broken(self):
        raise RuntimeError("vmap: no batching rule")

    monkeypatch.setattr(SeedStack, "train_step", broken)
    with pytest.raises(RuntimeError):
        run_group(_group_cfg(make_cfg), tmp_path / "seed=0", [])
    assert (tmp_path / "seed=0" / "result.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "seed=0").glob("result*.json")) == ["result.json"]
    assert [read_result(tmp_path / f"seed={s}")["status"] for s in (1, 2)] == ["failed"] * 2


def test_a_failing_group_closes_its_wandb_runs(make_cfg, tmp_path, monkeypatch):
    from ganlab.tracking import WandbTracker

    def broken(self):
        raise RuntimeError("vmap: no batching rule")

    monkeypatch.setattr(SeedStack, "train_step", broken)
    with pytest.raises(RuntimeError):
        run_group(_group_cfg(make_cfg, "logger=wandb", "logger.mode=offline"),
                  tmp_path / "seed=0", [])
    assert not WandbTracker.open_runs
    for seed in SEEDS:
        (offline,) = (tmp_path / f"seed={seed}" / "wandb").glob("offline-run-*")
        last = (offline / "logs" / "debug-internal.log").read_text().strip().splitlines()[-1]
        assert "stream: all finished" in last
