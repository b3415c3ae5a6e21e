"""The tutorial's Eq. 15 (§4.2): the optimal discriminator under label smoothing,

    D*(x) = ((1 - alpha) p_data(x) + beta p_model(x)) / (p_data(x) + p_model(x)),

for the fixed pair of 1-D densities p_data = N(0, 1), p_model = N(2, 1) that
`python -m ganlab.dstar` trains D against. Plain arithmetic on numpy arrays or torch tensors
alike: the comparer's report draws it without importing torch.
"""

from __future__ import annotations

import math

P_DATA = (0.0, 1.0)  # mean, std
P_MODEL = (2.0, 1.0)
GRID = (-2.5, 4.5)  # where the densities have mass; outside it D is unconstrained


def normal_pdf(x, mean: float, std: float):
    return math.e ** (-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def analytic_dstar(x, real_target: float, fake_target: float):
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
    return (real_target * pd + fake_target * pm) / (pd + pm)
