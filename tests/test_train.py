"""The training loop end to end: every registry entry runs, runs are reproducible and
resumable bit for bit, and every ending (completed, diverged, failed) leaves result.json."""

from __future__ import annotations

import json

import pytest
import torch

from ganlab.config import ConfigError
from ganlab.losses import LOSSES
from ganlab.train import run
from tests.helpers import (
    assert_same_tensors,
    load_weights,
    run_cli,
    run_here,
    write_fake_fashion,
)

TINY = ["train.steps=2", "train.batch_size=8", "eval.num_samples=64", "eval.grid_size=16",
        "eval.final_num_samples=64", "eval.classifier_epochs=1"]


def _data_overrides(data: str, mnist_root, tmp_path) -> list[str]:
    if data in ("ring8", "grid25"):
        return [f"data={data}", "model=mlp"]
    if data == "mnist":  # real MNIST; its feature classifier is trained by the slow test
        return ["data=mnist", "model=dcgan", f"data.root={mnist_root()}", "eval.features=none"]
    return ["data=fashion_mnist", "model=dcgan", f"data.root={write_fake_fashion(tmp_path)}",
            "data.download=false"]


@pytest.fixture
def lazy_mnist_root(request):
    return lambda: request.getfixturevalue("mnist_root")


# every registered loss, with each smoothing its D cost can take (one that takes no targets
# is refused with smoothing: ganlab.configure)
LOSS_SMOOTHING = [(loss, smoothing) for loss, cls in LOSSES.items()
                  for smoothing in ("none", "one_sided", "two_sided")
                  if smoothing == "none" or cls.uses_targets]


@pytest.mark.parametrize("loss, smoothing", LOSS_SMOOTHING)
@pytest.mark.parametrize("data", ["ring8", "grid25", "mnist", "fashion_mnist"])
def test_one_step_smoke_for_every_data_loss_smoothing(make_cfg, lazy_mnist_root, tmp_path,
                                                       data, loss, smoothing):
    cfg = make_cfg(*_data_overrides(data, lazy_mnist_root, tmp_path), f"loss={loss}",
                   f"smoothing={smoothing}", *TINY)
    result = run(cfg, tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result["step"] == 2
    assert result["trick"]["loss.name"] == loss
    assert result["trick"]["smoothing.real_target"] == cfg.smoothing.real_target
    assert result["comparability"]["data.name"] == cfg.data.name
    assert result["history"][-1]["images_seen"] == 2 * 8
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "run" / "samples" / "step_0000002.png").exists()
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["status"] == "completed"
    if data in ("ring8", "grid25"):
        assert 0 <= on_disk["metrics"]["eval/modes_covered"] <= cfg.data.num_classes


@pytest.mark.parametrize("data", ["ring8", "fashion_mnist"])
@pytest.mark.parametrize("norm_g, norm_d, batches", [("batch", "batch", "joint"),
                                                     ("batch", "batch", "joint_inconsistent"),
                                                     ("none", "batch", "separate")])
