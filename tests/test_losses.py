"""The GAN costs against values worked out by hand with math.log.

Logits 0, ln 3 and -ln 3 have sigmoids 1/2, 3/4 and 1/4, so every cross-entropy below is a
sum of logs of simple fractions.
"""

from __future__ import annotations

import math

import pytest
import torch

from ganlab.config import ConfigError
from ganlab.losses import LOSSES, GANLoss, MaximumLikelihood, Minimax, NonSaturating, build_loss

LN3 = math.log(3.0)


def bce(p: float, t: float) -> float:
    """Cross-entropy of target t against probability p, written out."""
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


# D sees real logits (ln 3, 0) -> D(x) = (3/4, 1/2) and fake logits (0, -ln 3) -> (1/2, 1/4).
REAL_LOGITS = (LN3, 0.0)
REAL_PROBS = (0.75, 0.5)
FAKE_LOGITS = (0.0, -LN3)
FAKE_PROBS = (0.5, 0.25)


def test_build_loss_refuses_an_unknown_game_naming_the_choices():
    with pytest.raises(ConfigError, match="loss='wasserstein' is not allowed; choose one of: "
                                          + ", ".join(LOSSES)):
        build_loss("wasserstein", 1.0, 0.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_build_loss_passes_the_targets(name):
    loss = build_loss(name, 0.9, 0.1)
    assert isinstance(loss, LOSSES[name])
    assert (loss.real_target, loss.fake_target) == (0.9, 0.1)


def test_unsmoothed_d_loss_closed_form():
    # Targets (1, 0): each half is (log 2 + log 4/3) / 2, so the total is log(8/3) / 2.
    terms = GANLoss().d_loss(torch.tensor(REAL_LOGITS), torch.tensor(FAKE_LOGITS))
    assert terms.total.item() == pytest.approx(0.5 * math.log(8 / 3), rel=1e-6)
    assert terms.parts["loss_d_real"].item() == pytest.approx(0.5 * math.log(8 / 3), rel=1e-6)
    assert terms.parts["loss_d_fake"].item() == pytest.approx(0.5 * math.log(8 / 3), rel=1e-6)


@pytest.mark.parametrize("real_target, fake_target", [(1.0, 0.0), (0.9, 0.0), (0.9, 0.1)])
@pytest.mark.parametrize("name", sorted(n for n, kind in LOSSES.items() if kind.uses_targets))
def test_d_loss_with_targets(name, real_target, fake_target):
    loss = build_loss(name, real_target, fake_target)
    terms = loss.d_loss(torch.tensor(REAL_LOGITS), torch.tensor(FAKE_LOGITS))
    real = sum(bce(p, real_target) for p in REAL_PROBS) / 2
    fake = sum(bce(p, fake_target) for p in FAKE_PROBS) / 2
    assert terms.parts["loss_d_real"].item() == pytest.approx(real, rel=1e-6)
    assert terms.parts["loss_d_fake"].item() == pytest.approx(fake, rel=1e-6)
    assert terms.total.item() == pytest.approx(0.5 * (real + fake), rel=1e-6)
    # the logged parts are detached; the total carries the graph
    assert not terms.parts["loss_d_real"].requires_grad


def test_d_loss_gradient_follows_the_smoothed_targets():
    # d/dl BCE(l, t) = sigmoid(l) - t; one logit per side, times the 1/2 in front.
    loss = build_loss("non_saturating", 0.9, 0.1)
    real = torch.tensor([0.0], requires_grad=True)
    fake = torch.tensor([LN3], requires_grad=True)
    loss.d_loss(real, fake).total.backward()
    assert real.grad.item() == pytest.approx(0.5 * (0.5 - 0.9), rel=1e-6)
    assert fake.grad.item() == pytest.approx(0.5 * (0.75 - 0.1), rel=1e-6)


def test_minimax_g_loss():
    # 1/2 E log(1 - D(G(z))) with D = (1/2, 3/4): 1/2 * (log 1/2 + log 1/4) / 2 = -3/4 log 2
    g = Minimax().g_loss(torch.tensor([0.0, LN3])).total.item()
    assert g == pytest.approx(0.5 * (math.log(0.5) + math.log(0.25)) / 2, rel=1e-6)
    assert g == pytest.approx(-0.75 * math.log(2), rel=1e-6)


def test_non_saturating_g_loss():
    # -1/2 E log D(G(z)) with D = (1/2, 3/4): 1/4 (log 2 + log 4/3) = 1/4 log(8/3)
    g = NonSaturating().g_loss(torch.tensor([0.0, LN3])).total.item()
    assert g == pytest.approx(-0.5 * (math.log(0.5) + math.log(0.75)) / 2, rel=1e-6)
    assert g == pytest.approx(0.25 * math.log(8 / 3), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_g_loss_ignores_smoothing(name):
    # Smoothing shapes D's targets only (tutorial §4.2); G's cost must not move with it.
    logits = torch.tensor([0.0, LN3, -2.0])
    plain = build_loss(name, 1.0, 0.0).g_loss(logits).total
    smoothed = build_loss(name, 0.9, 0.1).g_loss(logits).total
    assert plain.item() == smoothed.item()


def _g_grad(loss: GANLoss, logit: float) -> float:
    x = torch.tensor([logit], requires_grad=True)
    loss.g_loss(x).total.backward()
    return x.grad.item()


def test_minimax_saturates_where_non_saturating_does_not():
    """Tutorial §3.2.3: when D confidently rejects a sample (logit -20), minimax G's gradient
    vanishes, -1/2 sigmoid(l), while the non-saturating one stays near -1/2 (1 - sigmoid(l))."""
    mm = _g_grad(Minimax(), -20.0)
    ns = _g_grad(NonSaturating(), -20.0)
    assert mm == pytest.approx(-0.5 / (1 + math.exp(20)), rel=1e-4)
    assert abs(mm) < 1e-8
    assert ns == pytest.approx(-0.5, abs=1e-8)
    # both push the logit up, i.e. towards "real"
    assert mm < 0 and ns < 0


def test_both_g_gradients_agree_at_even_odds():
    # at sigmoid(l) = 1/2 both gradients are -1/4
    assert _g_grad(Minimax(), 0.0) == pytest.approx(-0.25, rel=1e-6)
    assert _g_grad(NonSaturating(), 0.0) == pytest.approx(-0.25, rel=1e-6)


def test_extreme_logits_stay_finite_and_correct():
    big = torch.tensor([100.0, -100.0], requires_grad=True)
    loss = GANLoss(0.9, 0.1)
    d = loss.d_loss(big, big.flip(0)).total
    mm = Minimax().g_loss(big).total
    ns = NonSaturating().g_loss(big).total
    for value in (d, mm, ns):
        assert torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, big)
        assert torch.isfinite(grad).all()
    # BCE(l, t) = softplus(l) - t*l, so BCE(100, t) = 100(1 - t) and BCE(-100, t) = 100 t
    # (up to e^-100). Real side: (10 + 90)/2 = 50; fake side (-100, 100): (10 + 90)/2 = 50.
    assert d.item() == pytest.approx(50.0, rel=1e-5)
    # minimax: -1/2 mean(softplus) = -1/2 * (100 + 0)/2
    assert mm.item() == pytest.approx(-25.0, rel=1e-6)
    # non-saturating: 1/2 mean(softplus(-l)) = 1/2 * (0 + 100)/2
    assert ns.item() == pytest.approx(25.0, rel=1e-6)


def test_confident_correct_d_has_near_zero_loss():
    terms = GANLoss().d_loss(torch.tensor([100.0]), torch.tensor([-100.0]))
    assert 0.0 <= terms.total.item() < 1e-30


def test_maximum_likelihood_g_loss_is_the_tutorials_formula():
    # J(G) = -1/2 E exp(σ⁻¹(D(G(z)))): with D = (1/2, 3/4), exp(σ⁻¹(D)) = D / (1 - D) = (1, 3),
    # so J = -1/2 (1 + 3) / 2 = -1
    g = MaximumLikelihood().g_loss(torch.tensor([0.0, LN3])).total.item()
    assert g == pytest.approx(-1.0, rel=1e-6)


@pytest.mark.parametrize("logit", [-20.0, -LN3, 0.0, LN3, 5.0])
def test_maximum_likelihood_gradient_matches_the_formula_in_d(logit):
    # the tutorial writes the cost in D; autograd through D = σ(l) must give the same
    # gradient as the loss in logits: dJ/dl = -1/2 exp(l)
    x = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
    d = torch.sigmoid(x)
    (-0.5 * (d / (1 - d)).mean()).backward()
    from_d = x.grad.item()
    ml = _g_grad(MaximumLikelihood(), logit)
    assert ml == pytest.approx(-0.5 * math.exp(logit), rel=1e-5)
    assert ml == pytest.approx(from_d, rel=1e-5)


def test_maximum_likelihood_pushes_hardest_where_d_accepts():
    # §3.2.3: its gradient vanishes where D rejects a sample (unlike the non-saturating cost)
    assert abs(_g_grad(MaximumLikelihood(), -20.0)) < 1e-8
    assert _g_grad(MaximumLikelihood(), 5.0) < _g_grad(NonSaturating(), 5.0) < 0


def test_smoothing_is_refused_with_a_loss_whose_d_cost_takes_no_targets(make_cfg,
                                                                       monkeypatch):
    from ganlab.configure import check

    class NoTargets(Minimax):
        uses_targets = False

    monkeypatch.setitem(LOSSES, "minimax", NoTargets)
    with pytest.raises(ConfigError, match=r"smoothing.real_target=0.9, smoothing.fake_target=0.0 "
                                          r"is not allowed with loss=minimax: its D cost takes "
                                          r"no targets"):
        check(make_cfg("loss=minimax", "smoothing=one_sided"))
    check(make_cfg("loss=minimax"))  # unsmoothed: fine
