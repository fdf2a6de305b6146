"""WKV kernels side by side: the tensor-op token loop (``wkv_python``), the C++ kernel and the chunked form.

Times, in one run and one process, a no-grad forward and a forward + backward of
each implementation on the WKV input of an sdit-small training batch of 64
(T*B = 256 rows, 2N = 100 tokens with the Reconstruction Token, D = 128), float32,
median of repeats after a warm-up, and prints the ratios python / C++ and python /
chunked. The chunked parallel form (``wkv_chunked``, what CUDA runs) is timed on the
CPU here; ``--device cuda`` times the loop and the chunked form on a GPU (no C++ there).

Usage::

    python bench/wkv.py                 # torch's default threads
    python bench/wkv.py --threads 1
    python bench/wkv.py --device cuda --chunk 32

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

from sdit.heap import retain_freed_memory  # noqa: E402
from sdit.models.wkv import CHUNK, wkv_backend, wkv_chunked, wkv_python  # noqa: E402
from sdit.models.wkv_ext import wkv_cpu  # noqa: E402


def median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call (``sync`` waits for a device)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    retain_freed_memory()  # as the sdit command does (sdit/heap.py; SDIT_HEAP_RETAIN=0: glibc's defaults)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 100, 128], metavar=("B", "N", "D"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="tokens per chunk of the chunked form")
    parser.add_argument("--device", default="cpu", help="cpu (all three) or cuda (loop and chunked)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, tokens, dim = args.shape
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(dim, generator=g) - 1, torch.randn(dim, generator=g),
              torch.randn(batch, tokens, dim, generator=g), torch.randn(batch, tokens, dim, generator=g)]
    inputs = [a.to(device) for a in inputs]
    grad_y = torch.randn(batch, tokens, dim, generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    leaves = [a.clone().requires_grad_() for a in inputs]  # on the device

    def forward(fn: Callable[..., torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn(*inputs)

        return run

    def forward_backward(fn: Callable[..., torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            return torch.autograd.grad(fn(*leaves), leaves, grad_y)

        return run

    def chunked(*a: torch.Tensor) -> torch.Tensor:
        return wkv_chunked(*a, chunk=args.chunk)

    on_cpu = device.type == "cpu"
    cpp = wkv_backend("cpu") if on_cpu else f"not on {device}"
    print(f"(B, N, D) = {tuple(args.shape)}, float32, {device}, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats}, chunks of {args.chunk}; C++: {cpp}")
    print(f"{'pass':<17} {'python ms':>10} {'C++ ms':>8} {'chunked ms':>11} {'python / C++':>13} "
          f"{'python / chunked':>17}")
    for name, wrap in (("forward, no grad", forward), ("forward+backward", forward_backward)):
        slow = median_ms(wrap(wkv_python), args.repeats, sync)
        par = median_ms(wrap(chunked), args.repeats, sync)
        fast = median_ms(wrap(wkv_cpu), args.repeats, sync) if on_cpu else float("nan")
        print(f"{name:<17} {slow:>10.2f} {fast:>8.2f} {par:>11.2f} {slow / fast:>12.1f}x {slow / par:>16.1f}x")


if __name__ == "__main__":
    main()
