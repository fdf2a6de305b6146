"""FID, KID and precision / recall / density / coverage against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from sdit.quality.evaluate import compare
from sdit.quality.metrics import (
    feature_stats,
    fid,
    frechet_distance,
    kid,
    kth_neighbour_radii,
    mmd2_unbiased,
    prdc,
    trace_sqrt_product,
)


def _features(seed: int, n: int = 300, d: int = 16, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / math.sqrt(d)
    return shift + scale * rng.normal(size=(n, d)) @ mixing


def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _mmd2_direct(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 written out as its three double sums, one kernel value at a time."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_fid_of_a_set_against_itself_is_zero() -> None:
    a = _features(0)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)
    few = _features(1, n=10, d=32)  # N < d: singular covariance, still exactly 0
    assert fid(few, few) == pytest.approx(0.0, abs=1e-9)


def test_fid_equals_scipy_sqrtm() -> None:
    a, b = _features(0), _features(1, shift=0.3, scale=1.5)
    expected = _fid_scipy(a, b)
    assert expected > 1.0
    assert fid(a, b) == pytest.approx(expected, rel=1e-9)
    assert fid(b, a) == pytest.approx(expected, rel=1e-9)  # symmetric


def test_frechet_distance_of_known_gaussians() -> None:
    # Diagonal covariances: Tr((S1 S2)^1/2) = sum sqrt(s1 s2); FID = |dmu|^2 + sum (sqrt s1 - sqrt s2)^2.
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    value = frechet_distance(np.zeros(3), s1, np.array([1.0, 2.0, 0.0]), s2)
    assert value == pytest.approx(5.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2, rel=1e-12)
    assert trace_sqrt_product(s1, s2) == pytest.approx(2 + 4 + 3, rel=1e-12)


def test_feature_stats_use_unbiased_covariance() -> None:
    a = _features(2, n=50, d=4)
    stats = feature_stats(a)
    centred = a - a.mean(0)
    np.testing.assert_allclose(stats.sigma, centred.T @ centred / 49, rtol=1e-12)
    assert fid(stats, a) == pytest.approx(0.0, abs=1e-9)


def test_kid_equals_direct_formula() -> None:
    x, y = _features(3, n=40, d=8), _features(4, n=30, d=8, shift=0.5)
    expected = _mmd2_direct(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)
    whole = kid(x, y, num_subsets=1)
    assert whole.kid == pytest.approx(expected, rel=1e-10)
    assert math.isnan(whole.standard_error)


def test_kid_subsets_are_disjoint_and_give_a_standard_error() -> None:
    x, y = _features(5, n=60, d=8), _features(6, n=40, d=8, shift=0.5)
    result = kid(x, y, num_subsets=4, seed=7)
    rng = np.random.default_rng(7)
    xs = np.array_split(x[rng.permutation(60)], 4)
    ys = np.array_split(y[rng.permutation(40)], 4)
    values = np.array([_mmd2_direct(a, b) for a, b in zip(xs, ys, strict=True)])
    assert result.kid == pytest.approx(values.mean(), rel=1e-10)
    assert result.standard_error == pytest.approx(values.std(ddof=1) / 2, rel=1e-10)
    assert (result.real_subset_size, result.fake_subset_size) == (15, 10)


def test_kid_of_identical_distributions_is_near_zero_and_unbiased() -> None:
    # Over many pairs of draws from one distribution the estimates average to 0 (a biased
    # estimator such as the V-statistic would stay clearly above).
    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(16, 16)) / 4
    values = [kid(*np.split(rng.normal(size=(400, 16)) @ mixing, 2), num_subsets=5, seed=s).kid for s in range(100)]
    assert abs(np.mean(values)) < 3 * np.std(values, ddof=1) / 10
    x = rng.normal(size=(200, 16)) @ mixing
    assert kid(x, x + 1.0).kid > 0.1


def _prdc_direct(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    dist = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (R, F)
    rr = np.sort(np.linalg.norm(real[:, None] - real[None], axis=-1), axis=1)[:, k]
    ff = np.sort(np.linalg.norm(fake[:, None] - fake[None], axis=-1), axis=1)[:, k]
    precision = np.mean([any(dist[i, j] <= rr[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(dist[i, j] <= ff[j] for j in range(len(fake))) for i in range(len(real))])
    density = sum(dist[i, j] <= rr[i] for i in range(len(real)) for j in range(len(fake))) / (k * len(fake))
    coverage = np.mean([dist[i].min() <= rr[i] for i in range(len(real))])
    return precision, recall, density, coverage


def test_prdc_equals_direct_computation() -> None:
    real, fake = _features(10, n=80, d=5), _features(11, n=70, d=5, shift=0.4, scale=0.7)
    got = prdc(real, fake, nearest_k=3)
    expected = _prdc_direct(real, fake, 3)
    assert (got.precision, got.recall, got.density, got.coverage) == pytest.approx(expected, rel=1e-12)
    assert 0 < got.precision < 1 and 0 < got.recall < 1


def test_prdc_of_a_set_against_itself() -> None:
    a = _features(12, n=100, d=6)
    got = prdc(a, a, nearest_k=5)
    assert (got.precision, got.recall, got.coverage) == (1.0, 1.0, 1.0)
    # Each point lies in its own ball and in those of the points that count it among their 5 nearest.
    assert got.density == pytest.approx(1.2, abs=0.25)


def test_kth_neighbour_radii_over_chunks() -> None:
    a = _features(13, n=2100, d=3)  # more rows than one chunk
    radii = kth_neighbour_radii(a, 2)
    full = np.sort(np.linalg.norm(a[:5, None] - a[None], axis=-1), axis=1)[:, 2]
    np.testing.assert_allclose(radii[:5], full, rtol=1e-10)
    last = np.sort(np.linalg.norm(a[-3:, None] - a[None], axis=-1), axis=1)[:, 2]
    np.testing.assert_allclose(radii[-3:], last, rtol=1e-10)


def test_compare_uses_equal_sets_for_prdc() -> None:
    real, fake = _features(14, n=200), _features(15, n=50)
    out = compare(real, fake, kid_subsets=5, nearest_k=3)
    assert out["prdc_set_size"] == 50
    assert out["fid"] == pytest.approx(_fid_scipy(real, fake), rel=1e-9)
    assert out["kid_subset_sizes"] == {"real": 40, "fake": 10}


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        fid(np.full((4, 2), np.nan), np.ones((4, 2)))
    with pytest.raises(ValueError, match="dimensions differ"):
        kid(np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match="2 samples per subset"):
        kid(np.ones((10, 2)), np.ones((5, 2)), num_subsets=3)
    with pytest.raises(ValueError, match="nearest_k"):
        prdc(np.ones((4, 2)), np.ones((4, 2)), nearest_k=4)
