"""FID, IS, KID and improved precision/recall on feature tensors, against closed forms and
independent numpy/scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from ganlab.evaluate.image_metrics import fid, inception_score, kid, precision_recall


def _gaussian(rng: np.random.Generator, n: int, mean, cov) -> torch.Tensor:
    return torch.from_numpy(rng.multivariate_normal(mean, cov, size=n))


def scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False, ddof=1), np.cov(y, rowvar=False, ddof=1)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def numpy_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Bińkowski et al. 2018) with k(a, b) = (a.b / d + 1)^3."""
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off_diag - 2 * kxy.sum() / m**2)


def brute_force_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    # index k of each sorted row: index 0 is the point itself
    r_real = np.sort(dist(real, real), axis=1)[:, k]
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    precision = (dist(fake, real) <= r_real[None, :]).any(1).mean()
    recall = (dist(real, fake) <= r_fake[None, :]).any(1).mean()
    return float(precision), float(recall)


def confident_logits(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    return 50.0 * F.one_hot(classes, num_classes).double()


# -- FID --------------------------------------------------------------------------------------
def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(3.0 + rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16)))
    scale = float(np.trace(np.cov(x.numpy(), rowvar=False)))
    assert abs(fid(x, x)) < 1e-6 * scale


def test_fid_between_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(1)
    d, n = 4, 20000
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 0.5]), np.array([1.0, 0.0, -0.5, 2.0])
    a, b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    # a common rotation: S1 and S2 commute, so (S1 S2)^(1/2) = R diag(sqrt(ab)) R^T
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = rot @ np.diag(a) @ rot.T, rot @ np.diag(b) @ rot.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 5.81
    value = fid(_gaussian(rng, n, mu1, s1), _gaussian(rng, n, mu2, s2))
    # sampling error of the means dominates: ~2 |mu1 - mu2| sqrt(tr(S1 + S2) / n) ~ 0.1
    assert value == pytest.approx(expected, rel=0.03)


def test_fid_agrees_with_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    y = 0.5 + rng.normal(size=(250, 16)) @ rng.normal(size=(16, 16))
    assert fid(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(scipy_fid(x, y),
                                                                          rel=1e-6)
    # float32 features are scored in float64, like the float64 ones
    assert fid(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        scipy_fid(x.astype(np.float32), y.astype(np.float32)), rel=1e-6)


# -- Inception score ---------------------------------------------------------------------------
# one split has no spread: torch warns about the std of a single value
@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
def test_is_of_confident_uniform_predictions_is_the_number_of_classes():
    k, n = 5, 1000
    # The splits are drawn from a seed-0 permutation; arrange the classes so that every one
    # of the 10 splits (chunks of the permuted order) holds each class equally often.
    # This also pins the seed: another permutation leaves the splits unbalanced (IS < K).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        perm = torch.randperm(n)
    classes = torch.empty(n, dtype=torch.long)
    classes[perm] = torch.arange(n) % k
    mean, std = inception_score(confident_logits(classes, k))
    assert mean == pytest.approx(k, abs=1e-3)
    assert std == pytest.approx(0.0, abs=1e-3)
    # one split: no permutation to depend on; exp(H(uniform over K)) = K
    assert inception_score(confident_logits(torch.arange(n) % k, k), splits=1)[0] == (
        pytest.approx(k, abs=1e-3))


def test_is_of_a_single_class_output_is_one():
    logits = confident_logits(torch.full((200,), 3), 10)
    mean, std = inception_score(logits)
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
def test_is_matches_an_independent_computation_with_one_split():
    logits = torch.from_numpy(np.random.default_rng(3).normal(size=(400, 7)) * 2)
    p = torch.softmax(logits, 1).numpy()
    marginal = p.mean(0)
    expected = np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean())
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-9)


