"""PacGAN's 2-D protocol as options: the maxout model family and a fixed training set."""

from __future__ import annotations

import pytest
import torch

from ganlab.assemble import build_gan
from ganlab.config import ConfigError
from ganlab.configure import check
from ganlab.data.toy import GaussianMixture2D
from ganlab.nets.mlp import Maxout


def test_maxout_takes_the_largest_of_each_units_pieces():
    layer = Maxout(3, units=2, pieces=4)
    x = torch.randn(5, 3)
    pieces = layer.linear(x).view(5, 2, 4)
    assert torch.equal(layer(x), pieces.max(dim=2).values)
    assert layer(x).shape == (5, 2)


def test_the_pacgan_preset_builds_papers_networks(make_cfg):
    cfg = make_cfg("experiment=pacgan2d", "data=grid25")
    check(cfg)
    gan = build_gan(cfg, torch.device("cpu"))
    g_linear = [m for m in gan.G.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in g_linear] == [
        (2, 400), (400, 400), (400, 400), (400, 400), (400, 2)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in gan.G.modules()) == 4
    maxouts = [m for m in gan.D.modules() if isinstance(m, Maxout)]
    assert [(m.linear.in_features, m.units, m.pieces) for m in maxouts] == [
        (2, 200, 5), (200, 200, 5), (200, 200, 5)]
    weights = torch.cat([m.weight.detach().flatten() for net in (gan.G, gan.D)
                         for m in net.modules() if isinstance(m, torch.nn.Linear)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(float(m.bias.detach().abs().max()) == 0 for net in (gan.G, gan.D)
               for m in net.modules() if isinstance(m, torch.nn.Linear))
    t = cfg.train
    assert (t.batch_size, t.lr_g, t.lr_d, list(t.betas_g), t.steps) == (
        100, 1e-4, 1e-4, [0.8, 0.999], 400_000)
    assert (cfg.data.train_size, cfg.eval.num_samples, cfg.model.z_dim) == (100_000, 2500, 2)


def test_a_fixed_training_set_is_visited_once_per_epoch_and_resumes():
    data = GaussianMixture2D("ring8", seed=3, device=torch.device("cpu"), train_size=250)
    first = torch.cat([data.sample(100)[0] for _ in range(2)] + [data.sample(50)[0]])
    # one epoch: each of the 250 samples exactly once
    assert torch.equal(torch.sort(first[:, 0]).values, torch.sort(data.fixed[0][:, 0]).values)
    state = data.state_dict()
    ahead = [data.sample(100)[0] for _ in range(4)]  # crosses into the third epoch
    again = GaussianMixture2D("ring8", seed=3, device=torch.device("cpu"), train_size=250)
    again.load_state_dict(state)
    assert torch.equal(again.fixed[0], data.fixed[0])  # the set itself comes from the seed
    assert all(torch.equal(a, again.sample(100)[0]) for a in ahead)
    other = GaussianMixture2D("ring8", seed=4, device=torch.device("cpu"), train_size=250)
    assert not torch.equal(other.fixed[0], data.fixed[0])


def test_image_data_refuses_a_fixed_training_size(make_cfg, mnist_root):
    cfg = make_cfg("data=mnist", f"data.root={mnist_root}", "data.train_size=100")
    with pytest.raises(ConfigError, match="data.train_size=100 is not allowed with data=mnist"):
        build_gan(cfg, torch.device("cpu"))
