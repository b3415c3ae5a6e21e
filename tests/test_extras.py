"""Plug-in tricks (ganlab.extras): Salimans et al. 2016's minibatch discrimination (§3.2),
historical averaging (§3.3) and feature matching (§3.1) against hand-computed values,
inside the built D and the GAN's round, and in training runs; and the extension point."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import ganlab.loop as train_module
from ganlab.assemble import build_gan, build_nets
from ganlab.config import ConfigError
from ganlab.configure import check
from ganlab.data import build_data
from ganlab.extras import EXTRAS, Extra, build_extras, resolve_options
from ganlab.extras.feature_matching import FeatureMatching
from ganlab.extras.historical_averaging import HistoricalAverage
from ganlab.extras.minibatch_discrimination import MinibatchDiscrimination
from ganlab.gan import GAN, Game, Schedule, Step
from ganlab.labels import LabelMode
from ganlab.losses import NonSaturating
from ganlab.nets import DOutput
from ganlab.nets.norm import ReferenceBatch
from ganlab.tracking import NullTracker
from ganlab.train import run
from tests.helpers import build_nets_for, load_weights, write_fake_fashion

TINY = ["train.steps=2", "train.batch_size=8", "eval.num_samples=64", "eval.grid_size=16"]


# -- minibatch discrimination ----------------------------------------------------------------

def _mbd(T: torch.Tensor, kernels: int, dims: int) -> MinibatchDiscrimination:
    layer = MinibatchDiscrimination(T.shape[0], kernels, dims)
    with torch.no_grad():
        layer.T.copy_(T)
    return layer


def test_output_shape():
    layer = MinibatchDiscrimination(in_features=6, kernels=4, dims=3)
    assert layer.T.shape == (6, 4 * 3)
    assert layer(torch.randn(5, 6)).shape == (5, 6 + 4)


def test_closeness_by_hand():
    # T = identity with one dimension per kernel: M_i,b = h_i,b. Rows h = (0, 0), (1, 0),
    # (0, 2): kernel 0 sees 0, 1, 0 and kernel 1 sees 0, 0, 2, so e.g.
    # o(x_0) = (exp(-1) + exp(0), exp(0) + exp(-2)).
    layer = _mbd(torch.eye(2), kernels=2, dims=1)
    h = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    e1, e2 = math.exp(-1), math.exp(-2)
    expected_o = torch.tensor([[e1 + 1, 1 + e2],
                               [e1 + e1, 1 + e2],
                               [1 + e1, e2 + e2]])
    out = layer(h)
    torch.testing.assert_close(out[:, :2], h)  # the features pass through unchanged
    torch.testing.assert_close(out[:, 2:], expected_o)


def test_closeness_matches_a_loop():
    torch.manual_seed(0)
    a, kernels, dims, n = 4, 3, 2, 5
    T = torch.randn(a, kernels * dims)
    h = torch.randn(n, a)
    out = _mbd(T, kernels, dims)(h)
    M = (h @ T).tolist()  # M[i][b * dims + c]
    for i in range(n):
        for b in range(kernels):
            o = 0.0
            for j in range(n):
                if j != i:
                    l1 = sum(abs(M[i][b * dims + c] - M[j][b * dims + c]) for c in range(dims))
                    o += math.exp(-l1)
            # abs: the layer sums exp over all j (itself included) and subtracts 1 in float32
            assert out[i, a + b].item() == pytest.approx(o, rel=1e-5, abs=1e-6), (i, b)


def test_identical_rows_are_each_others_neighbours():
    torch.manual_seed(1)
    n, kernels = 6, 4
    layer = MinibatchDiscrimination(3, kernels, 5)
    h = torch.randn(1, 3).repeat(n, 1)
    torch.testing.assert_close(layer(h)[:, 3:], torch.full((n, kernels), n - 1.0))
    # a single sample has no neighbours
    torch.testing.assert_close(layer(h[:1])[:, 3:], torch.zeros(1, kernels))


@pytest.mark.parametrize("kernels", [0, 8])
def test_d_output_depends_on_batch_mates_only_with_mbd(make_cfg, kernels):
    # norm none: minibatch discrimination is the only channel between samples
    cfg = make_cfg("data=ring8", "model=mlp", f"extras.minibatch_discrimination.kernels={kernels}",
                   "extras.minibatch_discrimination.dims=3")
    data = build_data(cfg.data, 0, torch.device("cpu"))
    torch.manual_seed(0)
    _, D = build_nets_for(cfg, data)
    x, _ = data.sample(16)
    x2 = x.clone()
    x2[1:] = x[0]  # the same sample among copies of itself: a collapsed batch
    with torch.no_grad():
        a, b = D(x).adv[0], D(x2).adv[0]
    if kernels:
        layer = D.layers["minibatch_discrimination"]
        assert isinstance(layer, MinibatchDiscrimination) and layer.kernels == kernels
        assert D.head.adv.in_features == cfg.model.d_width + kernels
        assert (a - b).abs() > 1e-4  # by design D sees the batch
    else:
        assert len(D.layers) == 0 and D.head.adv.in_features == cfg.model.d_width
        assert torch.allclose(a, b, atol=1e-6)


def test_gan_discriminates_real_and_fake_as_separate_batches(make_cfg):
    cfg = make_cfg("data=ring8", "model=mlp", "extras.minibatch_discrimination.kernels=4",
                   "norm.d_batches=joint")
    gan = build_gan(cfg, torch.device("cpu"))
    G, D = gan.G, gan.D
    assert gan.d_batches == "separate" and not gan.joint_d  # asked for by the plug-in
    real, _ = gan.data.sample(8)
    with torch.no_grad():
        fake = G(torch.randn(8, cfg.model.z_dim))
        out_real, out_fake = gan.discriminate(gan.D, real, None, fake, None)
        torch.testing.assert_close(out_real.adv, D(real).adv)
        torch.testing.assert_close(out_fake.adv, D(fake).adv)
        # one joint batch would have given other values: real samples see fakes as neighbours
        assert (D(torch.cat([real, fake])).adv[:8] - out_real.adv).abs().max() > 1e-4


def test_the_record_says_the_batches_were_separate(make_cfg, tmp_path):
    cfg = make_cfg("extras=[minibatch_discrimination]", "norm.d_batches=joint", *TINY)
    result = run(cfg, tmp_path / "run")
    assert result["trick"]["norm.d_batches"] == "separate"  # what ran, not what was asked


def test_wrapped_d_keeps_its_plugin_layer(make_cfg):
    cfg = make_cfg("data=ring8", "model=mlp", "extras.minibatch_discrimination.kernels=4",
                   "norm.d=virtual", "norm.ref_batch_size=8")
    _, D = build_nets_for(cfg, build_data(cfg.data, 0, torch.device("cpu")))
    assert isinstance(D, ReferenceBatch)
    assert isinstance(D.layers["minibatch_discrimination"], MinibatchDiscrimination)


# -- historical averaging ------------------------------------------------------------------

def _set(lin: nn.Linear, w, b) -> None:
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
        lin.bias.copy_(torch.tensor(b))


def test_historical_average_by_hand():
    lin = nn.Linear(2, 1)
    _set(lin, [[1.0, 2.0]], [0.0])
    ha = HistoricalAverage(lin, weight=0.5)
    assert ha.penalty().item() == 0.0  # theta equals its only past value

    _set(lin, [[4.0, 5.0]], [3.0])
    # before the update the mean is theta_0: (9 + 9 + 9) * 0.5
    assert ha.penalty().item() == pytest.approx(13.5)
    ha.update()
    _set(lin, [[7.0, -1.0]], [6.0])
    ha.update()
    # mean of (1, 2 | 0), (4, 5 | 3), (7, -1 | 6) = (4, 2 | 3)
    assert ha.count == 3
    torch.testing.assert_close(ha.mean[0], torch.tensor([[4.0, 2.0]]))
    torch.testing.assert_close(ha.mean[1], torch.tensor([3.0]))
    # 0.5 * ((7-4)^2 + (-1-2)^2 + (6-3)^2) = 13.5
    penalty = ha.penalty()
    assert penalty.item() == pytest.approx(13.5)
    penalty.backward()  # d/dtheta = 2 * weight * (theta - mean); the mean is a constant
    torch.testing.assert_close(lin.weight.grad, torch.tensor([[3.0, -3.0]]))
    torch.testing.assert_close(lin.bias.grad, torch.tensor([3.0]))


def test_historical_average_is_the_mean_of_all_values_seen():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[1].bias.requires_grad_(False)  # frozen parameters are not part of the game
    ha = HistoricalAverage(net, weight=0.1)
    params = [p for p in net.parameters() if p.requires_grad]
    assert len(ha.params) == 3
    seen = [[p.detach().clone() for p in params]]
    for _ in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ha.update()
        seen.append([p.detach().clone() for p in params])
    for k, m in enumerate(ha.mean):
        torch.testing.assert_close(m, torch.stack([s[k] for s in seen]).mean(0))
    expected = 0.1 * sum(((p - torch.stack([s[k] for s in seen]).mean(0)) ** 2).sum().item()
                         for k, p in enumerate(params))
    assert ha.penalty().item() == pytest.approx(expected, rel=1e-5)


def test_historical_average_state_round_trip():
    torch.manual_seed(3)
    a_net, b_net = nn.Linear(3, 2), nn.Linear(3, 2)
    b_net.load_state_dict(a_net.state_dict())
    a = HistoricalAverage(a_net, 0.2)
    for _ in range(3):
        with torch.no_grad():
            for p in a_net.parameters():
                p.mul_(1.5).add_(0.1)
        a.update()
    state = a.state_dict()
    b_net.load_state_dict(a_net.state_dict())
    b = HistoricalAverage(b_net, 0.2)  # starts from the current theta, count 1
    assert b.penalty().item() == 0.0 and a.penalty().item() > 0
    b.load_state_dict(state)
    assert b.count == a.count == 4
    for m, n in zip(a.mean, b.mean, strict=True):
        assert torch.equal(m, n)
    assert b.penalty().item() == a.penalty().item()
    # the saved state is a copy, and both continue identically
    a.update()
    assert not torch.equal(a.mean[0], state["mean"][0])
    b.update()
    for m, n in zip(a.mean, b.mean, strict=True):
        assert torch.equal(m, n)


# -- training runs ---------------------------------------------------------------------------

class _Recorder(NullTracker):
    def __init__(self):
        self.logged: dict[str, float] = {}

    def log(self, metrics, step):
        self.logged.update(metrics)


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
def test_extras_train(make_cfg, tmp_path, monkeypatch, family):
    recorder = _Recorder()
    monkeypatch.setattr(train_module, "build_tracker", lambda *a, **k: recorder)
    data = (["data=ring8", "model=mlp"] if family == "mlp" else
            ["data=fashion_mnist", "model=dcgan", "data.download=false",
             f"data.root={write_fake_fashion(tmp_path / 'data')}",
             "model.g_width=8", "model.d_width=8", "model.z_dim=8", "eval.features=none"])
    cfg = make_cfg(*data, "extras=[minibatch_discrimination,feature_matching]",
                   "extras.minibatch_discrimination.kernels=8",
                   "extras.historical_averaging.weight=0.01", *TINY)
    result = run(cfg, tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result["trick"]["extras.minibatch_discrimination.kernels"] == 8
    assert result["trick"]["extras.minibatch_discrimination.dims"] == 5
    assert result["trick"]["extras.historical_averaging.weight"] == 0.01
    assert result["trick"]["extras.feature_matching.weight"] == 1.0
    assert recorder.logged["train/loss_g_feature_matching"] > 0
    for key in ("train/penalty_d_hist_avg", "train/penalty_g_hist_avg"):
        # step 2's penalty compares theta_1 with the mean of theta_0 and theta_1: > 0
        assert recorder.logged[key] > 0
        assert result["metrics"][key] == recorder.logged[key]
    state = load_weights(tmp_path / "run")
    # initial parameters plus one update per optimiser step (d_steps = g_steps = 1)
    averages = state["extras"]["historical_averaging"]
    assert averages["d"]["count"] == 3 and averages["g"]["count"] == 3
    assert "layers.minibatch_discrimination.T" in state["D"]


# -- feature matching ------------------------------------------------------------------------

def _out(features: torch.Tensor) -> DOutput:
    return DOutput(torch.zeros(len(features)), None, features)


def test_feature_matching_by_hand():
    # E f(x) = (2, 3), E f(G(z)) = (1, 1): ||(1, 2)||^2 = 5, times the weight 0.5
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)
    fm = FeatureMatching("feature_matching", resolve_options(
        {"feature_matching": {"weight": 0.5}})["feature_matching"])
    step = Step(_out(fake), _draw_real=lambda: _out(real))
    term = fm.g_terms(step)["loss_g_feature_matching"]
    assert term.item() == pytest.approx(2.5)
    term.backward()
    # d/d fake_i = weight * 2 (E f(G(z)) - E f(x)) / N = 0.5 * 2 * (-1, -2) / 2
    torch.testing.assert_close(fake.grad, torch.tensor([[-0.5, -1.0], [-0.5, -1.0]]))
    assert real.grad is None  # the real statistics are constants for G
    assert fm.d_terms(step) == {}  # D's cost is untouched


class _CountingData:
    """Wraps a data source and counts the real batches drawn."""

    def __init__(self, data):
        self.data, self.draws = data, 0

    def sample(self, n, labels=True):
        self.draws += 1
        return self.data.sample(n, labels)

    def __getattr__(self, name):
        return getattr(self.data, name)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_a_g_update_draws_real_data_only_for_feature_matching(make_cfg, weight):
    cfg = make_cfg(f"extras.feature_matching.weight={weight}", "train.batch_size=8")
    gan = build_gan(cfg, torch.device("cpu"))
    gan.data = _CountingData(gan.data)
    stats = gan.g_step()
    assert gan.data.draws == (1 if weight else 0)
    assert ("loss_g_feature_matching" in stats) == bool(weight)


# -- the extension point ------------------------------------------------------------------------

class _AppendOne(nn.Module):
    def __init__(self, in_features: int):
        super().__init__()
        self.out_features = in_features + 1

    def forward(self, h):
        return torch.cat([h, torch.ones(len(h), 1)], dim=1)


@dataclass
class _ProbeOptions:
    weight: float = 0.0


class _Probe(Extra):
    """A test plug-in: a D layer that appends a constant feature, and a constant term in each
    player's cost."""

    Options = _ProbeOptions

    def d_layer(self, in_features: int) -> nn.Module:
        return _AppendOne(in_features)

    def d_terms(self, step):
        return {"test_d": torch.tensor(self.options.weight)}

    def g_terms(self, step):
        return {"test_g": 2 * torch.tensor(self.options.weight)}


