"""The GAN game's costs, all in logits and all with one interface (`GANLoss`): a loss declares
whether D's cost takes the smoothing targets (`uses_targets`), and gives D's cost
(`d_loss(real_logits, fake_logits)`) and G's (`g_loss(fake_logits)`). The config check
refuses `smoothing=` with a loss whose D cost would ignore it.

D's cost here is the tutorial's cross-entropy with targets (Eq. 8 with one-sided/two-sided
smoothing, §4.2):

    J(D) = -1/2 E_x[t_r log D(x) + (1 - t_r) log(1 - D(x))]
           -1/2 E_z[t_f log D(G(z)) + (1 - t_f) log(1 - D(G(z)))]

with t_r = `real_target` (1 - alpha) and t_f = `fake_target` (beta). G's cost is the loss's
own (§3.2.3), with l = σ⁻¹(D(G(z))) the logit of D on a sample:

- `minimax`: J(G) = -J(D) in G's terms = 1/2 E log(1 - D(G(z))) = -1/2 E softplus(l)
- `non_saturating`: J(G) = -1/2 E log D(G(z)) = 1/2 E softplus(-l)
- `maximum_likelihood`: J(G) = -1/2 E exp(σ⁻¹(D(G(z)))) = -1/2 E exp(l) (with D optimal,
  minimising it minimises KL(data || G): the maximum-likelihood game)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ganlab.registry import Registry


@dataclass
class LossTerms:
    total: torch.Tensor  # the scalar to minimise
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # detached, for logging


class GANLoss:
    """Base: D's cost with targets; subclasses define G's cost."""

    # whether D's cost takes the smoothing targets (smoothing.real_target / fake_target)
    uses_targets = True

    def __init__(self, real_target: float = 1.0, fake_target: float = 0.0):
        self.real_target = real_target
        self.fake_target = fake_target
        self._targets: dict = {}  # constant target tensors, made once per shape

    def _target(self, logits: torch.Tensor, value: float) -> torch.Tensor:
        key = (value, logits.shape, logits.dtype, logits.device)
        if key not in self._targets:
            # a factory, not full_like: under vmap (ganlab.vectorize) `logits` is one seed's
            # view of a stack, and the cached target must not hold that view
            self._targets[key] = torch.full(logits.shape, value, dtype=logits.dtype,
                                            device=logits.device)
        return self._targets[key]

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossTerms:
        real = F.binary_cross_entropy_with_logits(
            real_logits, self._target(real_logits, self.real_target))
        fake = F.binary_cross_entropy_with_logits(
            fake_logits, self._target(fake_logits, self.fake_target))
        total = 0.5 * (real + fake)
        return LossTerms(total, {"loss_d_real": real.detach(), "loss_d_fake": fake.detach()})

    def g_loss(self, fake_logits: torch.Tensor) -> LossTerms:
        raise NotImplementedError


LOSSES: Registry[type[GANLoss]] = Registry("loss")


@LOSSES.register("minimax")
class Minimax(GANLoss):
    """G minimises 1/2 E log(1 - D(G(z))) = -1/2 E softplus(l): the zero-sum game."""

    def g_loss(self, fake_logits: torch.Tensor) -> LossTerms:
        return LossTerms(-0.5 * F.softplus(fake_logits).mean())


@LOSSES.register("non_saturating")
class NonSaturating(GANLoss):
    """G minimises -1/2 E log D(G(z)) = 1/2 E softplus(-l): the heuristic game."""

    def g_loss(self, fake_logits: torch.Tensor) -> LossTerms:
        return LossTerms(0.5 * F.softplus(-fake_logits).mean())


@LOSSES.register("maximum_likelihood")
class MaximumLikelihood(GANLoss):
    """G minimises -1/2 E exp(σ⁻¹(D(G(z)))) = -1/2 E exp(l): the maximum-likelihood game
    (§3.2.3). Its gradient is large where D is sure a sample is real and vanishes where D
    rejects it, the opposite of the non-saturating cost."""

    def g_loss(self, fake_logits: torch.Tensor) -> LossTerms:
        return LossTerms(-0.5 * torch.exp(fake_logits).mean())


def build_loss(name: str, real_target: float, fake_target: float) -> GANLoss:
    return LOSSES.choose(name)(real_target, fake_target)