def test_is_is_seeded_and_leaves_the_global_rng_alone():
    logits = torch.from_numpy(np.random.default_rng(4).normal(size=(500, 10)) * 3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = inception_score(logits)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another global state must not change the score
    assert inception_score(logits) == first
    # the seed argument does pick the splits
    assert inception_score(logits, seed=1) != first


# -- KID ---------------------------------------------------------------------------------------
def test_kid_matches_numpy_unbiased_mmd_on_one_full_subset():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(200, 8)), 0.3 + 1.2 * rng.normal(size=(200, 8))
    # subset_size = n: the single subset is a permutation of everything, and MMD^2 does not
    # depend on the order
    mean, std = kid(torch.from_numpy(x), torch.from_numpy(y), subsets=1, subset_size=200)
    assert mean == pytest.approx(numpy_kid(x, y), rel=1e-6)
    assert std == 0.0


def test_kid_is_unbiased():
    rng = np.random.default_rng(6)
    same = [kid(torch.from_numpy(rng.normal(size=(300, 8))),
                torch.from_numpy(rng.normal(size=(300, 8))), subsets=20, subset_size=100)[0]
            for _ in range(6)]
    x = torch.from_numpy(rng.normal(size=(300, 8)))
    different = kid(x, torch.from_numpy(0.5 + rng.normal(size=(300, 8))), subsets=20,
                    subset_size=100)[0]
    assert different > 0.5
    assert max(abs(v) for v in same) < 0.05 * different
    # the biased (V-statistic) estimate is always > 0; the unbiased one straddles 0
    assert min(same) < 0 < max(same)


def test_kid_is_seeded_and_leaves_the_global_rng_alone():
    rng = np.random.default_rng(7)
    x, y = torch.from_numpy(rng.normal(size=(300, 8))), torch.from_numpy(rng.normal(size=(300, 8)))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = kid(x, y, subsets=10, subset_size=50)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)
    assert kid(x, y, subsets=10, subset_size=50) == first
    assert kid(x, y, subsets=10, subset_size=50, seed=1) != first


def test_kid_subset_size_is_capped_by_the_smaller_set():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(120, 6)), 0.2 + rng.normal(size=(80, 6))
    # subset_size 1000 > both sets: subsets of 80, so the fake side is always everything;
    # with subsets=1 the value is MMD^2 between some 80 real points and all the fake ones
    mean, _ = kid(torch.from_numpy(x), torch.from_numpy(y), subsets=1, subset_size=1000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the draw kid makes under its default seed: real first
        idx = torch.randperm(120)[:80].numpy()
    assert mean == pytest.approx(numpy_kid(x[idx], y), rel=1e-6)


# -- precision / recall --------------------------------------------------------------------------
@pytest.mark.parametrize("k, chunk", [(3, 1000), (3, 7), (5, 16)])
def test_precision_recall_matches_a_brute_force_count(k, chunk):
    rng = np.random.default_rng(9)
    real = rng.normal(size=(60, 5))
    fake = 0.6 + 1.3 * rng.normal(size=(50, 5))
    expected = brute_force_pr(real, fake, k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case that can go wrong
    got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk=chunk)
    # shares are float32 means; one point more or less would move them by 1/60 or 1/50
    assert got == pytest.approx(expected, abs=1e-6)


def test_precision_recall_of_identical_sets_is_one_one():
    x = torch.from_numpy(np.random.default_rng(10).normal(size=(100, 8)))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_precision_recall_of_a_far_away_fake_set_is_zero_zero():
    rng = np.random.default_rng(11)
    real = torch.from_numpy(rng.normal(size=(100, 8)))
    fake = torch.from_numpy(100.0 + rng.normal(size=(100, 8)))
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_of_a_collapsed_fake_set():
    rng = np.random.default_rng(12)
    real = torch.from_numpy(rng.normal(size=(100, 8)))
    # all fake points within 1e-3 of real[0]: inside its ball (radius ~1), while the fake
    # balls are ~1e-3 wide and can hold at most real[0] itself
    fake = real[0] + 1e-4 * torch.from_numpy(rng.normal(size=(100, 8)))
    precision, recall = precision_recall(real, fake)
    assert precision == 1.0
    assert recall <= 1 / len(real)
