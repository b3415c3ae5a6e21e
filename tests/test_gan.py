"""The round's fast path: no would-be device syncs, device-side streams, Adam's kernels."""

from __future__ import annotations

import pytest
import torch

from ganlab.assemble import build_gan, derive_seed, resolve_optimizer_impl
from ganlab.config import ConfigError
from ganlab.data.base import restore_stream, stream_state
from ganlab.result import ResultFile
from ganlab.syncs import SyncCounter
from ganlab.train import Trainer

TRICKS = {
    "mlp ring8": [],
    "fixed toy set, k=3": ["data=grid25", "data.train_size=300", "train.d_steps=3"],
    "conditional": ["labels=conditional"],
    "auxiliary, batch norm": ["labels=auxiliary", "norm=batch"],
    "K+1 half labelled, reference norm": ["labels=kplus1", "labels.fraction=0.5",
                                          "norm=reference"],
    "every plug-in, virtual norm, separate batches": [
        "norm=virtual_g", "smoothing=one_sided",
        "extras=[minibatch_discrimination,feature_matching,historical_averaging]"],
    "pacgan maxout": ["model=pacgan_mlp"],
}
MNIST = ["data=mnist", "model.g_width=8", "train.batch_size=16", "norm.ref_batch_size=16"]


def _gan(make_cfg, *overrides):
    cfg = make_cfg(*overrides)
    gan = build_gan(cfg, torch.device("cpu"))
    gan.G.train()
    gan.D.train()
    return gan


def test_the_counter_sees_what_would_wait_for_a_gpu():
    x = torch.ones(4)
    with SyncCounter() as syncs:
        y = x * 2  # arithmetic waits for nothing
        x[:2].sum()  # nor does slicing
        float(y.sum())
        y.tolist()
        y[y > 1]
        x.to("cpu")
        torch.tensor([1.0, 2.0])
        with syncs.paused():
            y.sum().item()
    assert syncs.calls == {"__float__": 1, "tolist": 1, "boolean index": 1, "to": 1, "tensor": 1}


@pytest.mark.parametrize("tricks", TRICKS.values(), ids=TRICKS.keys())
def test_a_round_makes_no_would_be_syncs_and_a_stats_read_makes_one(make_cfg, tricks):
    gan = _gan(make_cfg, "train.batch_size=32", *tricks)
    gan.train_step()  # the optimisers' state is created in the first round
    with SyncCounter() as syncs:
        for _ in range(3):
            stats = gan.train_step()
    assert syncs.calls == {}
    with SyncCounter() as reads:
        values = gan.read_stats(stats)
    assert reads.calls == {"tolist": 1}
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(values)
    assert all(isinstance(v, float) for v in values.values())


@pytest.mark.parametrize("labels", ["none", "kplus1"])
def test_an_image_round_makes_no_would_be_syncs(make_cfg, mnist_root, labels):
    gan = _gan(make_cfg, *MNIST, f"data.root={mnist_root}", f"labels={labels}",
               "norm=virtual_g", "extras=[minibatch_discrimination,feature_matching]")
    gan.train_step()
    with SyncCounter() as syncs:
        gan.train_step()
    assert syncs.calls == {}