def test_norm_options_train(make_cfg, lazy_mnist_root, tmp_path, data, norm_g, norm_d, batches):
    cfg = make_cfg(*_data_overrides(data, lazy_mnist_root, tmp_path), f"norm.g={norm_g}",
                   f"norm.d={norm_d}", f"norm.d_batches={batches}", *TINY)
    result = run(cfg, tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result["trick"]["norm.g"] == norm_g and result["trick"]["norm.d_batches"] == batches
    bn = [m for m in load_weights(tmp_path / "run")["G"] if "running_mean" in m]
    assert bool(bn) == (norm_g == "batch")


def test_k_d_steps_and_g_steps_are_counted(make_cfg, tmp_path):
    cfg = make_cfg("train.steps=6", "train.d_steps=3", "train.g_steps=2",
                   "train.batch_size=16", "eval.every=3", "eval.num_samples=64")
    result = run(cfg, tmp_path / "run")
    assert [h["step"] for h in result["history"]] == [3, 6]
    assert [h["d_updates"] for h in result["history"]] == [9, 18]
    assert [h["g_updates"] for h in result["history"]] == [6, 12]
    assert [h["images_seen"] for h in result["history"]] == [3 * 3 * 16, 6 * 3 * 16]
    opt_g = load_weights(tmp_path / "run")["opt_g"]["state"]
    opt_d = load_weights(tmp_path / "run")["opt_d"]["state"]
    assert float(opt_g[0]["step"]) == 12 and float(opt_d[0]["step"]) == 18


def test_same_seed_same_weights_other_seed_other_weights(make_cfg, tmp_path):
    args = ["train.steps=30", "norm.g=batch", "eval.every=10", "eval.num_samples=200"]
    a = run(make_cfg(*args, "seed=3"), tmp_path / "a")
    b = run(make_cfg(*args, "seed=3"), tmp_path / "b")
    c = run(make_cfg(*args, "seed=4"), tmp_path / "c")
    assert_same_tensors(load_weights(tmp_path / "a"), load_weights(tmp_path / "b"))
    assert a["metrics"] == b["metrics"]
    wa, wc = load_weights(tmp_path / "a")["G"], load_weights(tmp_path / "c")["G"]
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a["metrics"] != c["metrics"]


COMMON = ["logger=none", "train.progress=false", "train.device=cpu"]
RESUME_CASES = {
    # batch norm's running statistics, the 2-D data stream and the average of G's weights
    "mlp": (["train.steps=120", "train.checkpoint_every=40", "eval.every=40",
             "eval.num_samples=500", "norm=batch", "eval.ema=0.99"], 80),
    # real MNIST's epoch order, conv nets (image metrics off: the run is about resuming)
    "dcgan": (["data=mnist", "data.download=false", "train.steps=6",
               "train.batch_size=8", "train.checkpoint_every=3", "eval.every=3",
               "eval.num_samples=16", "model.g_width=8", "model.d_width=8", "norm.g=batch",
               "eval.features=none"], 3),
    # every trick that keeps state: reference batches, label streams, plug-in state, and a
    # fixed training set's epoch order (killed mid-epoch)
    "stateful_tricks": (["train.steps=60", "train.checkpoint_every=20", "eval.every=20",
                         "data.train_size=500",
                         "eval.num_samples=200", "norm.g=virtual", "norm.d=reference",
                         "norm.ref_batch_size=16", "labels=auxiliary",
                         "extras=[minibatch_discrimination,feature_matching]",
                         "extras.minibatch_discrimination.kernels=4",
                         "extras.historical_averaging.weight=0.01"], 40),
}


def _history_without_clock(result: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "wall_s"} for h in result["history"]]


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_killed_run_resumes_bit_exactly(tmp_path, case, request):
    overrides, kill_at = RESUME_CASES[case]
    args = [*overrides, *COMMON]
    if case == "dcgan":
        args.append(f"data.root={request.getfixturevalue('mnist_root')}")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_here(*args, f"hydra.run.dir={full}").returncode == 0

    # the kill needs a process of its own; the runs around it need none
    killed = run_cli(str(kill_at), *args, f"hydra.run.dir={cut}", module="tests.kill_after")
    assert killed.returncode == -9  # SIGKILL: no chance to clean up
    mid = json.loads((cut / "result.json").read_text())
    assert mid["status"] == "running" and mid["step"] == kill_at
    ckpt = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["counters"]["step"] == kill_at

    resumed = run_here(*args, f"hydra.run.dir={cut}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    a = json.loads((full / "result.json").read_text())
    b = json.loads((cut / "result.json").read_text())
    assert b["status"] == "completed" and b["step"] == a["step"]
    assert a["metrics"] == b["metrics"]
    assert _history_without_clock(a) == _history_without_clock(b)
    assert_same_tensors(load_weights(full), load_weights(cut))


def test_relaunching_a_finished_run_does_nothing_and_more_steps_extend_it(make_cfg, tmp_path):
    first = run(make_cfg("train.steps=20", "eval.every=10", "eval.num_samples=100"),
                tmp_path / "r")
    again = run(make_cfg("train.steps=20", "eval.every=10", "eval.num_samples=100"),
                tmp_path / "r")
    assert again["history"] == first["history"] and again["status"] == "completed"
    longer = run(make_cfg("train.steps=30", "eval.every=10", "eval.num_samples=100"),
                 tmp_path / "r")
    assert [h["step"] for h in longer["history"]] == [10, 20, 30]
    assert longer["history"][:2] == first["history"]


def test_resume_refuses_a_different_experiment_naming_the_key(make_cfg, tmp_path):
    run(make_cfg("train.steps=10", "eval.num_samples=100"), tmp_path / "r")
    before = (tmp_path / "r" / "result.json").read_bytes()
    with pytest.raises(ConfigError, match=r"train.lr_d: 0.0002 -> 0.001\); it is left as it "
                                          "was. To train this config, launch it into a new "
                                          "directory"):
        run(make_cfg("train.steps=20", "train.lr_d=1e-3", "eval.num_samples=100"),
            tmp_path / "r")
    assert (tmp_path / "r" / "result.json").read_bytes() == before  # the record is kept
    (attempt,) = (tmp_path / "r").glob("result.failed-*.json")
    assert json.loads(attempt.read_text())["status"] == "failed"


def test_absurd_learning_rate_diverges_and_says_so(make_cfg, tmp_path):
    cfg = make_cfg("train.steps=200", "train.lr_d=1e30", "train.lr_g=1e30", "eval.every=0")
    result = run(cfg, tmp_path / "r")
    assert result["status"] == "diverged"
    assert "non-finite" in result["error"] and "train/loss_d" in result["error"]
    assert result["step"] < 200
    on_disk = json.loads((tmp_path / "r" / "result.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["error"] == result["error"]


def test_relaunching_a_diverged_run_leaves_it_alone(make_cfg, tmp_path, caplog):
    cfg = make_cfg("train.steps=200", "train.lr_d=1e30", "train.lr_g=1e30", "eval.every=0",
                   "train.checkpoint_every=20")
    first = run(cfg, tmp_path / "r")
    assert first["status"] == "diverged"
    with caplog.at_level("INFO", logger="ganlab.train"):
        again = run(cfg, tmp_path / "r")
    assert "nothing to do" in caplog.text
    assert again["status"] == "diverged" and again["error"] == first["error"]


def test_missing_dataset_fails_with_result_json(make_cfg, tmp_path):
    cfg = make_cfg("data=mnist", f"data.root={tmp_path / 'empty'}", "data.download=false")
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz"):
        run(cfg, tmp_path / "r")
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and "data.root" in result["error"]
    assert result["trick"]["loss.name"] == "non_saturating"  # the record says what it was
