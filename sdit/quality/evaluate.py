"""The quality study: sample a model, extract features, compare with a reference set.

:func:`compare` is pure (feature arrays in, numbers out); :func:`evaluate` runs the model
(:func:`sdit.sharding.draw_set`: one process or many under ``torchrun``) and the feature networks.
The CLI (`sdit evaluate`) only parses flags, calls :func:`evaluate` and prints / writes its record.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sdit import distributed, progress
from sdit.noise import NOISE
from sdit.quality.features import FeatureNetwork, extract_features
from sdit.quality.metrics import fid, kid, prdc
from sdit.quality.reference import ReferenceSet, reference_features
from sdit.sharding import ShardStore, draw_set
from sdit.workload import Workload

FORMAT = "sdit-evaluate/1"
UNITS = {
    "fid": "squared distance in the feature space (Frechet, Gaussians fitted to each set); lower is better",
    "kid": "unbiased MMD^2, cubic polynomial kernel (x.y/d + 1)^3, mean over disjoint subsets (x1, not x1000); "
           "lower is better",
    "kid_standard_error": "standard error of kid over its subsets (same unit)",
    "precision": "fraction of samples inside the k-NN ball of some real image (fidelity)",
    "recall": "fraction of real images inside the k-NN ball of some sample (diversity)",
    "density": "mean count of real k-NN balls holding a sample, over k (fidelity; 1 for matching sets)",
    "coverage": "fraction of real k-NN balls holding at least one sample (diversity)",
}


# Below this many samples a result carries a warning (docs/quality.md, "Small N"): FID's bias and the spread of
# every metric over sample sets are then of the order of the differences between the shipped models.
MEANINGFUL_N = 1000
DEFAULT_KID_SUBSETS = 10  # at N >= 20; fewer at smaller N (default_kid_subsets)
DEFAULT_NEAREST_K = 5  # at N >= 6; fewer at smaller N (default_nearest_k)


def default_kid_subsets(num: int) -> int:
    """KID's disjoint subsets at N samples when not given: 10, or as many as hold 2 samples each below N = 20."""
    return max(1, min(DEFAULT_KID_SUBSETS, num // 2))


def default_nearest_k(num: int) -> int:
    """k of precision / recall / density / coverage at N samples when not given: 5, or N - 1 below N = 6."""
    return max(1, min(DEFAULT_NEAREST_K, num - 1))


def small_n_warning(num: int) -> str | None:
    """The warning a result of ``num`` samples carries below :data:`MEANINGFUL_N`, else ``None``."""
    if num >= MEANINGFUL_N:
        return None
    return (f"N = {num} samples, fewer than {MEANINGFUL_N:,}: FID is biased upwards and every figure varies with "
            "the sample set by about as much as the shipped models differ; compare only results of equal N and "
            f"take N >= {MEANINGFUL_N:,} for a result (docs/quality.md)")


# A sampler overshoots [-1, 1] a little (the features clamp as a PNG would: samples_out_of_range records how
# much); a value beyond this bound is no image in [-1, 1] but one scaled otherwise (0..255, x1000).
RANGE_BOUND = 1.5


def range_warning(samples: Tensor) -> str | None:
    """The warning for samples with values beyond +-:data:`RANGE_BOUND` (not images in [-1, 1]), else ``None``."""
    low, high = float(samples.min()), float(samples.max())
    if -RANGE_BOUND <= low and high <= RANGE_BOUND:
        return None
    outside = float(((samples < -1) | (samples > 1)).float().mean())
    return (f"the samples are no images in [-1, 1]: values from {low:.4g} to {high:.4g}, {outside:.2%} of them "
            "outside [-1, 1], where the feature networks clamp them; images scaled otherwise (0..255, x1000) give "
            "meaningless figures")


def sampler_description(workload: Workload) -> str:
    """``"ddim, 50 steps, eta 1"``, ``"ddpm, 1000 steps"`` or ``"respaced ddpm, 250 steps, learned variance"``:
    the sampler as an evaluation record (format :data:`FORMAT`) and `sdit sample` name it."""
    if workload.kind == "ddim":
        return f"ddim, {workload.steps} steps, eta {workload.eta:g}"
    if workload.kind == "ddpm":
        return f"ddpm, {workload.steps} steps"
    return f"respaced ddpm, {workload.steps} steps, learned variance"


def compare(real: np.ndarray, fake: np.ndarray, kid_subsets: int = 10, nearest_k: int = 5,
            seed: int = 0) -> dict[str, Any]:
    """Every metric of (N_fake, d) ``fake`` against (N_real, d) ``real`` features.

    FID and KID use all real features. Precision / recall / density / coverage compare sets
    of equal size, as their definitions assume: ``min(N_real, N_fake)`` of each, drawn with ``seed``.
    """
    k = kid(real, fake, num_subsets=kid_subsets, seed=seed)
    size = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    real_sub = real[np.sort(rng.choice(len(real), size, replace=False))] if size < len(real) else real
    fake_sub = fake[np.sort(rng.choice(len(fake), size, replace=False))] if size < len(fake) else fake
    p = prdc(real_sub, fake_sub, nearest_k=nearest_k)
    return {"fid": fid(real, fake), "kid": k.kid, "kid_standard_error": k.standard_error,
            "kid_subsets": k.num_subsets, "kid_subset_sizes": {"real": k.real_subset_size, "fake": k.fake_subset_size},
            "precision": p.precision, "recall": p.recall, "density": p.density, "coverage": p.coverage,
            "nearest_k": p.nearest_k, "prdc_set_size": size}


def sharded_features(network: FeatureNetwork, images: Tensor, ctx: distributed.DistContext | None = None) -> np.ndarray:
    """:func:`extract_features` of (N, C, H, W) ``images``, its batches shared among the ranks of ``ctx``.

    Batch j ([j b, (j + 1) b) of the network's batch size b) runs on rank j mod W, as the same forward as
    one process runs, so the (N, d) features are bit for bit those of :func:`extract_features`. Every rank
    holds ``images``; every rank gets the features.
    """
    ctx = ctx or distributed.DistContext()
    if not ctx.distributed:
        return extract_features(network, images)
    size = network.batch_size
    mine = {start: extract_features(network, images[start:start + size])
            for start in range(ctx.rank * size, len(images), ctx.world_size * size)}
    parts = {start: features for part in distributed.all_gather_objects(ctx, mine) for start, features in part.items()}
    return np.concatenate([parts[start] for start in sorted(parts)])


def measure(samples: Tensor, networks: list[FeatureNetwork], reference: ReferenceSet, kid_subsets: int = 10,
            nearest_k: int = 5, seed: int = 0, use_cache: bool = True,
            ctx: distributed.DistContext | None = None) -> dict[str, dict[str, Any]]:
    """Metrics of (N, C, H, W) ``samples`` against ``reference`` under each network, keyed by ``network.kind``.

    Each entry holds the network's description (with sha256), the metrics of :func:`compare`,
    the reference cache record, the seconds spent on the samples' features and the sha256 of those
    (N, d) float32 features (equal runs have equal features, bit for bit). Under ``torchrun``
    (``ctx`` of several ranks) the samples' features are shared out (:func:`sharded_features`) and
    rank 0 alone reads the reference and computes the metrics; the other ranks return ``{}``.

    Raises:
        ValueError: the samples' channels differ from the reference set's, or a metric's input is unusable.
    """
    ctx = ctx or distributed.DistContext()
    if samples.shape[1] != reference.images.shape[1]:
        raise ValueError(f"the samples have {samples.shape[1]} channels, the reference set "
                         f"({reference.dataset}) has {reference.images.shape[1]}")
    results = {}
    for network in networks:
        start = time.perf_counter()
        with progress.task(f"{network.kind} features of {len(samples)} samples", None):
            fake = sharded_features(network, samples, ctx)
        feature_s = time.perf_counter() - start
        if not ctx.is_main:
            continue
        with progress.task(f"{network.kind} features of the reference set", None):
            ref, cache = reference_features(network, reference, use_cache=use_cache)
        results[network.kind] = {
            "feature_network": network.describe(), **compare(ref, fake, kid_subsets, nearest_k, seed),
            "reference_cache": cache, "feature_seconds": feature_s,
            "feature_ms_per_image": 1e3 * feature_s / len(samples),
            "sample_features_sha256": hashlib.sha256(np.ascontiguousarray(fake).tobytes()).hexdigest()}
    return results


def sampler_record(workload: Workload) -> dict[str, Any]:
    """The JSON record of a sampling workload."""
    return {"method": workload.kind, "steps": workload.steps, "eta": workload.eta, "seed": workload.seed,
            "batch_size": workload.batch_size, "noise": NOISE, "description": sampler_description(workload)}


def evaluate(model: nn.Module, networks: list[FeatureNetwork], reference: ReferenceSet, num: int, workload: Workload,
             kid_subsets: int = 10, nearest_k: int = 5, use_cache: bool = True,
             device: torch.device | str = "cpu", ctx: distributed.DistContext | None = None,
             store: ShardStore | None = None,
             window: Callable[[int], AbstractContextManager[object]] | None = None) -> tuple[dict[str, Any], Tensor]:
    """Sample ``num`` images of ``workload`` (:func:`sdit.sharding.draw_set`: per-image noise, batches shared
    among the ranks of ``ctx``, kept in ``store``, each rank's drawing inside ``window``) and :func:`measure`
    them with each network; the KID and PRDC subsets are drawn with the workload's seed.

    Returns:
        A JSON-ready record (format, N, sampler, reference set, per-network results, units, sampling
        seconds, batches taken from ``store``; rank 0's, the other ranks get one without results) and
        the (N, C, H, W) samples (on every rank).

    Raises:
        ValueError: the model's images do not match the reference set's channels, the workload is a forward,
            or a metric's input is unusable.
    """
    cfg = model.config
    if cfg.in_channels != reference.images.shape[1]:
        raise ValueError(f"the model makes {cfg.in_channels}-channel images, the reference set "
                         f"({reference.dataset}) has {reference.images.shape[1]} channels")
    if not workload.is_sampling:
        raise ValueError(f"{workload.label()} draws no images; evaluate a sampling workload")
    model.eval()
    start = time.perf_counter()
    samples, reused = draw_set(model, num, workload, device, ctx, store, window=window)
    sampling_s = time.perf_counter() - start
    results = measure(samples, networks, reference, kid_subsets, nearest_k, workload.seed, use_cache, ctx)
    out = record(samples, sampler_record(workload), reference, results, sampling_s)
    world = (ctx or distributed.DistContext()).world_size
    return {**out, "processes": world, "reused_batches": reused}, samples


def record(samples: Tensor, sampler: dict[str, Any], reference: ReferenceSet, results: dict[str, Any],
           sampling_s: float | None) -> dict[str, Any]:
    """The evaluation record around :func:`measure`'s results; ``warnings``: what makes its figures weak (too few
    samples, values outside [-1, 1]), one line each, empty when none."""
    warnings = [w for w in (small_n_warning(len(samples)), range_warning(samples)) if w]
    return {
        "format": FORMAT,
        "num_samples": len(samples),
        "sampler": sampler,
        "reference": reference.describe(),
        "results": results,
        "units": UNITS,
        "sampling_seconds": sampling_s,
        "samples_out_of_range": float(((samples < -1) | (samples > 1)).float().mean()),
        "warnings": warnings,
    }
