"""Checks that need a CUDA device (run by `make gpu-check`; skipped elsewhere)."""

from __future__ import annotations

import math

import pytest
import torch

from ganlab.train import run
from tests.helpers import write_fake_fashion

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = ["train.steps=4", "train.batch_size=16", "eval.num_samples=64", "eval.every=2"]


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_mlp_and_dcgan_train_on_cuda(make_cfg, tmp_path, norm):
    root = write_fake_fashion(tmp_path / "data")
    for overrides in (["data=ring8", "model=mlp"],
                      ["data=fashion_mnist", "model=dcgan", f"data.root={root}"]):
        cfg = make_cfg(*overrides, *TINY, "train.device=cuda", f"norm.g={norm}",
                       f"norm.d={norm}")
        result = run(cfg, tmp_path / overrides[0])
        assert result["status"] == "completed", result["error"]


def test_a_cuda_run_resumes_on_cpu(make_cfg, tmp_path):
    run(make_cfg(*TINY, "train.device=cuda"), tmp_path / "r")
    longer = [a if a != "train.steps=4" else "train.steps=8" for a in TINY]
    result = run(make_cfg(*longer, "train.device=cpu"), tmp_path / "r")
    assert result["status"] == "completed" and result["step"] == 8
    assert [h["step"] for h in result["history"]] == [2, 4, 6, 8]


def test_latents_are_drawn_on_the_device_reproducibly(make_cfg, tmp_path):
    # z is drawn on the training device from the run's own stream: the same seed gives the
    # same latents on the same device type, and other numbers on the CPU (documented)
    from ganlab.result import ResultFile
    from ganlab.train import Trainer

    zs = []
    for i, device in enumerate(("cpu", "cuda", "cuda")):
        cfg = make_cfg(*TINY, f"train.device={device}")
        trainer = Trainer(cfg, tmp_path / str(i), ResultFile(tmp_path / str(i) / "r.json"))
        z = trainer.gan.sample_z(8)
        assert z.device.type == device
        zs.append(z.cpu())
    assert torch.equal(zs[1], zs[2]) and not torch.equal(zs[0], zs[1])


CUDA_ROUNDS = {
    "mlp": ["data=ring8", "model=mlp"],
    "mlp, K+1 half labelled, virtual norm, plug-ins": [
        "data=grid25", "model=mlp", "data.train_size=500", "labels=kplus1",
        "labels.fraction=0.5", "norm=virtual_g", "smoothing=one_sided",
        "extras=[minibatch_discrimination,feature_matching,historical_averaging]"],
    "dcgan, conditional, batch norm": ["data=fashion_mnist", "model=dcgan",
                                       "labels=conditional", "norm=batch"],
}


@pytest.mark.parametrize("impl", ["fused", "foreach", "loop"])
@pytest.mark.parametrize("tricks", CUDA_ROUNDS.values(), ids=CUDA_ROUNDS.keys())
def test_twenty_rounds_never_synchronise(make_cfg, tmp_path, tricks, impl):
    from ganlab.assemble import build_gan

    root = write_fake_fashion(tmp_path / "data")
    cfg = make_cfg(*tricks, "train.batch_size=32", "norm.ref_batch_size=32",
                   f"data.root={root}", "train.device=cuda", f"train.optimizer_impl={impl}")
    gan = build_gan(cfg, torch.device("cuda"))
    gan.G.train()
    gan.D.train()
    gan.train_step()  # first round: the optimisers create their state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            stats = gan.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(map(math.isfinite, gan.read_stats(stats).values()))


