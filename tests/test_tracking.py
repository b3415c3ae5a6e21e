"""W&B: offline by default with metrics and samples in the run folder; never fatal."""

from __future__ import annotations

import json
import logging

import pytest

from ganlab.configure import compose
from ganlab.tracking import NullTracker, RunIdentity, WandbTracker, build_tracker
from ganlab.train import run
from tests.helpers import run_cli

ARGS = ["train.steps=20", "eval.every=10", "eval.num_samples=100", "train.log_every=5",
        "train.device=cpu", "train.progress=false"]


def test_offline_run_writes_a_wandb_run_with_metrics_and_images(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the config's own default: offline
    result = run(compose(ARGS + ["logger=wandb"]), tmp_path / "r")
    assert result["status"] == "completed"
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log_file,) = runs[0].glob("*.wandb")
    assert log_file.stat().st_size > 0
    # sample scatter plots went to W&B as images at both evaluations
    assert len(list((runs[0] / "files" / "media" / "images").glob("samples_*.png"))) == 2
    # the W&B run id is kept so a resumed run appends to the same W&B run
    run_id = (tmp_path / "r" / "wandb_id.txt").read_text()
    assert runs[0].name.endswith(run_id)


def test_a_single_cli_run_skips_teardown_but_finishes_its_wandb_run(tmp_path):
    # `python -m ganlab.train` ends a finished single run with os._exit: everything must be
    # written and W&B's offline stream closed first
    out = run_cli(*ARGS, "logger=wandb", f"hydra.run.dir={tmp_path / 'r'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "completed"
    (offline,) = (tmp_path / "r" / "wandb").glob("offline-run-*")
    last = (offline / "logs" / "debug-internal.log").read_text().strip().splitlines()[-1]
    assert "stream: all finished" in last
    assert "step 20/20" in (tmp_path / "r" / "train.log").read_text().splitlines()[-1]


def test_a_broken_wandb_never_kills_training(tmp_path, monkeypatch, caplog):
    import wandb

    def refuse(*args, **kwargs):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(wandb, "init", refuse)
    with caplog.at_level(logging.WARNING, logger="ganlab.tracking"):
        result = run(compose(ARGS + ["logger=wandb"]), tmp_path / "r")
    assert result["status"] == "completed"
    assert "W&B init failed (RuntimeError: no route to host)" in caplog.text


def test_log_errors_after_init_disable_the_tracker(tmp_path, caplog):
    tracker = WandbTracker.__new__(WandbTracker)

    class Exploding:
        def log(self, *a, **k):
            raise OSError("disk full")

    tracker.run = Exploding()
    with caplog.at_level(logging.WARNING, logger="ganlab.tracking"):
        tracker.log({"train/loss_d": 1.0}, step=1)
        tracker.log({"train/loss_d": 1.0}, step=2)  # already off: no second warning
    assert tracker.run is None
    assert caplog.text.count("W&B log failed") == 1


@pytest.mark.parametrize("name, mode", [("none", "offline"), ("wandb", "disabled")])
def test_no_tracker_when_switched_off(tmp_path, name, mode):
    cfg = compose([f"logger={name}", f"logger.mode={mode}"])
    tracker = build_tracker(cfg.logger, run_dir=tmp_path, identity=RunIdentity(name="r"),
                            config={})
    assert type(tracker) is NullTracker


def test_stacked_seeds_each_log_their_own_wandb_run(tmp_path, monkeypatch, caplog):
    # one process, three W&B runs open at once: the first to finish must not stop W&B
    # under the others
    from ganlab.train import run_group

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose(ARGS + ["logger=wandb", "seed=0", "fanout.group_seeds=[0,1,2]"])
    with caplog.at_level(logging.WARNING, logger="ganlab.tracking"):
        records = run_group(cfg, tmp_path / "seed=0", [])
    assert [r["status"] for r in records] == ["completed"] * 3
    assert "W&B" not in caplog.text
    ids = set()
    for seed in range(3):
        run_dir = tmp_path / f"seed={seed}"
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        assert len(list((offline / "files" / "media" / "images").glob("samples_*.png"))) == 2
        last = (offline / "logs" / "debug-internal.log").read_text().strip().splitlines()[-1]
        assert "stream: all finished" in last
        ids.add((run_dir / "wandb_id.txt").read_text())
    assert len(ids) == 3


def test_stacked_seeds_that_cannot_reach_wandb_online_each_log_offline(tmp_path, monkeypatch,
                                                                      caplog):
    # the fallback from online to offline must not take down the stack-mates' runs
    from ganlab.train import run_group

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    cfg = compose(ARGS + ["logger=wandb", "logger.mode=online", "logger.init_timeout=3",
                          "seed=0", "fanout.group_seeds=[0,1]"])
    with caplog.at_level(logging.WARNING, logger="ganlab.tracking"):
        records = run_group(cfg, tmp_path / "seed=0", [])
    assert [r["status"] for r in records] == ["completed"] * 2
    assert caplog.text.count("logging offline to") == 2
    assert "W&B log failed" not in caplog.text and "summary failed" not in caplog.text
    for seed in range(2):
        (offline,) = (tmp_path / f"seed={seed}" / "wandb").glob("offline-run-*")
        assert len(list((offline / "files" / "media" / "images").glob("samples_*.png"))) == 2
