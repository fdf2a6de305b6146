"""Training: AdamW, linear warm-up, grad clipping, EMA, checkpoints, exact resume, DDP.

Choices (ARCHITECTURE.md §2 where it speaks, DiT / U-ViT habits where it does not):

- The learning rate rises linearly over ``warmup_steps`` and then stays constant.
- ``batch_size`` is the global batch: under ``torchrun`` each of the W ranks takes
  ``batch_size / W`` images of it.
- Randomness is a function of (seed, step), not of a stream: the data order of epoch e
  is ``randperm`` seeded by (seed, e), and step s draws the timesteps and noise of the
  whole global batch from a generator seeded by (seed, s), each rank keeping its slice.
  Resuming at step s therefore continues exactly, on any number of ranks, and W ranks
  see the same images, timesteps and noise as one process would. The global RNG states
  are still saved and restored for code that uses them.
- bf16 autocast on CUDA only; the loss is taken in float32.
- Firing rate of a LIF layer: mean spikes per neuron per spiking time step (its output
  is 0/1 over (T, B, ...)). The mean firing rate pools all LIF layers: total spikes over
  total neuron-steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from spikingjelly.activation_based import neuron
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sdit import artifacts, checkpoint, distributed, rundir
from sdit.checkpoint import CheckpointMeta
from sdit.config import config_to_dict, get_preset
from sdit.data import ImageSet, fit_channels, load_dataset
from sdit.diffusion import Diffusion, num_classes_of, sample
from sdit.ema import EMA
from sdit.iddpm import training_loss
from sdit.models import build_model

RUN_FILE = rundir.RUN_FILE
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SAMPLES_DIR = "samples"
SEED_MAX = 2**63 - 1
_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, to spread (seed, counter) pairs


class TrainError(ValueError):
    """A run cannot start or resume as asked (one-line message)."""


class NonFiniteError(TrainError):
    """The run's loss or weights turned NaN or infinite; it stopped without saving them (one-line message)."""


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; the message says where, and how to resume."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        preset: Model preset (:data:`sdit.config.PRESETS`).
        dataset: Dataset name (:data:`sdit.data.DATASETS`).
        data_dir: Folder of the dataset files; ``None`` for the default place.
        batch_size: Global batch, split evenly over ranks.
        steps: Optimizer steps to reach (total, counting steps before a resume).
        epochs: Alternative to ``steps``: whole passes over the data (last partial batch dropped).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: Steps of linear learning-rate warm-up.
        grad_clip: Max global gradient norm.
        ema_decay: EMA decay (with warm-up, see :class:`sdit.ema.EMA`).
        seed: Seeds the initialisation, data order, timesteps and noise.
        log_every: Steps between metrics records.
        sample_every: Steps between sample grids (0: only at the end).
        ckpt_every: Steps between checkpoints (0: only at the end).
        keep: Checkpoints kept.
        sample_num: Images in a sample grid.
        sample_steps: DDIM steps for a sample grid.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        compile: Run the training forward and backward through ``torch.compile``
            (same model and loss; float rounding may differ from eager in the last bits).
            Sample grids and the EMA model stay eager.
        rate_penalty: Weight lambda of the firing-rate penalty: the loss becomes eps-MSE + lambda x the pooled
            mean firing rate of the LIF layers over the step's forward (spikes / neuron-steps, differentiable
            through the surrogate gradient). 0 turns it off. It trades sample quality for sparser spikes.
        init_from: Start from these weights instead of a fresh initialisation: a checkpoint of ours
            (its EMA weights) or an authors' ``.pt`` (their raw weights; their optimiser state is not
            carried over). Its config must equal the preset's.

    The objective follows the model: a learned-sigma model (the authors' layout) trains with their
    MSE + vb loss (:func:`sdit.iddpm.training_loss`), a class-conditional one on the dataset's labels
    (dropped to the null class inside the model), grey images are repeated to the model's channels.
    """

    preset: str = "sdit-small"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    batch_size: int = 64
    steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    seed: int = 0
    log_every: int = 50
    sample_every: int = 1000
    ckpt_every: int = 1000
    keep: int = 3
    sample_num: int = 16
    sample_steps: int = 50
    device: str | None = None
    compile: bool = False
    rate_penalty: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        get_preset(self.preset)  # UnknownPresetError early
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        for name in ("batch_size", "log_every", "keep", "sample_num", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "epochs", "warmup_steps", "sample_every", "ckpt_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("lr", "weight_decay", "grad_clip", "ema_decay", "rate_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.rate_penalty < 0:
            raise ValueError(f"rate_penalty must be >= 0, got {self.rate_penalty}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be in [0, 2**63 - 1], got {self.seed}")


# Fields a resumed run may change: they decide how long to run, where the data lie and
# what to write, not the arithmetic of a step (the data themselves are checked by hash).
# Any other field must equal the run's saved value.
RESUME_MUTABLE = frozenset(
    {"steps", "epochs", "data_dir", "log_every", "sample_every", "ckpt_every", "keep", "sample_num",
     "sample_steps", "device", "compile"}
)


def resume_config(saved: TrainConfig, **changes: Any) -> TrainConfig:
    """``saved`` with ``changes`` applied, refusing changes that would break exact resume.

    Raises:
        TrainError: a change to a field outside :data:`RESUME_MUTABLE`.
    """
    clash = sorted(k for k, v in changes.items() if k not in RESUME_MUTABLE and v != getattr(saved, k))
    if clash:
        detail = ", ".join(f"{k}={changes[k]!r} (run has {getattr(saved, k)!r})" for k in clash)
        raise TrainError(f"cannot resume with a different {detail}; resume continues the run as configured")
    if "steps" in changes and changes["steps"] is not None:
        changes.setdefault("epochs", None)
    if "epochs" in changes and changes["epochs"] is not None:
        changes.setdefault("steps", None)
    return replace(saved, **changes)


def load_run_config(run_dir: Path | str) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run directory.

    Raises:
        TrainError: no run there, or an unreadable ``run.json``.
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise TrainError(f"no training run at {run_dir} (missing {RUN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["train"]
        unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise TrainError(f"{path}: unknown train config keys: {', '.join(unknown)}")
        _check_field_types(data, path)
        return TrainConfig(**data)
    except TrainError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RecursionError) as err:
        raise TrainError(f"{path} is unreadable: {' '.join(str(err).split())}") from None


def _check_field_types(data: dict[str, Any], path: Path) -> None:
    """Each value of a saved train config has its field's type (``int`` is not ``bool``; ``float`` takes ints)."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in data.items():
        allowed = typing.get_args(hints[key]) or (hints[key],)
        ok = any(
            (kind is type(None) and value is None)
            or (kind is bool and isinstance(value, bool))
            or (kind is int and isinstance(value, int) and not isinstance(value, bool))
            or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (kind is str and isinstance(value, str))
            for kind in allowed
        )
        if not ok:
            names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
            raise TrainError(f"{path}: train config {key} must be {names}, got {type(value).__name__}")


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reports (rank 0's view, except ``param_sha256``).

    Attributes:
        rank: The rank of the process that returns it.
        param_sha256: Hash of the raw weights on every rank, in rank order; all equal
            when DDP kept the ranks in sync.
    """

    run_dir: Path
    rank: int
    step: int
    start_step: int
    final_loss: float | None
    mean_firing_rate: float | None
    images_per_s: float | None
    wall_s: float
    checkpoint: Path | None
    param_sha256: tuple[str, ...]


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of update ``step + 1``: linear warm-up, then constant."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


def mixed_seed(seed: int, counter: int, stream: int) -> int:
    """A 63-bit seed for (seed, counter, stream); different streams never share a seed in practice."""
    value = (seed * _MIX + counter * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % (1 << 64)
    value ^= value >> 31
    return value % (1 << 63)


def epoch_order(num_examples: int, seed: int, epoch: int) -> Tensor:
    """The data order of one epoch: a permutation of ``num_examples`` indices, (N,)."""
    g = torch.Generator().manual_seed(mixed_seed(seed, epoch, 1))
    return torch.randperm(num_examples, generator=g)


# Devices with torch's single-pass ("fused") AdamW kernel; elsewhere the per-parameter loop.
_FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The recipe's AdamW (torch's default betas and eps), run by torch's fused kernel where it has one.

    ``fused=True`` changes the implementation only: the same AdamW update in one pass per parameter
    instead of ~10 tensor ops each (on CPU about 25x faster for the small presets: the optimizer was
    ~5 % of a dit-small training step); values agree with the per-parameter loop to float rounding.
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in _FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.AdamW, state: dict[str, Any]) -> None:
    """Load a saved AdamW state and keep this optimizer's implementation (fused or not).

    ``load_state_dict`` takes the saved groups' flags along with their numbers, so a checkpoint of an
    earlier, unfused run would otherwise resume unfused (and a fused one could not resume where the
    fused kernel is missing). The step counters move to where the fused kernel wants them (float32, on
    the parameter's device).
    """
    flags = [(group.get("fused"), group.get("foreach")) for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, flags, strict=True):
        group["fused"], group["foreach"] = fused, foreach
        for p in group["params"]:
            saved = optimizer.state.get(p, {})
            if fused and isinstance(saved.get("step"), Tensor):
                saved["step"] = saved["step"].to(dtype=torch.float32, device=p.device)


def step_noise(
    diffusion: Diffusion, seed: int, step: int, shape: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """Timesteps (B,) and noise (B, C, H, W) of the whole global batch at ``step`` (CPU)."""
    g = torch.Generator().manual_seed(mixed_seed(seed, step, 2))
    t = torch.randint(0, diffusion.num_steps, shape[:1], generator=g)  # (B,)
    noise = torch.randn(shape, generator=g)  # (B, C, H, W)
    return t, noise


class FiringRateMeter:
    """Counts spikes of every spikingjelly neuron layer through forward hooks.

    Counts stay on the device, in one preallocated (2, K) float64 tensor that the
    hooks update in place: nothing synchronises until :meth:`totals` is read, and
    under ``torch.compile`` the hooks trace into the graph without a Python value
    that changes per call (which would recompile every step).

    With ``differentiable=True`` it also keeps, for the forward in progress, each layer's spike sum with its
    graph, so that :meth:`pooled_rate` can enter the loss (the firing-rate penalty).
    """

    def __init__(self, model: nn.Module, differentiable: bool = False) -> None:
        neurons = [(name, m) for name, m in model.named_modules() if isinstance(m, neuron.BaseNode)]
        self.names = [name for name, _ in neurons]
        self.differentiable = differentiable
        device = next(model.parameters(), torch.empty(0)).device
        self._counts = torch.zeros(2, len(neurons), dtype=torch.float64, device=device)  # (2, K): spikes, steps
        self._live: list[tuple[Tensor, int]] = []  # (spike sum with its graph, neuron-steps) of this forward
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(neurons)]

    def _hook(self, index: int) -> Callable[..., None]:
        def count(module: nn.Module, inputs: Any, output: Tensor) -> None:
            self._counts[0, index] += output.detach().sum(dtype=torch.float64)  # output (T, B, ...) of 0/1
            self._counts[1, index] += output.numel()
            if self.differentiable:
                self._live.append((output.float().sum(), output.numel()))

        return count

    def pooled_rate(self) -> Tensor:
        """Spikes / neuron-steps over every LIF layer of the forwards since the last call, with the graph
        (the surrogate gradient flows through it); clears them. 0 for a model without LIF layers."""
        if not self._live:
            return torch.zeros(())
        spikes = torch.stack([s for s, _ in self._live]).sum()
        rate = spikes / sum(n for _, n in self._live)
        self._live = []
        return rate

    def totals(self, device: torch.device) -> Tensor:
        """(2, K): spikes and neuron-steps per layer since the last reset."""
        return self._counts.to(device, copy=True)

    def reset(self) -> None:
        self._counts.zero_()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def rates_from_totals(names: list[str], totals: Tensor) -> tuple[dict[str, float], float | None]:
    """Per-layer firing rates and the pooled mean from (2, K) totals."""
    spikes, steps = totals.tolist() if totals.numel() else ([], [])
    per_layer = {n: s / c for n, s, c in zip(names, spikes, steps, strict=True) if c > 0}
    mean = sum(spikes) / sum(steps) if names and sum(steps) > 0 else None
    return per_layer, mean


def param_sha256(model: nn.Module) -> str:
    """A hash of all parameters and buffers (names, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    try:
        rundir.check_run_dir(run_dir, resume, overwrite)
    except rundir.RunDirError as err:
        raise TrainError(str(err)) from None


def _is_rank0() -> bool:
    """Rank 0 of a ``torchrun`` launch (or a lone process), known before the process group exists."""
    return os.environ.get("RANK", "0") == "0"


def train(
    config: TrainConfig,
    run_dir: Path | str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ImageSet | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``config.preset`` and write the run into ``run_dir`` (rank 0 only).

    Args:
        config: The run; on resume it must equal the saved one outside
            :data:`RESUME_MUTABLE` (see :func:`resume_config`).
        run_dir: Run directory: ``run.json``, ``metrics.jsonl``, ``samples/``, ``checkpoints/``,
            and ``summary.json`` at the end.
        resume: Continue from the latest checkpoint in ``run_dir``.
        overwrite: Start afresh in a non-empty ``run_dir``, deleting its previous run.
        data: Images to train on instead of loading ``config.dataset`` (tests, custom sets).
        progress: Show a progress bar (rank 0).

    Raises:
        TrainError, sdit.data.DatasetError, sdit.checkpoint.CheckpointError: bad input,
            before any file is written. TrainError also when another process runs in ``run_dir``.
        NonFiniteError: the loss or the weights turned non-finite; the last finite checkpoint stays ``latest``.
        TrainInterrupted: Ctrl-C; the message names the last checkpoint and how to resume.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, resume, overwrite)
    resume_from = None
    if resume:
        resume_config(load_run_config(run_dir), **{f.name: getattr(config, f.name) for f in fields(TrainConfig)})
        resume_from = checkpoint.load_checkpoint(run_dir)  # CheckpointError before any rank starts
        checkpoint.load_training_state(checkpoint.training_state_path(resume_from.path),
                                       expected_sha256=resume_from.sha256, schema=checkpoint.TRAINING_STATE_SCHEMA)
    data_set = data if data is not None else load_dataset(config.dataset, "train", config.data_dir)
    lock = rundir.run_lock(run_dir) if _is_rank0() else contextlib.nullcontext()
    try:
        with lock:
            _check_run_dir(run_dir, resume, overwrite)  # again, under the lock: another run may have begun
            if resume_from is not None and checkpoint.resolve_checkpoint(run_dir) != resume_from.path:
                resume_from = checkpoint.load_checkpoint(run_dir)  # a run that ended meanwhile saved a newer one
            ctx = distributed.setup(config.device)
            try:
                return _train(config, run_dir, ctx, data_set.images, resume_from, overwrite, progress,
                              data_set.labels)
            finally:
                distributed.teardown(ctx)
    except rundir.RunDirError as err:
        raise TrainError(str(err)) from None


def _train(
    config: TrainConfig,
    run_dir: Path,
    ctx: distributed.DistContext,
    images: Tensor,
    resume_from: checkpoint.Checkpoint | None,
    overwrite: bool,
    progress: bool,
    labels: Tensor | None = None,
) -> TrainResult:
    started = time.perf_counter()
    if config.batch_size % ctx.world_size:
        raise TrainError(f"batch size {config.batch_size} is not divisible by {ctx.world_size} processes")
    per_rank = config.batch_size // ctx.world_size
    num_examples = images.shape[0]
    batches_per_epoch = num_examples // config.batch_size
    if batches_per_epoch == 0:
        raise TrainError(f"{num_examples} images are fewer than one batch of {config.batch_size}")
    total_steps = config.steps if config.steps is not None else config.epochs * batches_per_epoch
    device = ctx.device
    data_hash = hashlib.sha256(images.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
    images = images.to(device)  # (N, C, H, W), whole set on the device
    labels = labels.to(device) if labels is not None else None  # (N,)

    model_config = get_preset(config.preset)
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    if config.init_from is not None and resume_from is None:
        _load_initial_weights(model, config.init_from)
    if num_classes_of(model) and labels is None:
        raise TrainError(f"{config.preset} is class-conditional; the training data has no labels")
    ema = EMA(model, config.ema_decay)  # before the meter's hooks
    meter = FiringRateMeter(model, differentiable=config.rate_penalty > 0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, lr=config.lr, weight_decay=config.weight_decay)
    diffusion = Diffusion()
    revision = checkpoint.git_revision() if ctx.is_main else "unknown"

    start_step = 0
    if resume_from is not None:
        state = checkpoint.load_training_state(
            checkpoint.training_state_path(resume_from.path), expected_sha256=resume_from.sha256,
            schema=checkpoint.TRAINING_STATE_SCHEMA,
        )
        data_state = state["data"]
        if data_state["images_sha256"] != data_hash or data_state["batch_size"] != config.batch_size:
            raise TrainError(
                f"the run saw {data_state['num_examples']} images in batches of {data_state['batch_size']}, "
                f"now {num_examples} in batches of {config.batch_size}; the data changed"
            )
        checkpoint.load_state_into(model, resume_from.model_state, resume_from.path)
        state_path = checkpoint.training_state_path(resume_from.path)
        try:
            ema.load_state(state["ema"], {k: v.to(device) for k, v in resume_from.ema_state.items()})
            load_optimizer_state(optimizer, state["optimizer"])
            checkpoint.restore_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise checkpoint.CheckpointError(
                f"training state {state_path} does not fit the run: {checkpoint._one_line(err)}") from None
        start_step = int(state["step"])
        if start_step > total_steps:
            raise TrainError(f"the run is at step {start_step}, past the {total_steps} steps asked for")
        revision = resume_from.meta.git_revision if revision == "unknown" else revision

    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)  # the firing-rate hooks on the LIF modules still run (traced inline)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )

    def eps_model(x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        with autocast:
            return (net(x, t) if y is None else net(x, t, y)).float()

    meta = CheckpointMeta(preset=config.preset, config=model_config, step=start_step,
                          dataset=config.dataset, seed=config.seed, git_revision=revision)
    if ctx.is_main:
        _open_run(run_dir, config, meta, resume_from is not None, overwrite, ctx.world_size)
    distributed.barrier(ctx)

    def save(step: int) -> Path:
        epoch, batch = divmod(step, batches_per_epoch)
        return checkpoint.save_checkpoint(
            run_dir,
            replace(meta, step=step),
            model.state_dict(),
            ema.model.state_dict(),
            {
                "optimizer": optimizer.state_dict(),
                "ema": ema.state(),
                "rng": checkpoint.capture_rng_state(),
                "data": {"epoch": epoch, "batch_in_epoch": batch, "batches_per_epoch": batches_per_epoch,
                         "num_examples": num_examples, "batch_size": config.batch_size, "seed": config.seed,
                         "images_sha256": data_hash},
                "train_config": asdict(config),
            },
            keep=config.keep,
        )

    def stop_if_non_finite(done: int, loss: float | None = None) -> None:
        if loss is not None and not math.isfinite(loss):
            what = f"the loss is {loss}"
        elif not _all_finite(model, ema.model):
            what = "the weights are not finite"
        else:
            return
        raise NonFiniteError(
            f"training turned non-finite by step {done} ({what}); stopped without saving it; "
            f"{last_checkpoint_note(run_dir)}; lower --lr (now {config.lr:g}) or check the data"
        )

    shape = (config.batch_size, *images.shape[1:])
    lo, hi = ctx.rank * per_rank, (ctx.rank + 1) * per_rank  # this rank's slice of the global batch
    order_epoch, order = -1, torch.empty(0, dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # the diffusion loss, without the penalty
    interval_steps, interval_start, excluded_s = 0, time.perf_counter(), 0.0
    last_loss = last_rate = last_speed = None
    trained_s, trained_images = 0.0, 0
    ckpt_path: Path | None = None
    bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
               disable=not (progress and ctx.is_main))
    model.train()
    done = start_step
    try:
        for step in range(start_step, total_steps):
            epoch, batch = divmod(step, batches_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, epoch_order(num_examples, config.seed, epoch)
            index = order[batch * config.batch_size + lo : batch * config.batch_size + hi].to(device)  # (B/W,)
            t, noise = step_noise(diffusion, config.seed, step, shape)  # (B,), (B, C, H, W)
            x0 = fit_channels(images[index], model_config.in_channels)  # (B/W, C, H, W)
            y = labels[index] if num_classes_of(model) else None  # (B/W,)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step)
            loss = training_loss(eps_model, diffusion, x0, t[lo:hi].to(device), noise[lo:hi].to(device), y,
                                 learn_sigma=getattr(model_config, "learn_sigma", False))
            objective = loss
            if config.rate_penalty > 0:
                objective = loss + config.rate_penalty * meter.pooled_rate()  # the logged firing rates are its rates
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            ema.update(model)
            loss_sum += loss.detach()
            interval_steps += 1
            done = step + 1
            bar.update(1)

            if done % config.log_every == 0 or done == total_steps:
                record = _log_record(ctx, meter, loss_sum, interval_steps, done, epoch, lr_at(config, step),
                                     config.batch_size * interval_steps,
                                     time.perf_counter() - interval_start - excluded_s)
                last_loss, last_rate, last_speed = record["loss"], record["mean_firing_rate"], record["images_per_s"]
                trained_s += time.perf_counter() - interval_start - excluded_s
                trained_images += config.batch_size * interval_steps
                stop_if_non_finite(done, record["loss"])  # the loss is summed over ranks: all stop together
                if ctx.is_main:
                    artifacts.append_jsonl(run_dir / METRICS_FILE, record)
                    bar.set_postfix(_postfix(record), refresh=False)
                loss_sum.zero_()
                meter.reset()
                interval_steps, interval_start, excluded_s = 0, time.perf_counter(), 0.0

            side_start = time.perf_counter()
            due_samples = done == total_steps or (config.sample_every and done % config.sample_every == 0)
            due_ckpt = done == total_steps or (config.ckpt_every and done % config.ckpt_every == 0)
            if due_samples or due_ckpt:
                stop_if_non_finite(done)  # never a NaN grid or checkpoint; the weights are equal on all ranks
            if ctx.is_main and due_samples:
                _write_samples(ema.model, diffusion, config, run_dir / SAMPLES_DIR / f"step-{done:08d}.png", device)
            if ctx.is_main and due_ckpt:
                ckpt_path = save(done)
            excluded_s += time.perf_counter() - side_start
    except KeyboardInterrupt:
        raise TrainInterrupted(f"interrupted at step {done} of {total_steps}; {last_checkpoint_note(run_dir)}") \
            from None
    finally:
        bar.close()
    meter.remove()

    if resume_from is not None and start_step == total_steps and ctx.is_main:
        ckpt_path = resume_from.path
    hashes = tuple(distributed.all_gather_objects(ctx, param_sha256(model)))
    result = TrainResult(
        run_dir=run_dir,
        rank=ctx.rank,
        step=total_steps,
        start_step=start_step,
        final_loss=last_loss,
        mean_firing_rate=last_rate,
        images_per_s=trained_images / trained_s if trained_s > 0 else last_speed,
        wall_s=time.perf_counter() - started,
        checkpoint=ckpt_path,
        param_sha256=hashes,
    )
    if ctx.is_main:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        summary.update(world_size=ctx.world_size, preset=config.preset, dataset=config.dataset)
        artifacts.write_json(run_dir / SUMMARY_FILE, summary, overwrite=True)
    distributed.barrier(ctx)
    return result


def _all_finite(*models: nn.Module) -> bool:
    """Every parameter and floating buffer of ``models`` is finite (one device synchronisation)."""
    flags = [torch.isfinite(t).all() for m in models for t in [*m.parameters(), *m.buffers()]
             if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def last_checkpoint_note(run_dir: Path) -> str:
    """Where a stopped run can continue from: its ``latest`` checkpoint, or that there is none (one clause)."""
    try:
        latest = checkpoint.resolve_checkpoint(run_dir)
    except checkpoint.CheckpointError:
        return f"no checkpoint was saved; start again with the same command plus --overwrite (in {run_dir})"
    step = checkpoint._step_of(latest)
    return f"the last checkpoint is step {step} ({latest}); resume with: sdit train --resume {run_dir}"


def _open_run(
    run_dir: Path, config: TrainConfig, meta: CheckpointMeta, resumed: bool, overwrite: bool, world_size: int
) -> None:
    """Write ``run.json``; on resume drop metrics recorded after the checkpoint."""
    if resumed:
        metrics = run_dir / METRICS_FILE
        if metrics.is_file():
            kept = [r for r in artifacts.read_jsonl(metrics) if r.get("step", 0) <= meta.step]
            artifacts.write_jsonl(metrics, kept, overwrite=True)
    elif overwrite and rundir.is_sdit_run(run_dir):
        rundir.clear_run(run_dir)
    rundir.write_marker(run_dir)
    run = {
        "train": asdict(config),
        "model": config_to_dict(meta.config),
        "git_revision": meta.git_revision,
        "world_size": world_size,
        "resumed_at_step": meta.step if resumed else None,
    }
    artifacts.write_json(run_dir / RUN_FILE, run, overwrite=True)


def _log_record(
    ctx: distributed.DistContext,
    meter: FiringRateMeter,
    loss_sum: Tensor,
    steps: int,
    done: int,
    epoch: int,
    lr: float,
    images: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """One metrics record; sums loss and spike counts over ranks (one all-reduce)."""
    totals = meter.totals(loss_sum.device)  # (2, K)
    packed = torch.cat([loss_sum.reshape(1), totals.reshape(-1)])
    distributed.all_reduce_sum(ctx, packed)
    per_layer, mean = rates_from_totals(meter.names, packed[1:].reshape(2, -1).cpu())
    return {
        "step": done,
        "epoch": epoch,
        "loss": float(packed[0]) / (steps * ctx.world_size),
        "lr": lr,
        "images_per_s": images / elapsed_s if elapsed_s > 0 else None,
        "mean_firing_rate": mean,
        "firing_rate": per_layer,
    }


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    post = {"loss": f"{record['loss']:.4f}"}
    if record["images_per_s"] is not None:
        post["img/s"] = f"{record['images_per_s']:.1f}"
    if record["mean_firing_rate"] is not None:
        post["fr"] = f"{record['mean_firing_rate']:.4f}"
    return post


def _load_initial_weights(model: nn.Module, source: str) -> None:
    """Load ``source`` (our checkpoint or the authors' .pt) into ``model``; configs must agree."""
    from sdit.targets import load_target  # loads the authors' format too

    try:
        start = load_target(source).model
    except ValueError as err:  # TargetError, CheckpointError, AuthorsCheckpointError: a bad input file
        raise checkpoint.CheckpointError(f"--init-from: {err}") from None
    if start.config != model.config:
        raise TrainError(f"--init-from {source}: its config differs from the preset's "
                         f"({type(start.config).__name__} {start.config} vs {model.config})")
    model.load_state_dict(start.state_dict())


def _write_samples(model: nn.Module, diffusion: Diffusion, config: TrainConfig, path: Path,
                   device: torch.device) -> None:
    cfg = model.config
    shape = (config.sample_num, cfg.in_channels, cfg.image_size, cfg.image_size)
    grid = sample(model, diffusion, shape, method="ddim", num_steps=config.sample_steps, seed=config.seed,
                  device=device)  # (n, C, H, W)
    artifacts.save_image_grid(grid, path, overwrite=True)


def iter_metrics(run_dir: Path | str) -> Iterator[dict[str, Any]]:
    """The metrics records of a run, in order."""
    path = Path(run_dir) / METRICS_FILE
    if path.is_file():
        yield from artifacts.read_jsonl(path)


__all__ = [
    "FiringRateMeter",
    "RESUME_MUTABLE",
    "NonFiniteError",
    "TrainConfig",
    "TrainError",
    "TrainInterrupted",
    "TrainResult",
    "epoch_order",
    "iter_metrics",
    "load_run_config",
    "lr_at",
    "param_sha256",
    "resume_config",
    "step_noise",
    "train",
]
