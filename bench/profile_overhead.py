"""Profiler overhead, ratios measured in one run on the same model and input, interleaved, warm, median.

1. One forward: profiled forward time / plain forward time, ours and spikingjelly's op counter
   (target: ours at most 1.5x on sdit-mnist, batch 4).
2. A whole sampling run: a profiled DDIM run (``profile_workload`` of ``Workload.ddim``) / the same
   plain sampling run (``sdit.diffusion.sample``, same seed, same trajectory), for each preset and
   batch size asked (default sdit-small and dit-small at batch 1 and 16, DDIM 50; target: at most
   1.5x everywhere).

Usage::

    .venv/bin/python bench/profile_overhead.py [--preset sdit-mnist] [--batch-size 4] [--repeats 5]
    .venv/bin/python bench/profile_overhead.py --skip-forward --sampling-presets sdit-small dit-small \\
        --sampling-batches 1 16 --steps 50 --sampling-repeats 9
    .venv/bin/python bench/profile_overhead.py --skip-forward --threads 1   # one intra-op thread

Why a sampling run costs little more than plain sampling: the counter reuses the recorded counts of
modules called again with the same input signature (``LayerCounter(reuse=True)``), spiking blocks and
the whole SDiT too, while their neurons still run and count their spikes at every call. So a DiT and an
SDiT are counted op by op at their first step only, and a replayed module's descendants run without the
counter's hooks; the spike-driven SDiT (its Linears read spikes: ACs are data) stays op by op.

CPU timings on a shared machine are noisy: compare ratios from one run, not across runs. Each ratio is
given twice: by wall-clock time and by this process's CPU time (all its threads), which other processes
on a loaded machine disturb much less; ``--threads`` pins torch's intra-op threads. Measured ratios,
with their dates and machines, are in docs/profiler-overhead.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from profiling.counter import LayerCounter
from profiling.workloads import profile_workload
from sdit.diffusion import sample
from sdit.heap import heap_status, retain_freed_memory
from sdit.models import build_model
from sdit.workload import Workload


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _interleaved_both(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per method: one warm-up call each, then ``repeats`` interleaved rounds."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    with torch.no_grad():
        for fn in methods.values():
            fn()
        for _ in range(repeats):
            for name, fn in methods.items():
                times[name].append(_time(fn))
    return {name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in times.items()}


def _interleaved(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall seconds per method (see :func:`_interleaved_both`)."""
    return {name: wall for name, (wall, _) in _interleaved_both(methods, repeats).items()}


def forward_overhead(preset: str, batch_size: int, repeats: int) -> None:
    from spikingjelly.activation_based.op_counter import ACCounter, DispatchCounterMode, MACCounter, SynOpCounter

    torch.manual_seed(0)
    model = build_model(preset).eval()
    cfg = model.config
    x = torch.randn(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.full((batch_size,), 500)

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

    med = _interleaved({"plain": plain, "ours": ours, "spikingjelly": spikingjelly}, repeats)
    print(f"# forward: {preset}, batch {batch_size}, {torch.get_num_threads()} threads, median of {repeats}; "
          f"plain forward {med['plain'] * 1e3:.1f} ms")
    for name in ("ours", "spikingjelly"):
        print(f"{name}: {med[name] / med['plain']:.2f}x")


def _sampling_case(model: torch.nn.Module, preset: str, batch: int, steps: int, repeats: int) -> None:
    work = Workload.ddim(steps, batch_size=batch)

    def plain() -> None:
        sample(model, work)

    def profiled() -> None:
        profile_workload(model, work, name=preset)

    med = _interleaved_both({"plain": plain, "profiled": profiled}, repeats)
    (plain_wall, plain_cpu), (prof_wall, prof_cpu) = med["plain"], med["profiled"]
    print(f"{preset}, {batch}, {plain_wall:.3f}, {prof_wall:.3f}, {prof_wall / plain_wall:.2f}x, "
          f"{plain_cpu:.3f}, {prof_cpu:.3f}, {prof_cpu / plain_cpu:.2f}x", flush=True)


def sampling_overhead(presets: list[str], batches: list[int], steps: int, repeats: int) -> None:
    print(f"# sampling: DDIM {steps} steps, eta 0, {torch.get_num_threads()} threads, median of {repeats}; "
          "ratio = profiled run / plain run of the same workload")
    print("preset, batch, plain wall s, profiled wall s, wall ratio, plain CPU s, profiled CPU s, CPU ratio")
    for preset in presets:
        torch.manual_seed(0)
        model = build_model(preset).eval()
        for batch in batches:
            _sampling_case(model, preset, batch, steps, repeats)


def main() -> None:
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sdit-mnist")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-forward", action="store_true", help="Only the sampling-run ratios.")
    parser.add_argument("--sampling-presets", nargs="*", default=["sdit-small", "dit-small"])
    parser.add_argument("--sampling-batches", nargs="*", type=int, default=[1, 16])
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of the sampling runs.")
    parser.add_argument("--sampling-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    args = parser.parse_args()
    retain_freed_memory()  # as the sdit command does (SDIT_HEAP_RETAIN=0: glibc's defaults)
    print(f"# heap: {heap_status()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_forward:
        forward_overhead(args.preset, args.batch_size, args.repeats)
    if args.sampling_presets:
        sampling_overhead(args.sampling_presets, args.sampling_batches, args.steps, args.sampling_repeats)


if __name__ == "__main__":
    main()