def test_the_loop_syncs_once_per_log_step(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("train.steps=40", "train.log_every=10", "eval.every=0",
                   "train.checkpoint_every=0")
    trainer = Trainer(cfg, tmp_path, ResultFile(tmp_path / "result.json"))
    counter = SyncCounter()
    for name in ("evaluate", "save"):  # the end of the run evaluates and saves: not a round
        original = getattr(trainer, name)

        def quiet(original=original):
            with counter.paused():
                return original()
        monkeypatch.setattr(trainer, name, quiet)
    with counter:
        result = trainer.fit()
    assert result["status"] == "completed"
    assert counter.calls == {"tolist": 4}  # 40 rounds, a log step every 10


def test_real_labels_are_drawn_only_for_a_mode_that_reads_them(make_cfg):
    assert _gan(make_cfg).real_labels is False
    data = _gan(make_cfg, "labels=auxiliary").data
    x, y = data.sample(8, labels=False)
    assert x.shape == (8, 2) and y is None
    assert data.sample(8)[1].shape == (8,)


def test_cpu_latents_come_from_the_runs_own_seeded_stream(make_cfg):
    # the stream is the CPU generator seeded from the run's seed: a known value
    gan = _gan(make_cfg, "seed=3")
    expected = torch.randn(5, gan.z_dim, generator=torch.Generator().manual_seed(
        derive_seed(3, "noise")))
    assert torch.equal(gan.sample_z(5), expected)


def test_a_stream_saved_on_another_device_type_continues_reproducibly():
    saved = stream_state(torch.Generator().manual_seed(1))
    foreign = {"device": "cuda", "state": torch.arange(16, dtype=torch.uint8)}
    a, b = torch.Generator(), torch.Generator()
    restore_stream(a, foreign)
    restore_stream(b, foreign)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    restore_stream(a, saved)
    assert torch.equal(torch.rand(4, generator=a),
                       torch.rand(4, generator=torch.Generator().manual_seed(1)))
    restore_stream(b, saved["state"])  # a bare tensor: a CPU state from an older checkpoint
    assert torch.equal(torch.rand(4, generator=b),
                       torch.rand(4, generator=torch.Generator().manual_seed(1)))


def test_optimizer_impl_auto_is_fused_on_the_cpu_and_bad_choices_are_named():
    cpu = torch.device("cpu")
    assert resolve_optimizer_impl("auto", cpu) == "fused"
    assert resolve_optimizer_impl("loop", cpu) == "loop"
    with pytest.raises(ConfigError, match="train.optimizer_impl=fused is not available on "
                                          "device meta; choose one of: auto, foreach, loop"):
        resolve_optimizer_impl("fused", torch.device("meta"))


def test_an_unknown_optimizer_impl_names_the_choices(make_cfg):
    from ganlab.configure import check

    with pytest.raises(ConfigError, match="train.optimizer_impl='fast' is not allowed; choose "
                                          "one of: auto, fused, foreach, loop"):
        check(make_cfg("train.optimizer_impl=fast"))


def test_adam_kernels_agree_to_float_tolerance_and_the_record_says_which_ran(make_cfg,
                                                                              tmp_path):
    weights = {}
    for impl in ("loop", "foreach", "fused"):
        cfg = make_cfg("train.steps=20", "eval.every=0", "train.checkpoint_every=0",
                       f"train.optimizer_impl={impl}")
        trainer = Trainer(cfg, tmp_path / impl, ResultFile(tmp_path / impl / "result.json"))
        for _ in range(20):
            trainer.gan.train_step()
        weights[impl] = torch.cat([p.detach().flatten() for p in trainer.gan.G.parameters()])
        assert trainer.result.data["host"]["optimizer_impl"] == impl
        assert trainer.result.data["host"]["device"] == "cpu"
    for impl in ("foreach", "fused"):
        torch.testing.assert_close(weights[impl], weights["loop"], rtol=1e-4, atol=1e-5)
    auto = Trainer(make_cfg(), tmp_path / "auto", ResultFile(tmp_path / "auto" / "r.json"))
    assert auto.result.data["host"]["optimizer_impl"] == "fused"
    assert auto.gan.opt_g.defaults["fused"] is True


def test_cuda_graphs_name_what_keeps_a_round_out_of_a_graph(make_cfg, tmp_path):
    from ganlab.config import ConfigError
    from ganlab.graphs import uncapturable
    from ganlab.result import ResultFile

    cuda = torch.device("cuda")  # only compared, never used
    assert uncapturable(make_cfg("data=ring8"), cuda) == []
    assert uncapturable(make_cfg("data=grid25", "labels=kplus1", "norm=batch",
                                 "extras=[minibatch_discrimination]"), cuda) == []
    problems = uncapturable(make_cfg("data=grid25", "data.train_size=300",
                                     "extras=[historical_averaging]",
                                     "fanout.group_seeds=[0,1]"), cuda)
    assert [p.split(" ")[0] for p in problems] == [
        "data.train_size=300", "extras.historical_averaging", "fanout.group_seeds=[0,", ]
    assert uncapturable(make_cfg("data=mnist"), cuda)[0].startswith("data=mnist (image data")
    with pytest.raises(ConfigError, match=r"train.cuda_graphs=true cannot capture this config's "
                                          r"round: train.device=cpu \(runs on cpu; CUDA graphs "
                                          r"need a CUDA device\)$"):
        Trainer(make_cfg("train.cuda_graphs=true"), tmp_path, ResultFile(tmp_path / "r.json"))
