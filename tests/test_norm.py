"""Normalisation layers (tutorial §4.3): reference and virtual batch norm against formulas
written out with plain torch ops, and their defining property inside the built networks: a
sample's output does not depend on the other members of its minibatch (batch norm's does)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from ganlab.config import ConfigError
from ganlab.configure import compose
from ganlab.data import build_data
from ganlab.nets.norm import (
    NORMS,
    ReferenceBatch,
    ReferenceNorm,
    RefStatsNorm,
    VirtualNorm,
    needs_reference,
    norm_layer,
)
from tests.helpers import build_nets_for, write_fake_fashion

EPS = 1e-5  # RefStatsNorm's default eps
REFERENCE_NORMS = [name for name, spec in NORMS.items() if spec.reference]
BATCH = 12
REF_N = 16
SMALL = ["model.g_width=16", "model.d_width=16", "model.z_dim=8", f"norm.ref_batch_size={REF_N}"]


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))


@functools.cache  # composing is slow; the tests only read the configs
def _cfg(family: str, root, *overrides: str):
    base = ["logger=none", "train.device=cpu", "train.progress=false", *SMALL]
    if family == "mlp":
        return compose(base + ["data=ring8", "model=mlp", *overrides])
    return compose(base + ["data=fashion_mnist", "model=dcgan", f"data.root={root}",
                           "data.download=false", *overrides])


def _build(family: str, root, norm: str, ref_seed: int = 0, data_seed: int = 0):
    cfg = _cfg(family, root, f"norm.g={norm}", f"norm.d={norm}")
    data = build_data(cfg.data, data_seed, torch.device("cpu"))
    torch.manual_seed(0)
    G, D = build_nets_for(cfg, data, ref_seed)
    return cfg, data, G, D


class _Apply(nn.Module):
    """A one-layer "network" with the (x, y) signature ReferenceBatch calls."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x, y=None):
        return self.layer(x)


# -- one layer against its formula ------------------------------------------------------------

def test_registry_builds_the_documented_layers():
    assert isinstance(norm_layer("none", 3, False), nn.Identity)
    assert isinstance(norm_layer("batch", 3, False), nn.BatchNorm1d)
    assert isinstance(norm_layer("batch", 3, True), nn.BatchNorm2d)
    assert type(norm_layer("reference", 3, True)) is ReferenceNorm
    assert type(norm_layer("virtual", 3, False)) is VirtualNorm
    for name, spec in NORMS.items():  # every registered norm builds, flat and spatial
        for spatial in (False, True):
            assert isinstance(norm_layer(name, 3, spatial), nn.Module)
        assert needs_reference(name) is spec.reference
    assert needs_reference("reference") and needs_reference("virtual")
    assert not needs_reference("batch")
    with pytest.raises(ConfigError, match="norm='nonesuch' is not allowed; choose one of: "
                                          + ", ".join(NORMS)):
        norm_layer("nonesuch", 3, False)


def test_reference_and_virtual_norm_by_hand():
    # Reference batch (1, 3): mean 2, biased variance 1. A sample x = 4:
    # reference: (4 - 2) / 1 = 2.
    # virtual (N = 2): mu = 4/3 + 2*2/3 = 8/3, E[x^2] = 16/3 + 2*5/3 = 26/3,
    #   var = 26/3 - 64/9 = 14/9, so (4 - 8/3) / sqrt(14/9) = 4 / sqrt(14).
    ref = torch.tensor([[1.0], [3.0]])
    x = torch.tensor([[4.0]])
    out_ref = ReferenceBatch(_Apply(ReferenceNorm(1, spatial=False)), ref)(x)
    out_vbn = ReferenceBatch(_Apply(VirtualNorm(1, spatial=False)), ref)(x)
    assert out_ref.item() == pytest.approx(2.0 / (1.0 + EPS) ** 0.5, rel=1e-6)
    assert out_vbn.item() == pytest.approx(4.0 / (14.0 + 9 * EPS) ** 0.5, rel=1e-6)


