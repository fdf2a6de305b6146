"""Model FLOP utilisation (MFU) of SDiT / DiT training steps and sampling forwards, and a shape-true limit.

One run measures this machine's peak matmul throughput (a large, warm square
``torch.mm``), then for each preset and workload the images/s of

- ``train``: ``Diffusion().loss`` forward + backward + an AdamW step (the optimizer
  ``sdit train`` builds, ``sdit.training.state.make_optimizer``),
- ``sample``: one ``no_grad`` model forward (one denoising step),

in two modes, ``eager`` (the model as profiled) and ``compiled`` (``torch.compile``
of the model; what ``sdit train --compile`` runs), and reports MFU = achieved
FLOP/s / peak FLOP/s (PaLM's definition, as in
nanoGPT's ``estimate_mfu``). Each case runs in its own subprocess so that its
peak memory (``ru_maxrss`` growth on CPU, ``torch.cuda.max_memory_allocated`` on
GPU) is its own.

Shape-true limit. A square matmul peak is out of reach for a model whose GEMMs are
thin (65 tokens x 256 channels). So each case also records every GEMM of one step
of its own workload (``aten.mm / addmm / bmm / baddbmm / convolution`` and, for
training, their backward GEMMs, caught by a ``TorchDispatchMode`` on the eager
model), replays exactly those calls (same shapes, strides and arguments, inputs
filled with random numbers) back to back, and reports the GEMM-only time per step
and the ratio step time / GEMM-only time: 1.0 would be a step that does nothing but
its matrix products. Compiled cases are compared with the same (eager) GEMM list.
Both times are medians (of the timed iterations, of the replay rounds; at least 5 of
each): on a shared VM whose speed drifts from second to second, a median against a
median is the fair ratio (a best-of-N replay against a mean step would charge the
step for the machine's bad seconds). On CPU the ratio comes from a window of its own
in which steps and replays alternate (step, replay, replay, step, ...; only the second
replay of each pair is timed, so that it runs on its own tensors in cache as a replay
window would): each step is divided by the replay right after it, and step/GEMM is the
median of those ratios, so
a machine that slows down for a few seconds slows both sides of every pair (timed in
separate windows, the two drift apart from run to run; docs/speed.md).

Breakdown. One profiled step per case (``torch.profiler``, CPU self time per op)
says where the step's wall time goes: GEMMs, WKV (``sdit::wkv_*`` ops), LIF
(``sdit::lif_*`` kernel ops, or ``sj_lif::*`` of spikingjelly's own neuron code), LayerNorm, other element-wise ops
(incl. copies, cat, reductions, sdit's other C kernels ``sdit::shift_mixes*``, ``sdit::relu_square*``,
``sdit::bias_gelu*``, ``sdit::norm_modulate``; in compiled cases also inductor's fused kernels),
the AdamW step (train), and framework overhead (the rest of the wall time: Python,
dispatch, autograd engine, profiler). The profiler slows ops, and not evenly: it
stretches the small C kernels several-fold (docs/speed.md), so the shares are of the
profiled step, not of the timed one, and overstate the element-wise part.

FLOP convention (stated in the printout): the profiler's dense MACs per image of
one forward pass (``profiling.workloads.profile_forward``: every Linear, Conv and
matmul, including the W_D / W_N of the Reconstruction Module at each of the T
steps and DiT's attention matmuls); element-wise work (LayerNorm, WKV, LIF,
softmax, GELU) is not counted. FLOP = 2 MAC; a training step counts 3x the
forward FLOP.

Usage::

    python bench/mfu.py                                  # CPU, float32
    python bench/mfu.py --quick --modes eager            # a short run (about a minute per case)
    python bench/mfu.py --device cuda --dtype bf16       # GPU, bf16 autocast

Timings are printed, never asserted: the machine is shared and noisy, so only
ratios measured in one run mean much.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profiling.workloads import profile_forward  # noqa: E402
from sdit.config import get_preset  # noqa: E402
from sdit.heap import heap_status, retain_freed_memory  # noqa: E402
from sdit.models import build_model  # noqa: E402
from sdit.models.wkv import wkv_backend  # noqa: E402

try:  # the optimizer sdit train builds (fused AdamW); revisions without it: torch's default AdamW
    from sdit.training.state import make_optimizer  # noqa: E402
except ImportError:  # pragma: no cover

    def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


try:  # the C LIF kernel (absent from older revisions, which the bench can still time)
    from sdit.models.cpu_kernels import extension_status as lif_status  # noqa: E402
except ImportError:  # pragma: no cover

    def lif_status() -> str:
        return "spikingjelly's LIF, tensor ops (no sdit.models.cpu_kernels)"


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
MIN_ROUNDS = 5  # timed iterations (and GEMM replays) at least, whatever the window: a median needs a few
CATEGORIES = ("GEMM", "WKV", "LIF", "LayerNorm", "elementwise", "AdamW", "overhead")

_aten = torch.ops.aten
GEMM_OPS = {
    _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
    _aten.convolution.default, _aten.convolution_backward.default,
}  # fmt: skip
# Profiler op names counted as GEMM time (composite wrappers included: their self time is the GEMM's dispatch).
_GEMM_NAMES = {
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
    "aten::convolution", "aten::_convolution", "aten::conv2d", "aten::mkldnn_convolution",
    "aten::convolution_backward", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward",
}  # fmt: skip
_NORM_NAMES = {"aten::layer_norm", "aten::native_layer_norm", "aten::native_layer_norm_backward"}


def forward_macs(preset: str) -> int:
    """Dense MACs of one forward pass per image, from the profiler (``dense_macs``)."""
    return int(profile_forward(build_model(preset), name=preset, batch_size=1).per_image["dense_macs"])


@dataclass(frozen=True)
class CaseResult:
    """One (preset, workload, mode) measurement."""

    preset: str
    workload: str
    mode: str
    batch: int
    iters: int
    seconds_per_iter: float  # median of the timed iterations
    images_per_s: float
    peak_mem_bytes: int
    seconds_mean: float = 0.0  # mean of the timed iterations
    gemm_calls: int = 0
    gemm_flop: float = 0.0  # FLOP of one step's GEMMs, from their shapes (2 per MAC)
    gemm_seconds: float = 0.0  # the replayed GEMMs of one step, back to back: median of the rounds
    gemm_ratio: float = 0.0  # step / GEMM-only time: median of the interleaved pairs' ratios (CPU), else
    #   seconds_per_iter / gemm_seconds
    gemm_pairs: int = 0  # interleaved (step, replay) pairs behind gemm_ratio (0: separate windows)
    profiled_seconds: float = 0.0  # wall time of the profiled step
    breakdown: dict[str, float] = field(default_factory=dict)  # seconds per category of the profiled step


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


# ---- shape-true GEMM limit ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


def _gemm_flop(func: Any, args: tuple, out: Any) -> float:
    """FLOP (2 per MAC) of one recorded GEMM call, from its argument and output shapes."""
    if func in (_aten.mm.default, _aten.bmm.default):
        a, b = args[0], args[1]
    elif func in (_aten.addmm.default, _aten.baddbmm.default):
        a, b = args[1], args[2]
    elif func is _aten.convolution.default:
        return 2.0 * out.numel() * args[1][0].numel()  # out x (C_in/groups x kh x kw)
    else:  # convolution_backward(grad_out, input, weight, ..., output_mask): grad_input and grad_weight
        grad_out, weight, mask = args[0], args[2], args[-1]
        per_pass = 2.0 * grad_out.numel() * weight[0].numel()
        return per_pass * (int(mask[0]) + int(mask[1]))
    batch = a.shape[0] if a.dim() == 3 else 1
    return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def _spec(x: Any) -> Any:
    return _TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x


class _GemmRecorder(TorchDispatchMode):
    """Records every GEMM aten call of the code it wraps (forward and autograd backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []
        self.flop = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in GEMM_OPS:
            self.calls.append((func, tree_map(_spec, args), tree_map(_spec, kwargs)))
            self.flop += _gemm_flop(func, args, out)
        return out


def _materialise(calls: list[tuple[Any, tuple, dict]], device: torch.device) -> list[tuple[Any, tuple, dict]]:
    """Random tensors for the recorded specs; one tensor per distinct (shape, stride, dtype)."""
    cache: dict[_TensorSpec, torch.Tensor] = {}

    def make(x: Any) -> Any:
        if not isinstance(x, _TensorSpec):
            return x
        if x not in cache:
            extent = 1 + sum((n - 1) * s for n, s in zip(x.shape, x.stride) if n > 0)
            base = torch.randn(max(extent, 1), device=device).to(x.dtype)
            cache[x] = base.as_strided(x.shape, x.stride)
        return cache[x]

    return [(func, tree_map(make, args), tree_map(make, kwargs)) for func, args, kwargs in calls]


def gemm_only_seconds(calls: list[tuple[Any, tuple, dict]], device: torch.device, min_s: float) -> float:
    """Median time of the recorded GEMM calls replayed back to back (one step's worth), timed as the step is
    (:func:`_timed_iterations`), so their ratio compares like with like on a machine whose speed drifts."""
    replay = _materialise(calls, device)

    def once() -> None:
        for func, args, kwargs in replay:
            func(*args, **kwargs)

    once()
    _sync(device)
    return statistics.median(_timed_iterations(once, device, min_s))


def paired_gemm_ratio(
    step: Callable[[], None], calls: list[tuple[Any, tuple, dict]], device: torch.device, min_s: float
) -> tuple[float, float, int]:
    """(GEMM-only seconds, step / GEMM-only ratio, pairs) from a window where steps and replays alternate.

    CPU only (see the module docstring): each pair is one step then two replays of its recorded GEMMs, the
    second timed (the first restores the replay's tensors to cache, so the replay is as hot as in a window of
    its own and the limit stays the stricter one); the seconds are the median replay and the ratio the
    median of step_i / replay_i.
    """
    replay = _materialise(calls, device)

    def once() -> None:
        for func, args, kwargs in replay:
            func(*args, **kwargs)

    once()
    ratios, replays, start = [], [], time.perf_counter()
    while len(ratios) < MIN_ROUNDS or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        once()  # untimed: brings the replay's own tensors back into cache after the step
        t2 = time.perf_counter()
        once()
        t3 = time.perf_counter()
        ratios.append((t1 - t0) / (t3 - t2))
        replays.append(t3 - t2)
    return statistics.median(replays), statistics.median(ratios), len(ratios)


# ---- where a step's time goes ---------------------------------------------------------------------------
def _category(event: Any) -> str:
    """Category of an event's self time: an enclosing WKV / LIF / optimizer op wins over the op's own name."""
    node = event
    while node is not None:
        name = node.name
        if name.startswith("sdit::wkv"):
            return "WKV"
        if name.startswith("sj_lif::") or name.startswith("sdit::lif"):
            return "LIF"
        if name.startswith("Optimizer."):
            return "AdamW"
        node = node.cpu_parent
    name = event.name
    if name in _GEMM_NAMES:
        return "GEMM"
    if name in _NORM_NAMES:
        return "LayerNorm"
    if name.startswith(("aten::", "sdit::", "cpp_fused")) or "Compiled" in name:  # sdit::: our C kernels
        return "elementwise"
    return "overhead"


def time_breakdown(step: Callable[[], None], device: torch.device) -> tuple[float, dict[str, float]]:
    """Wall time of one profiled step and its seconds per category (see the module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        _sync(device)
        wall = time.perf_counter() - start
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        seconds[_category(event)] += event.self_cpu_time_total / 1e6
    counted = sum(v for k, v in seconds.items() if k != "overhead")
    seconds["overhead"] = max(wall - counted, 0.0)
    return wall, {k: seconds.get(k, 0.0) for k in CATEGORIES}


# ---- one case --------------------------------------------------------------------------------------------
def _timed_iterations(step: Callable[[], None], device: torch.device, min_s: float) -> list[float]:
    """Seconds per iteration over a window of at least ``min_s`` and :data:`MIN_ROUNDS` iterations.

    CPU: each iteration timed on its own (their median is the figure). CUDA: the window is
    timed as a whole and split evenly (a sync per iteration would stall the launch queue that
    lets one step's kernels overlap the next step's Python), so there the median is the mean.
    """
    if device.type == "cuda":
        iters, start = 0, time.perf_counter()
        while iters < MIN_ROUNDS or time.perf_counter() - start < min_s:
            step()
            iters += 1
        _sync(device)
        return [(time.perf_counter() - start) / iters] * iters
    times, start = [], time.perf_counter()
    while len(times) < MIN_ROUNDS or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def run_case(
    preset: str, workload: str, mode: str, batch: int, device: torch.device, dtype: torch.dtype, min_s: float,
    gemm: bool = True,
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
    opt = None
    if workload == "train":
        model.train()
        opt = make_optimizer(list(model.parameters()), lr=1e-4, weight_decay=0.0)

        def make_step(m: torch.nn.Module) -> Callable[[], None]:
            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with autocast:
                    loss = diffusion.loss(m, x0)
                loss.backward()
                opt.step()

            return step

    else:
        model.eval()

        def make_step(m: torch.nn.Module) -> Callable[[], None]:
            def step() -> None:
                with torch.no_grad(), autocast:
                    m(x0, t)

            return step

    step = make_step(net)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    step()  # warm-up (allocator, AdamW state, kernel selection, compilation)
    step()
    _sync(device)
    times = _timed_iterations(step, device, min_s)
    iters, seconds = len(times), statistics.median(times)
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) - mem0
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    extra: dict[str, Any] = {}
    if gemm:
        profiled, breakdown = time_breakdown(step, device)
        recorder = _GemmRecorder()
        with recorder:
            make_step(model)()  # the eager model: the same GEMMs at the workload's own shapes
        if device.type == "cpu":
            gemm_s, ratio, pairs = paired_gemm_ratio(step, recorder.calls, device, min_s=min_s)
        else:
            gemm_s, pairs = gemm_only_seconds(recorder.calls, device, min_s=min(min_s, 2.0)), 0
            ratio = seconds / gemm_s
        extra = {
            "gemm_calls": len(recorder.calls),
            "gemm_flop": recorder.flop,
            "gemm_seconds": gemm_s,
            "gemm_ratio": ratio,
            "gemm_pairs": pairs,
            "profiled_seconds": profiled,
            "breakdown": breakdown,
        }
    return CaseResult(
        preset=preset,
        workload=workload,
        mode=mode,
        batch=batch,
        iters=iters,
        seconds_per_iter=seconds,
        seconds_mean=statistics.fmean(times),
        images_per_s=batch / seconds,
        peak_mem_bytes=peak_mem,
        **extra,
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
    if args.no_gemm:
        cmd += ["--no-gemm"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return CaseResult(**json.loads(out.strip().splitlines()[-1]))


def _print_tables(results: list[CaseResult], macs: dict[str, int], peak: float) -> None:
    header = (
        f"{'preset':<10} {'work':<6} {'mode':<8} {'batch':>5} {'s/iter':>7} {'img/s':>7} {'GFLOP/s':>7} "
        f"{'MFU %':>5} {'GEMM s':>7} {'step/GEMM':>9} {'GEMM %pk':>8} {'MiB':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        achieved = 2.0 * FLOP_FACTOR[r.workload] * macs[r.preset] * r.images_per_s  # FLOP/s
        gemm = "-" if not r.gemm_seconds else f"{r.gemm_seconds:.4f}"
        ratio = "-" if not r.gemm_seconds else f"{r.gemm_ratio or r.seconds_per_iter / r.gemm_seconds:.2f}x"
        gemm_peak = "-" if not r.gemm_seconds else f"{100 * r.gemm_flop / r.gemm_seconds / peak:.1f}"
        print(
            f"{r.preset:<10} {r.workload:<6} {r.mode:<8} {r.batch:>5} {r.seconds_per_iter:>7.3f} "
            f"{r.images_per_s:>7.1f} {achieved / 1e9:>7.1f} {100 * achieved / peak:>5.1f} {gemm:>7} {ratio:>9} "
            f"{gemm_peak:>8} {r.peak_mem_bytes / 2**20:>6.0f}"
        )
    drifted = [r for r in results if r.seconds_mean > 1.1 * r.seconds_per_iter]
    if drifted:
        print("mean s/iter more than 10 % above the median (a drifting machine): " + ", ".join(
            f"{r.preset} {r.workload} {r.mode} {r.seconds_mean:.3f}" for r in drifted))
    if not any(r.breakdown for r in results):
        return
    print()
    print("Where a profiled step's wall time goes (% of that step; ms = its wall time under the profiler):")
    labels = {"LayerNorm": "LayerNrm", "elementwise": "elemwise"}
    columns = " ".join(f"{labels.get(c, c):>8}" for c in CATEGORIES)
    header = f"{'preset':<10} {'work':<6} {'mode':<8} {'ms':>8} {columns}"
    print(header)
    print("-" * len(header))
    for r in results:
        if not r.breakdown:
            continue
        wall = r.profiled_seconds
        shares = " ".join(f"{100 * r.breakdown.get(c, 0.0) / wall:>7.1f}%" for c in CATEGORIES)
        print(f"{r.preset:<10} {r.workload:<6} {r.mode:<8} {1e3 * wall:>8.0f} {shares}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-scale", type=float, default=1.0, help="multiply every default batch")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed window per case")
    parser.add_argument("--quick", action="store_true", help="1 s timed windows, 1 s peak (a short, noisier run)")
    parser.add_argument("--no-gemm", action="store_true", help="skip the GEMM-only limit and the breakdown")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--case", nargs=4, metavar=("PRESET", "WORKLOAD", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    spike_driven = [p for p in args.presets if getattr(get_preset(p), "spike_driven", False)]
    if spike_driven and "train" in args.workloads:
        # its recorder and FLOP count see the counted pair form of Eq. SD-3 (fan-in 2D), its timed step the
        # training form (fan-in D): the ratios would compare different GEMMs
        parser.error(f"train of spike-driven presets ({', '.join(spike_driven)}) is not comparable here; "
                     "use --workloads sample, or bench/sd_train_forms.py")
    retain_freed_memory()  # as the sdit command does (SDIT_HEAP_RETAIN=0: glibc's defaults)
    if args.quick:
        args.min_seconds = min(args.min_seconds, 1.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    if args.case:  # child process: one case, one JSON line
        preset, workload, mode, batch = args.case
        result = run_case(preset, workload, mode, int(batch), device, dtype, args.min_seconds, gemm=not args.no_gemm)
        print(json.dumps(asdict(result)))
        return

    sizes = (4096, 8192) if device.type == "cuda" else (1024, 2048)
    peak_s = 1.0 if args.quick else 2.0
    peak = max(peak_matmul_flop_per_s(device, dtype, size, peak_s) for size in sizes)
    print(f"device {device} ({torch.get_num_threads()} threads), dtype {args.dtype}, torch {torch.__version__}")
    print(f"WKV kernel: {wkv_backend(device)}")
    print(f"LIF and token-shift kernels (CPU): {lif_status()}")
    print(f"heap: {heap_status()}")
    print(f"peak matmul: {peak / 1e9:.1f} GFLOP/s (square torch.mm of sides {sizes}, warm, best of repeats;")
    print("  re-measured after the cases, the larger value is used for MFU)")
    print("FLOPs: the profiler's dense MACs per image (Linear/Conv/matmul incl. W_D/W_N x T steps, DiT")
    print("  attention matmuls; element-wise ops not counted), FLOP = 2 MAC, train = 3x forward;")
    print("  sample = one no_grad forward (one denoising step)")
    print(f"s/iter: median of the timed iterations (at least {MIN_ROUNDS}; CUDA: the window's mean); img/s and MFU")
    if not args.no_gemm:
        print("GEMM s: one step's own GEMMs (forward and backward, recorded shapes) replayed alone, s/step")
        if device.type == "cpu":
            print(f"  (median of a window of its own where steps and replays alternate, at least {MIN_ROUNDS} pairs;")
            print("  each pair: step, untimed replay, timed replay);")
            print("  step/GEMM = median over those pairs of step / replay (1.00x = nothing but GEMMs);")
        else:
            print("  (the window's mean); step/GEMM = s/iter / GEMM s (1.00x = nothing but GEMMs);")
        print("  GEMM %pk = those GEMMs' own FLOP/s as % of the peak (the best MFU these shapes allow)")
    results = []
    for preset in args.presets:
        for workload in args.workloads:
            batch = max(1, round(BATCH.get((preset, workload), 16) * args.batch_scale))
            for mode in args.modes:
                results.append(_run_in_subprocess(args, preset, workload, mode, batch))
    peak_after = max(peak_matmul_flop_per_s(device, dtype, size, peak_s) for size in sizes)
    peak = max(peak, peak_after)
    macs = {preset: forward_macs(preset) for preset in args.presets}  # once per preset, after the timing
    print()
    _print_tables(results, macs, peak)
    print()
    print(f"peak matmul after the cases: {peak_after / 1e9:.1f} GFLOP/s; MFU uses {peak / 1e9:.1f}")
    mem_note = "cuda max_memory_allocated" if device.type == "cuda" else "ru_maxrss growth"
    print(f"MiB: {mem_note} over the warm-up and timed iterations of that case")
    print("  (compiled: includes the compiler's own memory on CPU)")


if __name__ == "__main__":
    main()