@pytest.fixture
def probe():
    EXTRAS.register("test_probe")(_Probe)
    try:
        yield
    finally:
        del EXTRAS["test_probe"]


def test_a_new_plugin_plugs_in_without_touching_the_gan(probe, make_cfg):
    (extra,) = build_extras({"test_probe": {"weight": 0.25}})
    assert isinstance(extra, _Probe) and extra.name == "test_probe"
    assert build_extras({"test_probe": {"weight": 0.0}}) == []  # off by default
    cfg = make_cfg("data=ring8")
    data = build_data(cfg.data, 0, torch.device("cpu"))
    G, D = build_nets(cfg, data, LabelMode(), [extra], ref_seed=0)
    assert isinstance(D.layers["test_probe"], _AppendOne)  # its layer sits in D, before
    assert D.head.adv.in_features == cfg.model.d_width + 1  # the head, which reads its output
    opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D))
    gan = GAN(G, D, opt_g, opt_d, Game(NonSaturating(), LabelMode(), [extra]), data,
              Schedule(batch_size=4), noise_seed=0, device=torch.device("cpu"))
    stats = gan.train_step()
    assert stats["test_d"].item() == 0.25 and stats["test_g"].item() == 0.5
    # the plug-in's terms are part of each player's whole cost
    d_only = stats["loss_d_real"] / 2 + stats["loss_d_fake"] / 2
    assert stats["loss_d"].item() == pytest.approx(d_only.item() + 0.25, rel=1e-6)
    # G's cost: the non-saturating term on the update's batch, plus the plug-in's 0.5 (with
    # lr 0 nothing moves, so the same z gives the same batch again)
    noise = gan.noise.get_state()
    loss_g = gan.g_step()["loss_g"]
    gan.noise.set_state(noise)
    with torch.no_grad():
        adv = D(G(gan.sample_z(4))).adv
    expected = 0.5 * torch.nn.functional.softplus(-adv).mean() + 0.5
    assert loss_g.item() == pytest.approx(expected.item(), rel=1e-6)


def test_plugin_options_are_typed_and_typos_are_named():
    with pytest.raises(ConfigError, match="extras.feature_matchin is not a plug-in "
                                          r"\(did you mean 'feature_matching'\?\)"):
        resolve_options({"feature_matchin": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="extras.feature_matching.wieght is not an option of "
                                          r"feature_matching \(did you mean 'weight'\?\)"):
        resolve_options({"feature_matching": {"wieght": 1.0}})
    defaults = resolve_options({})
    assert sorted(defaults) == sorted(EXTRAS)
    assert build_extras({}) == []  # every plug-in is off by default


def test_extras_group_options_switch_plugins_on(make_cfg):
    cfg = make_cfg("extras=[minibatch_discrimination,feature_matching]")
    check(cfg)
    names = [e.name for e in build_extras(cfg.extras)]
    assert names == ["feature_matching", "minibatch_discrimination"]
    assert (cfg.extras.minibatch_discrimination.kernels, cfg.extras.feature_matching.weight
            ) == (50, 1.0)  # Salimans et al. 2016's sizes
