"""Feature matching (Salimans et al. 2016 §3.1).

G is asked to match the statistics of real data on an intermediate layer f of D (here D's
trunk, the features its head reads): the term weight * ||E_x f(x) - E_z f(G(z))||_2^2 is
added to G's cost, with both expectations taken over the update's batches. The real
features are computed with the current D on a fresh real batch, as constants for G.
The paper uses this as G's whole objective; here it is added to G's own loss, so that the
other tricks keep acting on G (set a large weight to let it dominate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ganlab.extras import EXTRAS, Extra


@dataclass
class Options:
    weight: float = 0.0  # of ||E f(x) - E f(G(z))||^2 in G's cost (0: off)


@EXTRAS.register("feature_matching")
class FeatureMatching(Extra):
    Options = Options
    g_reads_real = True

    def g_terms(self, step) -> dict[str, torch.Tensor]:
        real = step.real().features.detach().mean(dim=0)
        fake = step.fake.features.mean(dim=0)
        return {"loss_g_feature_matching": self.options.weight * ((real - fake) ** 2).sum()}