def _set_affine(layer: RefStatsNorm, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = torch.linspace(0.5, 2.0, c), torch.linspace(-0.3, 0.4, c)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    return w, b


@pytest.mark.parametrize("spatial", [False, True], ids=["dense", "spatial"])
def test_reference_norm_matches_formula(spatial):
    torch.manual_seed(1)
    c = 3
    shape = (c, 4, 5) if spatial else (c,)
    ref = torch.randn(7, *shape) * 2 + 1
    x = torch.randn(5, *shape) * 3 - 1
    layer = ReferenceNorm(c, spatial)
    w, b = _set_affine(layer, c)
    out = ReferenceBatch(_Apply(layer), ref)(x)

    dims = (0, 2, 3) if spatial else (0,)
    mu = ref.mean(dim=dims)
    var = ref.var(dim=dims, unbiased=False)
    view = (1, c, 1, 1) if spatial else (1, c)
    expected = ((x - mu.view(view)) / torch.sqrt(var.view(view) + EPS)) * w.view(view) \
        + b.view(view)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial", [False, True], ids=["dense", "spatial"])
def test_virtual_norm_matches_formula(spatial):
    torch.manual_seed(2)
    c, n = 3, 7
    shape = (c, 4, 5) if spatial else (c,)
    ref = torch.randn(n, *shape) * 2 + 1
    x = torch.randn(5, *shape) * 3 - 1
    layer = VirtualNorm(c, spatial)
    w, b = _set_affine(layer, c)
    out = ReferenceBatch(_Apply(layer), ref)(x)

    dims = (0, 2, 3) if spatial else (0,)
    mu_ref, sq_ref = ref.mean(dim=dims), (ref * ref).mean(dim=dims)
    for i in range(len(x)):  # one sample at a time, as the formula reads
        xi = x[i]
        own_mu = xi.mean(dim=(1, 2)) if spatial else xi  # own mean over its H, W positions
        own_sq = (xi * xi).mean(dim=(1, 2)) if spatial else xi * xi
        mu = own_mu / (n + 1) + n * mu_ref / (n + 1)
        sq = own_sq / (n + 1) + n * sq_ref / (n + 1)
        var = sq - mu ** 2
        view = (c, 1, 1) if spatial else (c,)
        expected = (xi - mu.view(view)) / torch.sqrt(var.view(view) + EPS) * w.view(view) \
            + b.view(view)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [ReferenceNorm, VirtualNorm])
