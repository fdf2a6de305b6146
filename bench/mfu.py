"""Model FLOP utilisation (MFU) of SDiT / DiT training steps and sampling forwards.

One run measures this machine's peak matmul throughput (a large, warm square
``torch.mm``), then for each preset and workload the images/s of

- ``train``: ``Diffusion().loss`` forward + backward + an AdamW step,
- ``sample``: one ``no_grad`` model forward (one denoising step),

in two modes, ``eager`` (the model as profiled) and ``compiled`` (``torch.compile``
of the model; what ``sdit train --compile`` runs), and reports MFU = achieved
FLOP/s / peak FLOP/s (PaLM's definition, as in
nanoGPT's ``estimate_mfu``). Each case runs in its own subprocess so that its
peak memory (``ru_maxrss`` growth on CPU, ``torch.cuda.max_memory_allocated`` on
GPU) is its own.

FLOP convention (stated in the printout): the profiler's dense MACs per image of
one forward pass (``profiling.workloads.profile_forward``: every Linear, Conv and
matmul, including the W_D / W_N of the Reconstruction Module at each of the T
steps and DiT's attention matmuls); element-wise work (LayerNorm, WKV, LIF,
softmax, GELU) is not counted. FLOP = 2 MAC; a training step counts 3x the
forward FLOP.

Usage::

    python bench/mfu.py                                  # CPU, float32
    python bench/mfu.py --device cuda --dtype bf16       # GPU, bf16 autocast

Timings are printed, never asserted: the machine is shared and noisy, so only
ratios measured in one run mean much.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profiling.workloads import profile_forward  # noqa: E402
from sdit.config import get_preset  # noqa: E402
from sdit.models import build_model  # noqa: E402
from sdit.models.wkv import wkv_backend  # noqa: E402

PRESETS = ("sdit-small", "dit-small", "sdit-mnist")
WORKLOADS = ("train", "sample")
# Batch sizes a user would train / sample with on this class of machine (per preset).
BATCH = {
    ("sdit-small", "train"): 32,
    ("sdit-small", "sample"): 64,
    ("dit-small", "train"): 64,
    ("dit-small", "sample"): 128,
    ("sdit-mnist", "train"): 4,
    ("sdit-mnist", "sample"): 8,
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("eager", "compiled")
FLOP_FACTOR = {"train": 3, "sample": 1}  # forward + backward (2x forward); one forward


def forward_macs(preset: str) -> int:
    """Dense MACs of one forward pass per image, from the profiler (``dense_macs``)."""
    return int(profile_forward(build_model(preset), name=preset, batch_size=1).per_image["dense_macs"])


@dataclass(frozen=True)
class CaseResult:
    """One (preset, workload) measurement."""

    preset: str
    workload: str
    mode: str
    batch: int
    iters: int
    seconds_per_iter: float
    images_per_s: float
    peak_mem_bytes: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_flop_per_s(device: torch.device, dtype: torch.dtype, size: int, min_s: float = 2.0) -> float:
    """Best FLOP/s of a warm (size x size) @ (size x size) ``torch.mm``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    _sync(device)
    best = float("inf")
    start_all = time.perf_counter()
    while time.perf_counter() - start_all < min_s:
        start = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 5)
    return 2.0 * size**3 / best


def run_case(
    preset: str, workload: str, mode: str, batch: int, device: torch.device, dtype: torch.dtype, min_s: float
) -> CaseResult:
    """Time one workload; runs in a fresh process (see :func:`main`)."""
    from sdit.diffusion import Diffusion

    torch.manual_seed(0)
    cfg = get_preset(preset)
    model = build_model(cfg).to(device)
    net = torch.compile(model) if mode == "compiled" else model
    diffusion = Diffusion()
    x0 = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.randint(0, diffusion.num_steps, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if workload == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = diffusion.loss(net, x0)
            loss.backward()
            opt.step()

    else:
        model.eval()

        def step() -> None:
            with torch.no_grad(), autocast:
                net(x0, t)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    step()  # warm-up (allocator, AdamW state, kernel selection, compilation)
    step()
    _sync(device)
    iters, start = 0, time.perf_counter()
    while iters < 2 or time.perf_counter() - start < min_s:
        step()
        iters += 1
    _sync(device)
    seconds = (time.perf_counter() - start) / iters
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) - mem0
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return CaseResult(
        preset=preset,
        workload=workload,
        mode=mode,
        batch=batch,
        iters=iters,
        seconds_per_iter=seconds,
        images_per_s=batch / seconds,
        peak_mem_bytes=peak_mem,
    )


