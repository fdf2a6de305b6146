"""Distances between a real and a generated feature set: pure functions over (N, d) arrays.

Everything is computed in float64 with numpy; nothing here knows about images or torch.

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two sets,
  ``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``, covariances with ``N - 1``.
- KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over disjoint subsets, with its
  standard error over those subsets.
- Precision, recall, density, coverage (Naeem et al. 2020; precision / recall as in
  Kynkaanniemi et al. 2019): k-nearest-neighbour balls around each sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_CHUNK = 1024  # rows of a distance matrix held at once


@dataclass(frozen=True)
class FeatureStats:
    """Mean (d,) and covariance (d, d) of a feature set, and how many samples gave them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


@dataclass(frozen=True)
class KidResult:
    """KID: mean of the per-subset unbiased MMD^2, its standard error, and how it was split.

    ``standard_error`` is the sample standard deviation of the subset estimates over
    sqrt(``num_subsets``); the subsets are disjoint, so the estimates are independent.
    """

    kid: float
    standard_error: float
    num_subsets: int
    real_subset_size: int
    fake_subset_size: int


@dataclass(frozen=True)
class PRDC:
    """Precision, recall, density and coverage at ``nearest_k`` neighbours (fractions; density may exceed 1)."""

    precision: float
    recall: float
    density: float
    coverage: float
    nearest_k: int


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected an (N, d) feature array with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return x


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Mean and unbiased covariance (``N - 1``) of (N, d) features."""
    x = _as_features(features, "features")
    return FeatureStats(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], -1),
                        count=x.shape[0])


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues to 0)."""
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S1 S2)^(1/2))`` for covariance matrices S1, S2.

    S1 S2 is similar to ``S1^(1/2) S2 S1^(1/2)``, which is symmetric PSD, so the trace of the
    principal square root is the sum of the square roots of that matrix's eigenvalues. Unlike
    a general ``sqrtm`` this stays real and exact for singular covariances (N < d).
    """
    root1 = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    inner = root1 @ np.asarray(sigma2, dtype=np.float64) @ root1
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))``."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    if mu1.shape != mu2.shape or np.shape(sigma1) != np.shape(sigma2) or np.shape(sigma1) != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma "
                         f"{np.shape(sigma1)} / {np.shape(sigma2)}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))  # round-off can leave -1e-12 for identical sets


def fid(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats) -> float:
    """FID between two feature sets (or their precomputed :class:`FeatureStats`)."""
    a = real if isinstance(real, FeatureStats) else feature_stats(real)
    b = fake if isinstance(fake, FeatureStats) else feature_stats(fake)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel ``(x.y / d + 1)^3`` between the rows of (m, d) ``x`` and (n, d) ``y`` -> (m, n)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with :func:`polynomial_kernel` (diagonals of the within-set sums left out)."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kid(real: np.ndarray, fake: np.ndarray, num_subsets: int = 10, seed: int = 0) -> KidResult:
    """KID over ``num_subsets`` disjoint subsets of each set (shuffled with ``seed``, sizes as even as possible).

    Each subset pair gives an unbiased MMD^2 estimate; their mean is the KID, and with two or
    more subsets their standard error is reported (NaN for one subset). With ``num_subsets=1``
    it is the unbiased MMD^2 of the whole sets.
    """
    x, y = _as_features(real, "real"), _as_features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: real {x.shape[1]}, fake {y.shape[1]}")
    if num_subsets < 1 or min(x.shape[0], y.shape[0]) < 2 * num_subsets:
        raise ValueError(f"need at least 2 samples per subset: {x.shape[0]} real and {y.shape[0]} fake "
                         f"samples for {num_subsets} subsets")
    rng = np.random.default_rng(seed)
    xs = np.array_split(x[rng.permutation(x.shape[0])], num_subsets)
    ys = np.array_split(y[rng.permutation(y.shape[0])], num_subsets)
    values = np.array([mmd2_unbiased(a, b) for a, b in zip(xs, ys, strict=True)])
    se = float(values.std(ddof=1) / math.sqrt(num_subsets)) if num_subsets > 1 else math.nan
    return KidResult(kid=float(values.mean()), standard_error=se, num_subsets=num_subsets,
                     real_subset_size=x.shape[0] // num_subsets, fake_subset_size=y.shape[0] // num_subsets)


def _distance_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of (m, d) ``a`` and (n, d) ``b`` -> (m, n)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row -> (N,)."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"nearest_k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} samples, got {k}")
    radii = np.empty(x.shape[0])
    for start in range(0, x.shape[0], _CHUNK):
        d = _distance_rows(x[start : start + _CHUNK], x)  # (chunk, N)
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = 0.0  # the point itself: index 0 of the sorted row
        radii[start : start + len(d)] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(real: np.ndarray, fake: np.ndarray, nearest_k: int = 5) -> PRDC:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (Naeem et al. 2020, Eq. 1-4).

    A sample's ball has the radius of its ``nearest_k``-th nearest neighbour in its own set.
    Precision: fraction of fake samples inside some real ball. Recall: fraction of real samples
    inside some fake ball. Density: mean number of real balls holding a fake sample, over k.
    Coverage: fraction of real balls holding at least one fake sample. Use sets of equal size.
    """
    x, y = _as_features(real, "real"), _as_features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: real {x.shape[1]}, fake {y.shape[1]}")
    real_r, fake_r = kth_neighbour_radii(x, nearest_k), kth_neighbour_radii(y, nearest_k)
    in_real_balls = np.zeros(y.shape[0], dtype=np.int64)  # per fake sample: how many real balls hold it
    real_covered = np.zeros(x.shape[0], dtype=bool)  # per real sample: its ball holds a fake sample
    real_recalled = np.zeros(x.shape[0], dtype=bool)  # per real sample: inside some fake ball
    for start in range(0, x.shape[0], _CHUNK):
        d = _distance_rows(x[start : start + _CHUNK], y)  # (chunk of real, fake)
        inside = d <= real_r[start : start + len(d), None]
        in_real_balls += inside.sum(0)
        real_covered[start : start + len(d)] = inside.any(1)
        real_recalled[start : start + len(d)] = (d <= fake_r[None, :]).any(1)
    return PRDC(precision=float((in_real_balls > 0).mean()), recall=float(real_recalled.mean()),
                density=float(in_real_balls.sum() / (nearest_k * y.shape[0])), coverage=float(real_covered.mean()),
                nearest_k=nearest_k)
