"""Figure 21 for trained runs: the same z inside two minibatches, per run."""

from __future__ import annotations

import pytest

from ganlab.evaluate.figure21 import main, panel
from ganlab.train import run

TINY_MNIST = ["data=mnist", "model=dcgan", "model.g_width=8", "model.d_width=8",
              "train.steps=4", "train.batch_size=16", "eval.every=0", "eval.features=none",
              "eval.num_samples=16"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, mnist_root):
    from ganlab.configure import compose

    root = tmp_path_factory.mktemp("fig21")
    for norm in ("batch", "virtual"):
        cfg = compose(["logger=none", "train.device=cpu", "train.progress=false",
                       f"data.root={mnist_root}", *TINY_MNIST, f"norm.g={norm}",
                       "norm.ref_batch_size=16"])
        run(cfg, root / norm)
    return root


def test_batch_norm_moves_shared_samples_and_virtual_norm_does_not(two_runs):
    batch, virtual = panel(two_runs / "batch", 6, 0), panel(two_runs / "virtual", 6, 0)
    assert batch["first"].shape == (6, 1, 28, 28) and batch["image"]
    assert batch["coupling"] > 1e-3
    assert virtual["coupling"] < 1e-5
    assert (batch["norm"], virtual["norm"]) == ("batch", "virtual")


def test_the_command_draws_one_panel_per_run(two_runs, tmp_path, capsys):
    out = tmp_path / "fig21.png"
    assert main([str(two_runs / "batch"), str(two_runs / "virtual"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "norm.g=batch coupling" in printed and "norm.g=virtual coupling" in printed
    assert out.stat().st_size > 20_000
    assert main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "has no saved config" in capsys.readouterr().err