def _run_in_subprocess(
    args: argparse.Namespace, preset: str, workload: str, mode: str, batch: int
) -> CaseResult:
    cmd = [
        sys.executable, __file__, "--case", preset, workload, mode, str(batch),
        "--device", args.device, "--dtype", args.dtype, "--min-seconds", str(args.min_seconds),
    ]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return CaseResult(**json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-scale", type=float, default=1.0, help="multiply every default batch")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed window per case")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--case", nargs=4, metavar=("PRESET", "WORKLOAD", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    if args.case:  # child process: one case, one JSON line
        preset, workload, mode, batch = args.case
        result = run_case(preset, workload, mode, int(batch), device, dtype, args.min_seconds)
        print(json.dumps(asdict(result)))
        return

    sizes = (4096, 8192) if device.type == "cuda" else (1024, 2048)
    peak = max(peak_matmul_flop_per_s(device, dtype, size) for size in sizes)
    print(f"device {device} ({torch.get_num_threads()} threads), dtype {args.dtype}, torch {torch.__version__}")
    print(f"WKV kernel: {wkv_backend(device)}")
    print(
        f"peak matmul: {peak / 1e9:.1f} GFLOP/s (square torch.mm of sides {sizes}, warm, best of repeats; "
        "re-measured after the cases, the larger value is used for MFU)"
    )
    print(
        "FLOPs: the profiler's dense MACs per image (Linear/Conv/matmul incl. W_D/W_N x T steps, DiT "
        "attention matmuls; element-wise ops not counted), FLOP = 2 MAC, train = 3x forward; "
        "sample = one no_grad forward (one denoising step)"
    )
    mem_note = "cuda max_memory_allocated" if device.type == "cuda" else "ru_maxrss growth"
    header = (f"{'preset':<11} {'workload':<8} {'mode':<8} {'batch':>5} {'s/iter':>8} {'images/s':>9} "
              f"{'GFLOP/s':>8} {'MFU %':>6} {'peak MiB':>9}")
    print(header)
    print("-" * len(header))
    results = []
    for preset in args.presets:
        for workload in args.workloads:
            batch = max(1, round(BATCH.get((preset, workload), 16) * args.batch_scale))
            for mode in args.modes:
                results.append(_run_in_subprocess(args, preset, workload, mode, batch))
    peak_after = max(peak_matmul_flop_per_s(device, dtype, size) for size in sizes)
    peak = max(peak, peak_after)
    macs = {preset: forward_macs(preset) for preset in args.presets}  # once per preset, after the timing
    for r in results:
        achieved = 2.0 * FLOP_FACTOR[r.workload] * macs[r.preset] * r.images_per_s  # FLOP/s
        print(
            f"{r.preset:<11} {r.workload:<8} {r.mode:<8} {r.batch:>5} {r.seconds_per_iter:>8.3f} "
            f"{r.images_per_s:>9.1f} {achieved / 1e9:>8.1f} {100 * achieved / peak:>6.1f} "
            f"{r.peak_mem_bytes / 2**20:>9.0f}"
        )
    print(f"peak matmul after the cases: {peak_after / 1e9:.1f} GFLOP/s; MFU uses {peak / 1e9:.1f}")
    print(f"peak MiB: {mem_note} over the warm-up and timed iterations of that case "
          "(compiled: includes the compiler's own memory on CPU)")


if __name__ == "__main__":
    main()
