"""Feature extraction cost per image: the domain classifier against Inception-v3, in one run.

Times, in one process, ``extract_features`` on the first N Fashion-MNIST test images
(28x28, in [-1, 1]) for each network at its default batch size, median of repeats after a
warm-up, and prints milliseconds per image and the ratio Inception / domain.

Usage::

    python bench/features.py                   # N = 100, torch's default threads
    python bench/features.py --num 50 --threads 1

Timings are printed, never asserted: only the ratio measured in one run means much.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdit.data import load_dataset  # noqa: E402
from sdit.heap import retain_freed_memory  # noqa: E402
from sdit.quality.features import extract_features, load_domain, load_inception  # noqa: E402


def ms_per_image(network: object, images: torch.Tensor, repeats: int) -> float:
    """Median milliseconds per image of ``extract_features(network, images)``, after one warm-up call."""
    extract_features(network, images[: min(len(images), 8)])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        extract_features(network, images)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times) / len(images)


def main() -> None:
    retain_freed_memory()  # as the sdit command does (sdit/heap.py; SDIT_HEAP_RETAIN=0: glibc's defaults)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=100, help="Images per timed call.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images = load_dataset("fashion-mnist", "test").images[: args.num]  # (N, 1, 28, 28)
    domain, inception = load_domain(), load_inception()
    d = ms_per_image(domain, images, args.repeats)
    i = ms_per_image(inception, images, args.repeats)
    print(f"{args.num} images, {torch.get_num_threads()} threads, float32, median of {args.repeats}")
    print(f"domain classifier ({domain.dim}-d, batch {domain.batch_size}): {d:.3f} ms per image")
    print(f"Inception-v3 ({inception.dim}-d, batch {inception.batch_size}, 299x299): {i:.1f} ms per image")
    print(f"ratio Inception / domain: {i / d:.0f}x")


if __name__ == "__main__":
    main()
