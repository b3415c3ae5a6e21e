"""Mode coverage, high-quality share and reverse KL on constructed sample sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, entropy

from ganlab.data.toy import MIXTURES, grid_modes, ring_modes
from ganlab.evaluate.modes import chance_count, mode_metrics, nearest_modes, uniform_box

RING = ring_modes()
RING_STD = MIXTURES["ring8"][1]  # 0.01
GRID = grid_modes()
GRID_STD = MIXTURES["grid25"][1]  # 0.05


def offset(mode: torch.Tensor, dist: float, angle: float) -> torch.Tensor:
    """A point `dist` away from `mode` in direction `angle`."""
    return mode + dist * torch.tensor([math.cos(angle), math.sin(angle)])


def test_nearest_modes_returns_index_and_distance():
    samples = torch.stack([RING[3], offset(RING[5], 0.02, 1.0)])
    idx, dist = nearest_modes(samples, RING)
    assert idx.tolist() == [3, 5]
    assert dist.tolist() == pytest.approx([0.0, 0.02], abs=1e-6)


def test_every_mode_equally_hit():
    m = mode_metrics(RING.repeat(5, 1), RING, RING_STD)
    assert m["modes_covered"] == 8
    assert m["hq_pct"] == 100.0
    assert m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_full_collapse_onto_one_mode():
    m = mode_metrics(RING[2].repeat(40, 1), RING, RING_STD)
    assert m["modes_covered"] == 1
    assert m["hq_pct"] == 100.0
    # q = (1, 0, ..., 0): KL(q || uniform) = 1 * log(1 / (1/8))
    assert m["reverse_kl"] == pytest.approx(math.log(8), rel=1e-12)


def test_half_and_half_on_two_modes():
    samples = torch.cat([RING[0].repeat(10, 1), RING[1].repeat(10, 1)])
    m = mode_metrics(samples, RING, RING_STD)
    assert m["modes_covered"] == 2
    assert m["hq_pct"] == 100.0
    # q = (1/2, 1/2, 0, ...): 2 * 1/2 * log((1/2) / (1/8)) = log 4
    assert m["reverse_kl"] == pytest.approx(math.log(4), rel=1e-12)


def test_high_quality_boundary_at_three_std():
    # Three samples at 2.9 sigma from modes 0, 1, 2 (high quality), one at 3.1 sigma from
    # mode 3 (not). The low-quality one still counts in the nearest-mode histogram.
    samples = torch.stack([
        offset(RING[0], 2.9 * RING_STD, 0.3),
        offset(RING[1], 2.9 * RING_STD, 2.0),
        offset(RING[2], 2.9 * RING_STD, -1.0),
        offset(RING[3], 3.1 * RING_STD, 0.7),
    ])
    m = mode_metrics(samples, RING, RING_STD, hq_std=3.0)
    assert m["modes_covered"] == 3
    assert m["hq_pct"] == pytest.approx(75.0)
    # four modes hit once each: log(8/4)
    assert m["reverse_kl"] == pytest.approx(math.log(2), rel=1e-9)
    # a looser threshold admits the fourth
    loose = mode_metrics(samples, RING, RING_STD, hq_std=3.2)
    assert (loose["modes_covered"], loose["hq_pct"]) == (4, 100.0)


def test_min_count_threshold():
    # modes 0, 1, 2 get 3, 2, 1 high-quality samples; mode 3 gets 5 far (10 sigma) samples
    samples = torch.cat([
        RING[0].repeat(3, 1), RING[1].repeat(2, 1), RING[2].repeat(1, 1),
        offset(RING[3], 10 * RING_STD, 0.0).repeat(5, 1),
    ])
    covered = [mode_metrics(samples, RING, RING_STD, min_count=k)["modes_covered"]
               for k in (1, 2, 3, 4)]
    assert covered == [3, 2, 1, 0]
    assert mode_metrics(samples, RING, RING_STD)["hq_pct"] == pytest.approx(100 * 6 / 11)


def test_non_finite_rows_are_left_out_of_coverage_and_kl():
    bad = torch.tensor([[math.nan, math.nan], [math.nan, 0.0], [math.inf, 1.0],
                        [-math.inf, -math.inf], [0.0, math.nan]])
    samples = torch.cat([RING, bad, RING])  # 16 good rows, all modes equally hit
    m = mode_metrics(samples, RING, RING_STD)
    assert m["modes_covered"] == 8
    assert m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    # a non-finite sample is not a high-quality one: the share is over every sample drawn
    assert m["hq_pct"] == pytest.approx(100 * 16 / 21)


def test_no_finite_sample_gives_no_kl():
    m = mode_metrics(torch.full((6, 2), math.nan), RING, RING_STD)
    assert m == {"modes_covered": 0, "modes_pacgan": 0, "hq_pct": 0.0, "reverse_kl": None}


def test_grid25():
    m = mode_metrics(GRID.repeat(2, 1), GRID, GRID_STD)
    assert (m["modes_covered"], m["hq_pct"]) == (25, 100.0)
    assert m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    # five modes of one row, one sample each at 2 sigma, plus one at 4 sigma from (0, 0)
    row = [(-4.0, 2.0), (-2.0, 2.0), (0.0, 2.0), (2.0, 2.0), (4.0, 2.0)]
    samples = torch.tensor([(x + 2 * GRID_STD, y) for x, y in row] + [(0.0, 4 * GRID_STD)])
    m = mode_metrics(samples, GRID, GRID_STD)
    # PacGAN's count takes one sample as a mode covered; among 6 points one per mode is
    # what a uniform cloud may leave (p = 7.1e-4 per point and mode, 25 modes): not covered
    assert m["modes_pacgan"] == 5 and m["modes_covered"] == 0
    assert m["hq_pct"] == pytest.approx(100 * 5 / 6)
    # six modes hit once each among 25: log(25/6)
    assert m["reverse_kl"] == pytest.approx(math.log(25 / 6), rel=1e-9)


def test_random_case_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    modes = RING.double().numpy()
    # uneven mode weights and a wide spread, so some samples land between modes
    labels = rng.choice(8, size=3000, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
    samples = modes[labels] + rng.normal(scale=0.05, size=(3000, 2))
    m = mode_metrics(torch.from_numpy(samples), RING, RING_STD, hq_std=3.0, min_count=20)

    dist = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=2)
    nearest, d = dist.argmin(axis=1), dist.min(axis=1)
    hq = d <= 3.0 * RING_STD
    q = np.bincount(nearest, minlength=8) / len(samples)
    assert m["reverse_kl"] == pytest.approx(entropy(q, np.full(8, 1 / 8)), rel=1e-6)
    assert m["hq_pct"] == pytest.approx(100 * hq.mean())
    assert m["modes_covered"] == int((np.bincount(nearest[hq], minlength=8) >= 20).sum())
    # the case is not degenerate: some but not all samples and modes pass
    assert 0 < m["hq_pct"] < 100
    assert 0 < m["modes_covered"] < 8


@pytest.mark.parametrize("name, make", [("grid25", grid_modes), ("ring8", ring_modes)])
def test_uniform_noise_covers_no_mode_though_pacgan_counts_many(name, make):
    modes, std = make(), MIXTURES[name][1]
    lo, hi = uniform_box(modes, 3 * std)
    # the reference box: the modes' bounding box widened by half the closest modes' distance
    half = 1.0 if name == "grid25" else math.sin(math.pi / 8)
    assert lo.tolist() == pytest.approx([float(modes[:, 0].min()) - half] * 2)
    assert hi.tolist() == pytest.approx([float(modes[:, 0].max()) + half] * 2)
    gen = torch.Generator().manual_seed(0)
    covered, pacgan = [], []
    for _ in range(100):
        noise = lo + (hi - lo) * torch.rand(2500, 2, generator=gen, dtype=torch.float64)
        m = mode_metrics(noise, modes, std)
        covered.append(m["modes_covered"])
        pacgan.append(m["modes_pacgan"])
    assert np.mean(covered) <= 0.1 and max(covered) <= 1  # 5 % chance of any mode, by design
    if name == "grid25":  # the audit's finding: 2,500 uniform points "cover" ~21 of 25
        assert 19 <= np.mean(pacgan) <= 23


def test_the_chance_count_is_the_binomial_quantile():
    # grid25: a mode's disc (radius 0.15) is pi 0.0225 / 100 of the [-5, 5]^2 box
    p = math.pi * 0.15 ** 2 / 100
    assert chance_count(2500, GRID, GRID_STD) == int(binom.ppf(1 - 0.05 / 25, 2500, p))
    assert chance_count(2500, GRID, GRID_STD) == 7
    # a trained G with many high-quality samples per mode scores as under PacGAN's rule
    samples = GRID.repeat(20, 1)
    m = mode_metrics(samples, GRID, GRID_STD)
    assert m["modes_covered"] == m["modes_pacgan"] == 25
