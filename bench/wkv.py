"""WKV kernels side by side: the tensor-op token loop (``wkv_python``) and the C++ kernel.

Times, in one run and one process, a no-grad forward and a forward + backward of
each implementation on the WKV input of an sdit-small training batch of 64
(T*B = 256 rows, 2N = 100 tokens with the Reconstruction Token, D = 128), float32,
median of repeats after a warm-up, and prints the ratio python / C++.

Usage::

    python bench/wkv.py                 # torch's default threads
    python bench/wkv.py --threads 1

Timings are printed, never asserted: only the ratio measured in one run means much.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdit.models.wkv import wkv_backend, wkv_python  # noqa: E402
from sdit.models.wkv_ext import wkv_cpu  # noqa: E402


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 100, 128], metavar=("B", "N", "D"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, tokens, dim = args.shape
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(dim, generator=g) - 1, torch.randn(dim, generator=g),
              torch.randn(batch, tokens, dim, generator=g), torch.randn(batch, tokens, dim, generator=g)]
    grad_y = torch.randn(batch, tokens, dim, generator=g)
    leaves = [a.clone().requires_grad_() for a in inputs]

    def forward(fn: Callable[..., torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn(*inputs)

        return run

    def forward_backward(fn: Callable[..., torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            return torch.autograd.grad(fn(*leaves), leaves, grad_y)

        return run

    print(f"(B, N, D) = {tuple(args.shape)}, float32, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}; C++: {wkv_backend('cpu')}")
    print(f"{'pass':<17} {'python ms':>10} {'C++ ms':>8} {'python / C++':>13}")
    for name, wrap in (("forward, no grad", forward), ("forward+backward", forward_backward)):
        slow, fast = median_ms(wrap(wkv_python), args.repeats), median_ms(wrap(wkv_cpu), args.repeats)
        print(f"{name:<17} {slow:>10.2f} {fast:>8.2f} {slow / fast:>12.1f}x")


if __name__ == "__main__":
    main()
