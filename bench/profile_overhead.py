"""Profiler overhead: profiled forward time / plain forward time, ours and spikingjelly's.

Measured in one run on the same model and input, interleaved, warm, median of
repeats. Target: ours at most 1.5x on sdit-mnist, batch 4.

    .venv/bin/python bench/profile_overhead.py [--preset sdit-mnist] [--batch-size 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from profiling.counter import LayerCounter
from sdit.models import build_model


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdit-mnist")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from spikingjelly.activation_based.op_counter import ACCounter, DispatchCounterMode, MACCounter, SynOpCounter

    torch.manual_seed(0)
    model = build_model(args.preset).eval()
    cfg = model.config
    x = torch.randn(args.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.full((args.batch_size,), 500)

    def plain() -> None:
        model(x, t)

    def ours() -> None:
        with LayerCounter(model) as counter, counter.step(t=500):
            model(x, t)
        counter.finish()

    def spikingjelly() -> None:
        counters = [MACCounter(), ACCounter(), SynOpCounter()]
        with DispatchCounterMode(counters):
            model(x, t)
        for c in counters:
            c.get_total()

    methods = {"plain": plain, "ours": ours, "spikingjelly": spikingjelly}
    times: dict[str, list[float]] = {name: [] for name in methods}
    with torch.no_grad():
        for fn in methods.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in methods.items():
                times[name].append(_time(fn))
    base = statistics.median(times["plain"])
    print(f"# {args.preset}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}; plain forward {base * 1e3:.1f} ms")
    for name in ("ours", "spikingjelly"):
        print(f"{name}: {statistics.median(times[name]) / base:.2f}x")


if __name__ == "__main__":
    main()
