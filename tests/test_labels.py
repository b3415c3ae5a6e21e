"""Label modes (tutorial §4.1): the heads and extra cost terms against values worked out by
hand, partly labelled data, every mode training end to end, and the config rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganlab.config import ConfigError
from ganlab.configure import check
from ganlab.data import UNLABELLED, build_data
from ganlab.labels import (
    LABEL_MODES,
    AdvHead,
    AuxiliaryHead,
    KPlusOne,
    KPlusOneHead,
    LabelMode,
    ProjectionHead,
)
from ganlab.losses import GANLoss
from ganlab.train import run
from tests.helpers import build_nets_for, write_fake_fashion

LN2, LN3 = math.log(2.0), math.log(3.0)
CPU = torch.device("cpu")
TINY = ["train.steps=2", "train.batch_size=8", "eval.num_samples=64", "eval.grid_size=16"]
# small nets and no image metrics (eval.features=none) keep the image runs fast
SMALL_DCGAN = ["model.g_width=8", "model.d_width=8", "model.z_dim=8", "eval.features=none"]


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))


def _family(family: str, root) -> list[str]:
    if family == "mlp":
        return ["data=ring8", "model=mlp"]
    return ["data=fashion_mnist", "model=dcgan", f"data.root={root}", "data.download=false",
            *SMALL_DCGAN]


def _identity_head(head_cls, k: int):
    """A head whose linear layers pass h through: its class logits are h itself."""
    head = head_cls(k, k)
    with torch.no_grad():
        head.classify.weight.copy_(torch.eye(k))
        head.classify.bias.zero_()
    return head


def test_mode_registry():
    assert UNLABELLED == -1
    assert sorted(LABEL_MODES) == ["auxiliary", "conditional", "kplus1", "none"]
    flags = {name: (m.conditional_g, m.conditional_d, m.head) for name, m in LABEL_MODES.items()}
    assert all(isinstance(m(), LabelMode) for m in LABEL_MODES.values())
    assert flags == {"none": (False, False, AdvHead),
                     "conditional": (True, True, ProjectionHead),
                     "auxiliary": (True, False, AuxiliaryHead),
                     "kplus1": (False, False, KPlusOneHead)}


@pytest.mark.parametrize("mode, has_cls", [("none", False), ("conditional", False),
                                           ("auxiliary", True), ("kplus1", True)])
def test_head_output_shapes(mode, has_cls):
    torch.manual_seed(0)
    head = LABEL_MODES[mode].head(6, 4)
    adv, cls = head(torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0]))
    assert adv.shape == (5,)
    assert (cls.shape == (5, 4)) if has_cls else (cls is None)


@pytest.mark.parametrize("mode", ["none", "conditional"])
def test_modes_without_extra_terms(mode):
    m = LABEL_MODES[mode]()
    cls, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    assert m.d_terms(None, y, None, y) == {} and m.d_terms(cls, y, cls, y) == {}
    assert m.g_terms(None, y) == {} and m.g_terms(cls, y) == {}


# -- kplus1 -----------------------------------------------------------------------------------

def test_kplus1_adv_logit_is_log_z():
    # l = (0, ln 2, ln 3): Z = 1 + 2 + 3 = 6, so D(x) = Z / (Z + 1) = 6/7.
    # l = (0, 0, 0): Z = 3, D = 3/4.  l = -ln 2 everywhere: Z = 3/2, D = 3/5.
    head = _identity_head(KPlusOneHead, 3)
    h = torch.tensor([[0.0, LN2, LN3], [0.0, 0.0, 0.0], [-LN2, -LN2, -LN2]])
    adv, cls = head(h, None)
    torch.testing.assert_close(cls, h)
    torch.testing.assert_close(adv, torch.tensor([math.log(6), math.log(3), math.log(1.5)]))
    torch.testing.assert_close(torch.sigmoid(adv), torch.tensor([6 / 7, 3 / 4, 3 / 5]))


def test_kplus1_d_cost_by_hand():
    head = _identity_head(KPlusOneHead, 3)
    real = torch.tensor([[0.0, LN2, LN3],   # Z = 6, label 2: p(2 | real) = 3/6
                         [0.0, 0.0, 0.0],   # Z = 3, unlabelled
                         [math.log(4), 0.0, 0.0]])  # Z = 6, label 0: p(0 | real) = 4/6
    y_real = torch.tensor([2, UNLABELLED, 0])
    fake = torch.tensor([[0.0, 0.0, 0.0],   # Z = 3: D = 3/4
                         [-LN2, -LN2, -LN2]])  # Z = 3/2: D = 3/5
    adv_real, cls_real = head(real, None)
    adv_fake, cls_fake = head(fake, None)

    gan = GANLoss(real_target=1.0, fake_target=0.0).d_loss(adv_real, adv_fake)
    real_part = -(math.log(6 / 7) + math.log(3 / 4) + math.log(6 / 7)) / 3
    fake_part = -(math.log(1 - 3 / 4) + math.log(1 - 3 / 5)) / 2
    assert gan.total.item() == pytest.approx(0.5 * (real_part + fake_part), rel=1e-6)

    terms = KPlusOne().d_terms(cls_real, y_real, cls_fake, None)
    assert list(terms) == ["loss_d_class_real"]
    # labelled rows only: (-log 1/2 - log 2/3) / 2 = (ln 2 + ln 1.5) / 2 = ln 3 / 2, weighted
    # 1/2 like each side of the GAN cost (class_weight 1)
    assert terms["loss_d_class_real"].item() == pytest.approx(LN3 / 4, rel=1e-6)
    total = gan.total + sum(terms.values())
    assert total.item() == pytest.approx(0.5 * (real_part + fake_part) + LN3 / 4, rel=1e-6)
    # class_weight scales the class term and nothing else
    heavy = KPlusOne(class_weight=3.0).d_terms(cls_real, y_real, cls_fake, None)
    assert heavy["loss_d_class_real"].item() == pytest.approx(3 * LN3 / 4, rel=1e-6)
    assert KPlusOne().g_terms(cls_fake, None) == {}  # G's cost is the GAN cost alone


def test_kplus1_class_term_ignores_unlabelled_rows():
    cls = torch.tensor([[1.0, 2.0, 3.0], [3.0, -1.0, 0.5], [0.0, 0.0, 5.0]])
    m = KPlusOne(class_weight=2.0)  # side weight 1: the plain mean cross-entropy
    none = m.d_terms(cls, torch.full((3,), UNLABELLED), None, None)["loss_d_class_real"]
    assert none.item() == 0.0
    # the unlabelled rows' logits do not matter: change them, same value
    y = torch.tensor([UNLABELLED, 1, UNLABELLED])
    one = m.d_terms(cls, y, None, None)["loss_d_class_real"]
    assert one.item() == pytest.approx(F.cross_entropy(cls[1:2], y[1:2]).item(), rel=1e-6)
    cls2 = cls.clone()
    cls2[[0, 2]] = torch.tensor([9.0, -9.0, 0.0])
    assert m.d_terms(cls2, y, None, None)["loss_d_class_real"].item() == pytest.approx(
        one.item(), rel=1e-6)


def test_kplus1_is_the_k_plus_one_class_cross_entropy():
    # With the fake class's logit fixed at 0, the (K+1)-way cross-entropy splits in two:
    # -log(exp(l_y) / (Z + 1)) = CE_K(l, y) + softplus(-logsumexp l)
    # e.g. l = (0, ln 2, ln 3), y = 2: ln(7/3) = ln 2 + ln(7/6).
    head = _identity_head(KPlusOneHead, 3)
    real = torch.tensor([[0.0, LN2, LN3], [1.5, -0.5, 0.25], [-2.0, 0.3, 1.0]])
    y_real = torch.tensor([2, 0, 1])
    fake = torch.tensor([[0.2, -1.0, 0.7], [-3.0, 2.0, 0.0]])
    adv_real, cls_real = head(real, None)
    adv_fake, cls_fake = head(fake, None)

    lhs = -math.log(3 / 7)
    assert lhs == pytest.approx(math.log(2) + math.log(7 / 6))
    ce = KPlusOne(2.0).d_terms(cls_real[:1], y_real[:1], None, None)["loss_d_class_real"]
    assert (ce + F.softplus(-adv_real[0])).item() == pytest.approx(lhs, rel=1e-6)

    # the same over a batch: the (K+1)-way cross-entropy computed in the test with a zero
    # column for the fake class, targets y on real and K ("fake") on generated samples
    def with_fake_column(logits):
        return torch.cat([logits, torch.zeros(len(logits), 1)], dim=1)

    ce_real = F.cross_entropy(with_fake_column(real), y_real)
    ce_fake = F.cross_entropy(with_fake_column(fake), torch.full((2,), 3))
    gan = GANLoss(1.0, 0.0).d_loss(adv_real, adv_fake)
    terms = KPlusOne(2.0).d_terms(cls_real, y_real, cls_fake, None)
    torch.testing.assert_close(gan.parts["loss_d_real"] + terms["loss_d_class_real"], ce_real)
    torch.testing.assert_close(gan.parts["loss_d_fake"], ce_fake)
    # and with the default class_weight 1, D's whole cost is the (K+1)-way cross-entropy
    # averaged over its two sides: Salimans et al.'s L_supervised + L_unsupervised, halved
    terms = KPlusOne().d_terms(cls_real, y_real, cls_fake, None)
    torch.testing.assert_close(gan.total + terms["loss_d_class_real"], (ce_real + ce_fake) / 2)


# -- auxiliary and conditional -------------------------------------------------------------

def test_auxiliary_terms_are_k_way_cross_entropies():
    torch.manual_seed(1)
    real_cls, fake_cls = torch.randn(4, 5), torch.randn(4, 5)
    y_real, y_fake = torch.tensor([0, 4, 2, 2]), torch.tensor([1, 1, 3, 0])
    m = LABEL_MODES["auxiliary"](class_weight=2.0)  # side weight 1: plain cross-entropies
    d = m.d_terms(real_cls, y_real, fake_cls, y_fake)
    g = m.g_terms(fake_cls, y_fake)
    assert sorted(d) == ["loss_d_class_fake", "loss_d_class_real"] and list(g) == ["loss_g_class"]

    def ce(logits, y):  # -log softmax(l)_y, averaged, written out
        return (torch.logsumexp(logits, 1) - logits[torch.arange(len(y)), y]).mean()

    torch.testing.assert_close(d["loss_d_class_real"], ce(real_cls, y_real))
    torch.testing.assert_close(d["loss_d_class_fake"], ce(fake_cls, y_fake))
    torch.testing.assert_close(g["loss_g_class"], F.cross_entropy(fake_cls, y_fake))
    # the default class_weight 1 gives each side's cross-entropy the GAN cost's 1/2:
    # AC-GAN's L_S + L_C with equal weights
    default = LABEL_MODES["auxiliary"]()
    for name, value in default.d_terms(real_cls, y_real, fake_cls, y_fake).items():
        torch.testing.assert_close(value, d[name] / 2)
    torch.testing.assert_close(default.g_terms(fake_cls, y_fake)["loss_g_class"],
                               g["loss_g_class"] / 2)
    # one by hand: logits (0, ln 2, ln 3), label 1 -> -log(2/6) = ln 3
    one = m.g_terms(torch.tensor([[0.0, LN2, LN3]]), torch.tensor([1]))["loss_g_class"]
    assert one.item() == pytest.approx(LN3, rel=1e-6)


def test_auxiliary_head_by_hand():
    head = _identity_head(AuxiliaryHead, 2)
    with torch.no_grad():
        head.adv.weight.copy_(torch.tensor([[2.0, -1.0]]))
        head.adv.bias.fill_(0.5)
    adv, cls = head(torch.tensor([[1.0, 3.0], [-1.0, 0.0]]), None)
    torch.testing.assert_close(adv, torch.tensor([-0.5, -1.5]))
    torch.testing.assert_close(cls, torch.tensor([[1.0, 3.0], [-1.0, 0.0]]))


def test_projection_head_by_hand():
    # logit = w.h + b + <embed(y), h>
    # row 0: h = (1, 2), y = 2: 1 - 4 + 0.5 + (2*1 + 3*2) = 5.5
    # row 1: h = (3, -1), y = 0: 3 + 2 + 0.5 + (1*3 + 0*-1) = 8.5
    head = ProjectionHead(2, 3)
    with torch.no_grad():
        head.adv.weight.copy_(torch.tensor([[1.0, -2.0]]))
        head.adv.bias.fill_(0.5)
        head.embed.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]]))
    adv, cls = head(torch.tensor([[1.0, 2.0], [3.0, -1.0]]), torch.tensor([2, 0]))
    torch.testing.assert_close(adv, torch.tensor([5.5, 8.5]))
    assert cls is None


@pytest.mark.parametrize("mode", ["conditional", "auxiliary"])
def test_conditional_g_and_d_see_the_label(make_cfg, mode):
    cfg = make_cfg("data=ring8", "model=mlp", f"labels={mode}")
    data = build_data(cfg.data, 0, CPU)
    torch.manual_seed(0)
    G, D = build_nets_for(cfg, data)
    z = torch.randn(6, cfg.model.z_dim)
    y0, y1 = torch.zeros(6, dtype=torch.long), torch.full((6,), 3)
    with torch.no_grad():
        # G takes one-hot y concatenated to z: its first layer is z_dim + K wide
        assert G.body.net[0].in_features == cfg.model.z_dim + data.num_classes
        assert (G(z, y0) - G(z, y1)).abs().min() > 0
        x, _ = data.sample(6)
        adv0 = D(x, y0).adv
        adv1 = D(x, y1).adv
    if mode == "conditional":  # the projection head sees y
        assert (adv0 - adv1).abs().min() > 0
    else:  # AC-GAN's D does not take y; its classifier predicts it
        torch.testing.assert_close(adv0, adv1)


# -- partly labelled data ------------------------------------------------------------------

def test_ring8_keeps_about_the_fraction_of_labels(make_cfg):
    cfg = make_cfg("data=ring8", "model=mlp")
    full = build_data(cfg.data, 3, CPU)
    part = build_data(cfg.data, 3, CPU, label_fraction=0.25)
    # the first batch is drawn before the hiding coin flips: same points, same true labels
    x_full, y_full = full.sample(4000)
    x_part, y_part = part.sample(4000)
    assert torch.equal(x_full, x_part)
    kept = y_part != UNLABELLED
    assert torch.equal(y_part[kept], y_full[kept])
    assert abs(kept.float().mean().item() - 0.25) < 0.03  # > 4 binomial stds
    assert set(y_part.unique().tolist()) == {UNLABELLED, *range(8)}
    _, y_more = part.sample(4000)  # each batch flips its own coins
    assert abs((y_more != UNLABELLED).float().mean().item() - 0.25) < 0.03


def test_fashion_keeps_a_fixed_set_of_labelled_images(make_cfg, tmp_path):
    n = 256
    root = write_fake_fashion(tmp_path, n=n, seed=0)
    cfg = make_cfg(*_family("dcgan", root))
    # the labels write_fake_fashion wrote: its rng draws the training images, then the labels
    rng = np.random.default_rng(0)
    rng.integers(0, 256, (n, 28, 28))
    true_labels = torch.from_numpy(rng.integers(0, 10, n))

    data = build_data(cfg.data, 5, CPU, label_fraction=0.3)
    kept = data.labels != UNLABELLED
    assert int(kept.sum()) == round(0.3 * n) == 77
    assert torch.equal(data.labels[kept], true_labels[kept])
    assert torch.equal(data.true_labels, true_labels)

    # over several epochs every image comes back with the same label (or the same -1)
    index = {img.tobytes(): i for i, img in enumerate(data.images.numpy())}
    seen: dict[int, int] = {}
    for _ in range(3 * n // 64):
        x, y = data.sample(64)
        as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8).numpy()
        for img, label in zip(as_uint8, y.tolist(), strict=True):
            i = index[img.tobytes()]
            assert seen.setdefault(i, label) == label
    assert len(seen) == n
    assert sum(label != UNLABELLED for label in seen.values()) == 77

    # the labelled subset is fixed by the seed
    again = build_data(cfg.data, 5, CPU, label_fraction=0.3)
    other = build_data(cfg.data, 6, CPU, label_fraction=0.3)
    assert torch.equal(again.labels, data.labels)
    assert not torch.equal(other.labels != UNLABELLED, kept)


# -- training end to end ---------------------------------------------------------------------

EXTRA_TERMS = {"none": set(), "conditional": set(),
               "auxiliary": {"train/loss_d_class_real", "train/loss_d_class_fake",
                             "train/loss_g_class"},
               "kplus1": {"train/loss_d_class_real"}}


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
@pytest.mark.parametrize("mode, fraction", [("none", 1.0), ("conditional", 1.0),
                                            ("auxiliary", 1.0), ("kplus1", 1.0),
                                            ("kplus1", 0.25)])
def test_every_label_mode_trains(make_cfg, fashion_root, tmp_path, family, mode, fraction):
    cfg = make_cfg(*_family(family, fashion_root), f"labels={mode}",
                   f"labels.fraction={fraction}", *TINY)
    result = run(cfg, tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result["step"] == 2
    assert result["trick"]["labels.name"] == mode
    assert result["trick"]["labels.fraction"] == fraction
    assert result["comparability"]["labels"] == ("none" if mode == "none" else "labelled")
    class_terms = {k for k in result["metrics"] if k.startswith("train/") and "class" in k}
    assert class_terms == EXTRA_TERMS[mode]
    assert all(math.isfinite(result["metrics"][k]) for k in class_terms)


# -- config rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, fragments", [
    (["labels=conditional", "labels.fraction=0.5"],
     ["labels.fraction=0.5", "labels='conditional'"]),
    (["labels=auxiliary", "labels.fraction=0.5"], ["labels.fraction=0.5", "'auxiliary'"]),
    (["labels=none", "labels.fraction=0.5"], ["labels.fraction=0.5", "'none'"]),
    (["labels=kplus1", "labels.fraction=0"], ["labels.fraction=0", "(0, 1]"]),
    (["labels=kplus1", "labels.fraction=1.5"], ["labels.fraction=1.5", "(0, 1]"]),
    (["labels=conditional", "data.num_classes=0"],
     ["labels='conditional'", "data.num_classes=0"]),
])
def test_label_rules(make_cfg, overrides, fragments):
    cfg = make_cfg("data=ring8", "model=mlp", *overrides)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_kplus1_accepts_partial_labels(make_cfg):
    check(make_cfg("labels=kplus1", "labels.fraction=0.25"))
    check(make_cfg("labels=kplus1", "labels.fraction=1.0"))
