"""How labels enter the game (`labels=`; tutorial §4.1): the LABEL_MODES registry.

A mode decides whether G is conditioned on y, builds D's output head on top of D's features,
and adds its own terms to D's and G's costs. D's head returns `(adv_logits, class_logits)`:
`adv_logits` (N,) feed the GAN loss (and smoothing); `class_logits` (N, K) or None.

- none: unconditional G and D.
- conditional: G sees y (one-hot y concatenated to z: it works for both model families
  and leaves the norm layers free for the norm axis); D sees y by projection (Miyato &
  Koyama 2018: logit = w.h + <embed(y), h>), the standard way to condition a D.
- auxiliary (AC-GAN, Odena et al. 2017): G sees y; D has a K-way classifier head beside its
  real/fake logit, trained on real and generated images; G also minimises the class loss.
- kplus1 (Salimans et al. 2016 §5): D has K logits, the fake class's logit fixed at 0, so
  D(x) = Z/(Z+1) with Z = sum_k exp(l_k), i.e. the real/fake logit is logsumexp(l). Real
  images that carry a label also get the K-way cross-entropy. G is unconditional, as in the
  paper, which makes the semi-supervised case (`labels.fraction` < 1) work.

Class terms are weighted like the adversarial ones: the GAN cost gives each side (real,
fake) a factor 1/2 (ganlab.losses), so each side's cross-entropy gets
`labels.class_weight` x 1/2. The default 1 weighs the two kinds of term equally, as
AC-GAN's L_S + L_C and Salimans et al.'s L_supervised + L_unsupervised do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.data import UNLABELLED
from ganlab.registry import Registry


class AdvHead(nn.Module):
    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.adv = nn.Linear(features, 1)

    def forward(self, h, y):
        return self.adv(h).squeeze(1), None


class ProjectionHead(AdvHead):
    def __init__(self, features: int, num_classes: int):
        super().__init__(features, num_classes)
        self.embed = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, h, y):
        return self.adv(h).squeeze(1) + (self.embed(y) * h).sum(dim=1), None


class AuxiliaryHead(AdvHead):
    def __init__(self, features: int, num_classes: int):
        super().__init__(features, num_classes)
        self.classify = nn.Linear(features, num_classes)

    def forward(self, h, y):
        return self.adv(h).squeeze(1), self.classify(h)


class KPlusOneHead(nn.Module):
    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.classify = nn.Linear(features, num_classes)

    def forward(self, h, y):
        logits = self.classify(h)
        # log Z = logsumexp(l): sigmoid(log Z) = Z / (Z + 1) with the fake logit fixed at 0
        return torch.logsumexp(logits, dim=1), logits


LABEL_MODES: Registry[type[LabelMode]] = Registry("labels")


@LABEL_MODES.register("none")
class LabelMode:
    uses_labels = False  # trained with labels: compared with labelled runs only (§4.1)
    partial_labels = False  # can train on partly labelled data (labels.fraction < 1)
    conditional_g = False  # G takes y
    conditional_d = False  # D's head takes y
    head: type[nn.Module] = AdvHead

    def __init__(self, class_weight: float = 1.0):
        self.side_weight = 0.5 * class_weight  # per side (real, fake), as the GAN cost's 1/2

    def d_terms(self, real_cls, y_real, fake_cls, y_fake) -> dict[str, torch.Tensor]:
        """Extra terms of D's cost (summed into it), by name."""
        return {}

    def g_terms(self, fake_cls, y_fake) -> dict[str, torch.Tensor]:
        """Extra terms of G's cost (summed into it), by name."""
        return {}


@LABEL_MODES.register("conditional")
class Conditional(LabelMode):
    uses_labels = True
    conditional_g = True
    conditional_d = True
    head = ProjectionHead


@LABEL_MODES.register("auxiliary")
class Auxiliary(LabelMode):
    uses_labels = True
    conditional_g = True
    head = AuxiliaryHead

    def d_terms(self, real_cls, y_real, fake_cls, y_fake):
        return {"loss_d_class_real": self.side_weight * F.cross_entropy(real_cls, y_real),
                "loss_d_class_fake": self.side_weight * F.cross_entropy(fake_cls, y_fake)}

    def g_terms(self, fake_cls, y_fake):
        return {"loss_g_class": self.side_weight * F.cross_entropy(fake_cls, y_fake)}


@LABEL_MODES.register("kplus1")
class KPlusOne(LabelMode):
    uses_labels = True
    partial_labels = True
    head = KPlusOneHead

    def d_terms(self, real_cls, y_real, fake_cls, y_fake):
        # Mean cross-entropy over the real samples that carry a label (no device sync).
        labelled = (y_real != UNLABELLED).float()
        ce = F.cross_entropy(real_cls, y_real.clamp_min(0), reduction="none")
        return {"loss_d_class_real":
                self.side_weight * (ce * labelled).sum() / labelled.sum().clamp_min(1.0)}