def test_stacked_seeds_never_synchronise_and_equal_seeds_alone(make_cfg):
    from ganlab.assemble import build_gan
    from ganlab.vectorize import SeedStack

    overrides = ["data=grid25", "model=mlp", "labels=kplus1", "labels.fraction=0.5",
                 "norm.g=virtual", "extras=[minibatch_discrimination,feature_matching]",
                 "train.batch_size=32", "norm.ref_batch_size=32", "train.device=cuda"]
    cuda = torch.device("cuda")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        def gans():
            out = [build_gan(make_cfg(*overrides, f"seed={s}"), cuda) for s in range(4)]
            for g in out:
                g.G.train()
                g.D.train()
            return out

        alone, members = gans(), gans()
        for g in alone:
            for _ in range(20):
                g.train_step()
        stack = SeedStack(members)
        stack.train_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(19):
                stack.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for i, solo in enumerate(alone):
            stack.unstack(i)
            for a, b in zip(solo.G.state_dict().values(), members[i].G.state_dict().values(),
                            strict=True):
                assert (a.double() - b.double()).abs().max().item() <= 1e-8
    finally:
        torch.set_default_dtype(before)


GRAPHED = {
    "mlp": ["data=ring8", "model=mlp"],
    "mlp, K+1 half labelled, batch norm, k=2, plug-ins": [
        "data=grid25", "model=mlp", "labels=kplus1", "labels.fraction=0.5", "norm=batch",
        "train.d_steps=2", "smoothing=one_sided",
        "extras=[minibatch_discrimination,feature_matching]"],
    "pacgan D, virtual norm in G": ["data=ring8", "model=pacgan_mlp", "norm.g=virtual"],
}


@pytest.mark.parametrize("tricks", GRAPHED.values(), ids=GRAPHED.keys())
def test_a_graphed_round_equals_the_eager_round_and_never_synchronises(make_cfg, tricks):
    from ganlab.assemble import build_gan
    from ganlab.graphs import GraphedRound

    cuda = torch.device("cuda")
    base = [*tricks, "train.batch_size=64", "norm.ref_batch_size=32", "train.device=cuda"]
    eager = build_gan(make_cfg(*base, "train.cuda_graphs=true"), cuda)  # capturable Adam too
    graphed = build_gan(make_cfg(*base, "train.cuda_graphs=true"), cuda)
    for gan in (eager, graphed):
        gan.G.train()
        gan.D.train()
    play = GraphedRound(graphed)
    for _ in range(5):  # the warm-up rounds and the capture
        eager.train_step()
        play()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(15):
            eager_stats = eager.train_step()
            graphed_stats = play()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert play.graph is not None  # the rounds above were replays
    a, b = eager.read_stats(eager_stats), graphed.read_stats(graphed_stats)
    assert all(abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])) for k in a), (a, b)
    for net in ("G", "D"):
        for (k, x), y in zip(getattr(eager, net).state_dict().items(),
                             getattr(graphed, net).state_dict().values(), strict=True):
            assert torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-5), (net, k)
    # each replay drew new numbers from the run's own streams, as the eager rounds did
    assert torch.equal(eager.noise.get_state(), graphed.noise.get_state())
    assert torch.equal(eager.data.generator.get_state(), graphed.data.generator.get_state())


@pytest.mark.parametrize("first_graphed", [True, False])
def test_a_graphed_run_checkpoints_and_resumes(make_cfg, tmp_path, first_graphed):
    # resumed with graphs (captured anew from the restored state), after a graphed or an
    # eager first part; it ends where a run trained straight through ends, up to rounding
    args = ["data=ring8", "train.device=cuda", "eval.every=10", "eval.num_samples=200",
            "train.checkpoint_every=10", "train.optimizer_impl=fused"]
    first = run(make_cfg(*args, f"train.cuda_graphs={first_graphed}", "train.steps=20"),
                tmp_path / "r")
    assert first["status"] == "completed" and first["host"]["cuda_graphs"] is first_graphed
    again = run(make_cfg(*args, "train.cuda_graphs=true", "train.steps=40"), tmp_path / "r")
    assert again["status"] == "completed" and again["step"] == 40
    assert again["host"]["cuda_graphs"] is True
    assert [h["step"] for h in again["history"]] == [10, 20, 30, 40]
    straight = run(make_cfg(*args, "train.cuda_graphs=true", "train.steps=40"),
                   tmp_path / "straight")
    assert straight["status"] == "completed"
    a = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)["gan"]
    b = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)["gan"]
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.allclose(a[net][k].float(), b[net][k].float(), rtol=1e-3,
                                  atol=1e-5), (net, k)
