"""The average of G's weights (`eval.ema`, ganlab.average): its arithmetic, that it never
changes training, that evaluation scores it, that it resumes and re-scores exactly, and
that its protocol keeps its runs apart from runs scored on G itself while records written
before it existed still compare with today's runs of G."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ganlab.assemble import build_gan
from ganlab.average import WeightAverage, decay_at
from ganlab.checkpoint import save_checkpoint
from ganlab.compare.runs import group_runs
from ganlab.config import ConfigError
from ganlab.configure import load_config
from ganlab.evaluate import build_evaluator
from ganlab.evaluate.__main__ import rescore
from ganlab.graphs import uncapturable
from ganlab.train import run
from tests.helpers import assert_same_tensors, load_weights

from .conftest import REPO

CPU = torch.device("cpu")
SHORT = ["train.steps=30", "eval.every=10", "eval.num_samples=300", "train.checkpoint_every=10"]


def test_the_decay_warms_up_then_holds():
    assert decay_at(0.999, 0) == pytest.approx(0.1)
    assert decay_at(0.999, 90) == pytest.approx(0.91)
    assert decay_at(0.999, 8990) == pytest.approx(0.999)
    assert decay_at(0.999, 100_000) == 0.999
    assert decay_at(0.5, 0) == pytest.approx(0.1) and decay_at(0.5, 10) == 0.5


def test_an_update_moves_the_average_toward_the_source_by_one_minus_the_decay():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    average = WeightAverage(net, decay=0.5)
    assert all(not p.requires_grad for p in average.net.parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
        net[1].running_mean.fill_(7.0)
    average.update(net)  # d_0 = 0.1: 0.1 * 1 + 0.9 * 3
    assert all(torch.allclose(p, torch.full_like(p, 2.8)) for p in average.net.parameters())
    average.update(net)  # d_1 = 2/11
    want = 2.8 * 2 / 11 + 3.0 * 9 / 11
    assert all(torch.allclose(p, torch.full_like(p, want)) for p in average.net.parameters())
    assert average.updates == 2
    assert torch.equal(average.net[1].running_mean, net[1].running_mean)  # buffers: G's own
    for p in net.parameters():  # the source is untouched
        assert torch.equal(p, torch.full_like(p, 3.0))


def test_a_state_round_trips_and_a_different_decay_is_refused():
    net = nn.Linear(3, 1)
    a = WeightAverage(net, 0.9)
    a.update(nn.Linear(3, 1))
    b = WeightAverage(net, 0.9)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and all(torch.equal(x, y) for x, y in
                                  zip(a.net.parameters(), b.net.parameters(), strict=True))
    with pytest.raises(ValueError, match="decay 0.9, not eval.ema=0.99"):
        WeightAverage(net, 0.99).load_state_dict(a.state_dict())


def test_the_average_never_changes_training_and_is_what_evaluation_samples(make_cfg):
    plain = build_gan(make_cfg("norm.g=batch"), CPU)
    averaged = build_gan(make_cfg("norm.g=batch", "eval.ema=0.9"), CPU)
    assert plain.average is None and plain.scored is plain.G
    for gan in (plain, averaged):
        gan.G.train()
        gan.D.train()
        for _ in range(25):
            gan.train_step()
    # G, D and every stream are exactly those of the run without an average
    assert_same_tensors(plain.G.state_dict(), averaged.G.state_dict())
    assert_same_tensors(plain.D.state_dict(), averaged.D.state_dict())
    assert torch.equal(plain.noise.get_state(), averaged.noise.get_state())
    assert averaged.average.updates == 25
    assert averaged.scored is averaged.average.net
    # samples come from the average, not from G
    z_gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    from_g = plain.generate(50, z_gen[0], 25)
    from_average = averaged.generate(50, z_gen[1], 25)
    assert from_g.shape == from_average.shape and not torch.allclose(from_g, from_average)
    z = torch.randn(25, averaged.z_dim, generator=torch.Generator().manual_seed(3))
    averaged.average.net.eval()
    with torch.no_grad():
        assert torch.equal(from_average[:25], averaged.average.net(z, None))
    assert averaged.G.training  # generate puts modes back


def test_the_protocol_says_which_generator_was_scored(make_cfg):
    def protocol(*overrides):
        cfg = make_cfg("data=grid25", *overrides)
        return build_evaluator(cfg, build_gan(cfg, CPU).data, CPU).protocol()

    assert protocol()["ema"] is False  # G itself, as records before eval.ema say
    assert protocol("eval.ema=0.999")["ema"] == 0.999


def test_records_written_before_the_average_existed_compare_with_todays_runs(tmp_path):
    # the knee study's records (written before eval.ema) carry the protocol of today's
    # run of the same config with eval.ema=0
    with tarfile.open(REPO / "experiments" / "knee" / "records-grid25-160k.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (result,) = list(tmp_path.rglob("seed=0/result.json"))
    record = json.loads(result.read_text())
    cfg = load_config(result.parent, ["train.device=cpu", "logger=none"])
    assert cfg.eval.ema == 0
    now = build_evaluator(cfg, build_gan(cfg, CPU).data, CPU).protocol()
    assert json.loads(json.dumps(now)) == record["comparability"]["eval"]


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def test_runs_scored_on_the_average_are_never_compared_with_runs_scored_on_g(make_cfg,
                                                                             tmp_path):
    for ema in ("0", "0.99"):
        for seed in (0, 1):
            run(make_cfg(*SHORT, f"eval.ema={ema}", f"seed={seed}"), tmp_path / ema / str(seed))
    records = [_record(p.parent) for p in sorted(tmp_path.rglob("result.json"))]
    classes = group_runs(records)
    assert len(classes) == 2
    assert sorted(c.comparability["eval"]["ema"] for c in classes) == [False, 0.99]
    assert all(len(c.runs) == 2 for c in classes)
    assert any("eval.ema=0.99" in c.label for c in classes)  # the labels tell them apart
    # the same seeds trained the same G: scores differ because a different G was scored
    g0, a0 = _record(tmp_path / "0" / "0"), _record(tmp_path / "0.99" / "0")
    assert [h["metrics"]["train/loss_d"] for h in g0["history"]] == \
        [h["metrics"]["train/loss_d"] for h in a0["history"]]
    assert_same_tensors(load_weights(tmp_path / "0" / "0")["G"],
                        load_weights(tmp_path / "0.99" / "0")["G"])


def test_a_resumed_average_continues_exactly(make_cfg, tmp_path):
    args = [*SHORT, "eval.ema=0.95", "norm.g=batch"]
    whole = run(make_cfg(*args), tmp_path / "whole")
    run(make_cfg(*args[1:], "train.steps=20"), tmp_path / "parts")
    parts = run(make_cfg(*args), tmp_path / "parts")  # extended from its checkpoint
    assert parts["history"][-1]["metrics"] == whole["history"][-1]["metrics"]
    assert_same_tensors(load_weights(tmp_path / "whole"), load_weights(tmp_path / "parts"))
    assert load_weights(tmp_path / "parts")["G_average"]["updates"] == 30


def test_changing_the_average_of_a_trained_run_is_refused(make_cfg, tmp_path):
    run(make_cfg(*SHORT), tmp_path / "r")
    before = (tmp_path / "r" / "result.json").read_bytes()
    # a relaunch into the run dir names the key
    with pytest.raises(ConfigError, match=r"eval.ema: 0.0 -> 0.999"):
        run(make_cfg(*SHORT[:1], "train.steps=40", *SHORT[1:], "eval.ema=0.999"),
            tmp_path / "r")
    assert (tmp_path / "r" / "result.json").read_bytes() == before
    # re-scoring cannot make an average the run never kept
    with pytest.raises(ConfigError, match=r"eval.ema=0.999 is not allowed when re-scoring .*"
                                          r"kept none \(eval.ema=0\).*ganlab.rerun"):
        rescore(tmp_path / "r", ["eval.ema=0.999"])
    assert (tmp_path / "r" / "result.json").read_bytes() == before


def test_re_scoring_an_averaged_run_scores_its_saved_average(make_cfg, tmp_path):
    trained = run(make_cfg(*SHORT, "eval.ema=0.9"), tmp_path / "r")
    again = rescore(tmp_path / "r", [])
    final = {k: v for k, v in trained["metrics"].items() if k.startswith("eval/")}
    assert {k: again[k] for k in final} == final


def test_an_old_checkpoint_without_the_key_resumes(make_cfg, tmp_path):
    run(make_cfg(*SHORT[1:], "train.steps=20"), tmp_path / "r")
    path = tmp_path / "r" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["eval.ema"]  # as a release before eval.ema saved it
    save_checkpoint(state, path)
    longer = run(make_cfg(*SHORT), tmp_path / "r")
    assert longer["status"] == "completed" and longer["step"] == 30
    assert longer["host"]["from_step"] == 20


def test_cuda_graphs_name_the_average_as_uncapturable(make_cfg):
    cfg = make_cfg("eval.ema=0.999")
    assert any(p.startswith("eval.ema=0.999") for p in uncapturable(cfg, torch.device("cuda")))
    assert not any(p.startswith("eval.ema") for p in uncapturable(make_cfg(),
                                                                  torch.device("cuda")))