def test_gradients_flow_through_the_reference_statistics(kind):
    # Linear A -> norm: the reference statistics depend on A, so A's gradient has a part that
    # comes through the reference pass. Recompute everything with plain torch ops, once with
    # the reference statistics in the graph and once detached; the layer must match the first.
    torch.manual_seed(3)
    n, c = 6, 4
    ref, x = torch.randn(n, 3), torch.randn(5, 3)
    coef = torch.randn(5, c)  # a loss without symmetries that could zero a gradient
    net = nn.Sequential(nn.Linear(3, c, bias=False), kind(c, spatial=False))
    _set_affine(net[1], c)
    (ReferenceBatch(_Apply(net), ref)(x) * coef).sum().backward()

    def manual(detach_ref: bool):
        A = net[0].weight.detach().clone().requires_grad_()
        w = net[1].weight.detach().clone().requires_grad_()
        b = net[1].bias.detach().clone().requires_grad_()
        r, h = ref @ A.T, x @ A.T
        mu_ref, sq_ref = r.mean(0), (r * r).mean(0)
        if detach_ref:
            mu_ref, sq_ref = mu_ref.detach(), sq_ref.detach()
        if kind is VirtualNorm:
            mu = h / (n + 1) + n * mu_ref / (n + 1)
            sq = h * h / (n + 1) + n * sq_ref / (n + 1)
        else:
            mu, sq = mu_ref, sq_ref
        out = (h - mu) / torch.sqrt(sq - mu ** 2 + EPS) * w + b
        (out * coef).sum().backward()
        return A.grad, w.grad, b.grad

    A_grad, w_grad, b_grad = manual(detach_ref=False)
    torch.testing.assert_close(net[0].weight.grad, A_grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(net[1].weight.grad, w_grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(net[1].bias.grad, b_grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b_grad, coef.sum(0))  # d/db of sum(coef * (... + b))
    # the check above can tell the two apart: without the reference pass A's gradient differs
    A_detached, _, _ = manual(detach_ref=True)
    assert (A_detached - A_grad).abs().max() > 1e-3


def test_reference_pass_gradient_cancels_an_upstream_shift():
    # norm1 -> norm2, both reference norm. The reference batch leaves norm1 with mean b1, so
    # norm2 subtracts exactly b1 again: the output does not depend on b1, and b1's gradient is
    # 0 only when the main pass (+) and the reference pass (-) both carry gradient.
    torch.manual_seed(4)
    net = nn.Sequential(ReferenceNorm(3, False), ReferenceNorm(3, False))
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([0.7, -1.2, 2.0]))
    out = ReferenceBatch(_Apply(net), torch.randn(8, 3))(torch.randn(4, 3))
    (out * torch.randn(4, 3)).sum().backward()
    assert net[1].bias.grad.abs().min() > 0.1
    torch.testing.assert_close(net[0].bias.grad, torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", [ReferenceNorm, VirtualNorm])
def test_a_channel_far_from_zero_stays_finite(kind):
    # All values are exact in float32; only the one-pass variance loses them.
    ref = torch.tensor([[1000.0], [1000.0], [1000.125]])
    net = nn.Sequential(kind(1, False), kind(1, False))
    out = ReferenceBatch(_Apply(net), ref)(torch.tensor([[999.0], [1000.0], [1001.0]]))
    assert torch.isfinite(out).all(), out


@pytest.mark.parametrize("kind", [ReferenceNorm, VirtualNorm])
def test_without_a_reference_pass_the_layer_refuses(kind):
    layer = kind(3, spatial=False)
    with pytest.raises(RuntimeError, match="ReferenceBatch"):
        layer(torch.randn(2, 3))
    # after a wrapped forward the statistics are dropped again: no stale reference batch
    ReferenceBatch(_Apply(layer), torch.randn(4, 3))(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="ReferenceBatch"):
        layer(torch.randn(2, 3))


def test_reference_batch_needs_a_reference_norm_inside():
    with pytest.raises(AssertionError):
        ReferenceBatch(_Apply(nn.BatchNorm1d(3)), torch.randn(4, 3))


# -- the built networks ------------------------------------------------------------------------

def _g_row0(G, cfg, gen):
    z = torch.randn(BATCH, cfg.model.z_dim, generator=gen)
    z2 = z.clone()
    z2[1:] = torch.randn(BATCH - 1, cfg.model.z_dim, generator=gen)  # new batch-mates
    return G(z)[0], G(z2)[0]


def _d_row0(D, data):
    x, _ = data.sample(BATCH)
    other, _ = data.sample(BATCH)
    x2 = x.clone()
    x2[1:] = other[1:]
    (adv1, cls1, _), (adv2, cls2, _) = D(x), D(x2)
    assert cls1 is None and cls2 is None  # labels=none: no class logits
    assert adv1.shape == (BATCH,)
    return adv1[0], adv2[0]


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_sample_output_and_its_batch_mates(fashion_root, family, norm):
    cfg, data, G, D = _build(family, fashion_root, norm)
    G.train()
    D.train()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        pairs = {"G": _g_row0(G, cfg, gen), "D": _d_row0(D, data)}
    for name, (a, b) in pairs.items():
        if norm == "batch":  # Figure 21: the batch-mates leak into every sample
            assert (a - b).abs().max() > 1e-4, name
        else:
            assert torch.allclose(a, b, atol=1e-6), (name, (a - b).abs().max())


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
@pytest.mark.parametrize("norm", [n for n in NORMS if n != "none"])
def test_train_and_eval_mode(fashion_root, family, norm):
    cfg, data, G, D = _build(family, fashion_root, norm)
    z = torch.randn(BATCH, cfg.model.z_dim, generator=torch.Generator().manual_seed(6))
    x, _ = data.sample(BATCH)
    with torch.no_grad():
        G.train()
        D.train()
        train_out = (G(z), D(x)[0])
        G.eval()
        D.eval()
        eval_out = (G(z), D(x)[0])
    for a, b in zip(train_out, eval_out, strict=True):
        if norm == "batch":  # eval mode uses running statistics, not the batch's
            assert (a - b).abs().max() > 1e-4
        else:  # no running statistics: the same computation in both modes
            assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
@pytest.mark.parametrize("norm", REFERENCE_NORMS)
def test_reference_inputs_are_seeded_buffers(fashion_root, family, norm):
    cfg, data, G, D = _build(family, fashion_root, norm, ref_seed=11)
    _, _, G_same, D_same = _build(family, fashion_root, norm, ref_seed=11)
    _, _, G_other, D_other = _build(family, fashion_root, norm, ref_seed=12)
    for net in (G, D):
        assert isinstance(net, ReferenceBatch)
        assert [k for k in net.state_dict() if "ref_inputs" in k] == ["ref_inputs"]
    # G's reference latents are the first draw of a generator seeded with ref_seed
    expected_z = torch.randn(REF_N, cfg.model.z_dim, generator=torch.Generator().manual_seed(11))
    assert torch.equal(G.state_dict()["ref_inputs"], expected_z)
    assert "ref_labels" not in G.state_dict()  # labels=none: G's reference has no labels
    # D's reference batch is real data, with its true labels
    ref_x = D.state_dict()["ref_inputs"]
    assert ref_x.shape == (REF_N, *data.sample_shape)
    assert D.state_dict()["ref_labels"].shape == (REF_N,)
    if family == "mlp":  # every ring8 point lies within a few stds (0.01) of the unit circle
        assert torch.allclose(ref_x.norm(dim=1), torch.ones(REF_N), atol=0.06)
    else:
        assert ref_x.min() >= -1 and ref_x.max() <= 1
    for a, same, other in ((G, G_same, G_other), (D, D_same, D_other)):
        assert torch.equal(a.ref_inputs, same.ref_inputs)
        assert not torch.allclose(a.ref_inputs, other.ref_inputs)
    # loading a state brings its reference batch along
    G_other.load_state_dict(G.state_dict())
    assert torch.equal(G_other.ref_inputs, G.ref_inputs)


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
@pytest.mark.parametrize("norm", REFERENCE_NORMS)
def test_backward_reaches_every_norm_layer(fashion_root, family, norm):
    cfg, data, G, D = _build(family, fashion_root, norm)
    gen = torch.Generator().manual_seed(7)
    fake = G(torch.randn(BATCH, cfg.model.z_dim, generator=gen))
    (fake * torch.randn(fake.shape, generator=gen)).sum().backward()
    adv = D(data.sample(BATCH)[0]).adv
    (adv * torch.randn(adv.shape, generator=gen)).sum().backward()
    for net in (G, D):
        norms = [m for m in net.modules() if isinstance(m, RefStatsNorm)]
        assert len(norms) == len(net.norms) >= 1
        for m in norms:
            assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
            assert m.bias.grad is not None and m.bias.grad.abs().sum() > 0
