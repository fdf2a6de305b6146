"""Training: AdamW, linear warm-up, grad clipping, EMA, checkpoints, exact resume, DDP.

Choices (docs/design.md §2 where it speaks, DiT / U-ViT habits where it does not):

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

The run's config and resume rules live in :mod:`sdit.train_config`, the firing-rate meter in
:mod:`sdit.firing_rate`, the files a run writes in :mod:`sdit.run_files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sdit import checkpoint, distributed, run_files, rundir
from sdit.checkpoint import CheckpointMeta
from sdit.config import get_preset
from sdit.data import ImageSet, fit_channels, load_dataset
from sdit.diffusion import Diffusion, num_classes_of
from sdit.ema import EMA
from sdit.firing_rate import FiringRateMeter, rates_from_totals
from sdit.iddpm import training_loss
from sdit.models import build_model
from sdit.train_config import TrainConfig, TrainError, load_run_config, resume_config

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, to spread (seed, counter) pairs


class NonFiniteError(TrainError):
    """The run's loss or weights turned NaN or infinite; it stopped without saving them (one-line message)."""


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; the message says where, and how to resume."""


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
            :data:`sdit.train_config.RESUME_MUTABLE` (see :func:`sdit.train_config.resume_config`).
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
    batches_per_epoch, total_steps = _schedule(config, ctx.world_size, images.shape[0])
    data_hash = hashlib.sha256(images.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
    model_config = get_preset(config.preset)
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(ctx.device)
    if config.init_from is not None and resume_from is None:
        _load_initial_weights(model, config.init_from)
    if num_classes_of(model) and labels is None:
        raise TrainError(f"{config.preset} is class-conditional; the training data has no labels")
    loop = _Loop(config, run_dir, ctx, model, images, labels, data_hash, batches_per_epoch)
    start_step = 0
    revision = checkpoint.git_revision() if ctx.is_main else "unknown"
    if resume_from is not None:
        start_step = loop.restore(resume_from, total_steps)
        revision = resume_from.meta.git_revision if revision == "unknown" else revision
    loop.meta = CheckpointMeta(preset=config.preset, config=model_config, step=start_step,
                               dataset=config.dataset, seed=config.seed, git_revision=revision)
    if ctx.is_main:
        run_files.open_run(run_dir, config, loop.meta, resume_from is not None, overwrite, ctx.world_size)
    distributed.barrier(ctx)
    loop.run(start_step, total_steps, progress)
    ckpt_path = resume_from.path if resume_from is not None and start_step == total_steps and ctx.is_main \
        else loop.ckpt_path
    result = TrainResult(
        run_dir=run_dir,
        rank=ctx.rank,
        step=total_steps,
        start_step=start_step,
        final_loss=loop.last_loss,
        mean_firing_rate=loop.last_rate,
        images_per_s=loop.trained_images / loop.trained_s if loop.trained_s > 0 else loop.last_speed,
        wall_s=time.perf_counter() - started,
        checkpoint=ckpt_path,
        param_sha256=tuple(distributed.all_gather_objects(ctx, param_sha256(model))),
    )
    if ctx.is_main:
        run_files.write_summary(run_dir, {**asdict(result), "world_size": ctx.world_size,
                                          "preset": config.preset, "dataset": config.dataset})
    distributed.barrier(ctx)
    return result


def _schedule(config: TrainConfig, world_size: int, num_examples: int) -> tuple[int, int]:
    """``(batches_per_epoch, total_steps)`` of ``num_examples`` images in global batches over ``world_size`` ranks."""
    if config.batch_size % world_size:
        raise TrainError(f"batch size {config.batch_size} is not divisible by {world_size} processes")
    batches_per_epoch = num_examples // config.batch_size
    if batches_per_epoch == 0:
        raise TrainError(f"{num_examples} images are fewer than one batch of {config.batch_size}")
    total_steps = config.steps if config.steps is not None else config.epochs * batches_per_epoch
    return batches_per_epoch, total_steps


class _Loop:
    """The optimisation loop of one rank: the model with its EMA, meter and optimizer, the data on the
    device, and what the loop reports (the last logged loss, rate and speed, the last checkpoint)."""

    def __init__(self, config: TrainConfig, run_dir: Path, ctx: distributed.DistContext, model: nn.Module,
                 images: Tensor, labels: Tensor | None, data_hash: str, batches_per_epoch: int) -> None:
        self.config, self.run_dir, self.ctx, self.model = config, run_dir, ctx, model
        self.num_examples, self.data_hash, self.batches_per_epoch = images.shape[0], data_hash, batches_per_epoch
        self.images = images.to(ctx.device)  # (N, C, H, W), whole set on the device
        self.labels = labels.to(ctx.device) if labels is not None else None  # (N,)
        self.ema = EMA(model, config.ema_decay)  # before the meter's hooks
        self.meter = FiringRateMeter(model, differentiable=config.rate_penalty > 0)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.diffusion = Diffusion()
        self.meta: CheckpointMeta | None = None  # set once the start step and revision are known
        self.last_loss = self.last_rate = self.last_speed = None
        self.trained_s, self.trained_images = 0.0, 0
        self.ckpt_path: Path | None = None

    def restore(self, resume_from: checkpoint.Checkpoint, total_steps: int) -> int:
        """Load the checkpoint's weights, EMA, optimizer and RNG states; returns its step."""
        config, state_path = self.config, checkpoint.training_state_path(resume_from.path)
        state = checkpoint.load_training_state(state_path, expected_sha256=resume_from.sha256,
                                               schema=checkpoint.TRAINING_STATE_SCHEMA)
        data_state = state["data"]
        if data_state["images_sha256"] != self.data_hash or data_state["batch_size"] != config.batch_size:
            raise TrainError(
                f"the run saw {data_state['num_examples']} images in batches of {data_state['batch_size']}, "
                f"now {self.num_examples} in batches of {config.batch_size}; the data changed"
            )
        checkpoint.load_state_into(self.model, resume_from.model_state, resume_from.path)
        try:
            self.ema.load_state(state["ema"], {k: v.to(self.ctx.device) for k, v in resume_from.ema_state.items()})
            load_optimizer_state(self.optimizer, state["optimizer"])
            checkpoint.restore_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise checkpoint.CheckpointError(
                f"training state {state_path} does not fit the run: {checkpoint._one_line(err)}") from None
        start_step = int(state["step"])
        if start_step > total_steps:
            raise TrainError(f"the run is at step {start_step}, past the {total_steps} steps asked for")
        return start_step

    def eps_model(self) -> Any:
        """The model as the loss calls it: DDP and ``torch.compile`` as configured, bf16 autocast on CUDA."""
        device, net = self.ctx.device, self.model
        if self.ctx.distributed:
            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if self.config.compile:
            net = torch.compile(net)  # the firing-rate hooks on the LIF modules still run (traced inline)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

        def eps_model(x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
            with autocast:
                return (net(x, t) if y is None else net(x, t, y)).float()

        return eps_model

    def run(self, start_step: int, total_steps: int, progress: bool) -> None:
        """Train from ``start_step`` to ``total_steps``, logging, sampling and checkpointing as configured."""
        config, ctx = self.config, self.ctx
        eps_model = self.eps_model()
        per_rank = config.batch_size // ctx.world_size
        lo, hi = ctx.rank * per_rank, (ctx.rank + 1) * per_rank  # this rank's slice of the global batch
        order_epoch, order = -1, torch.empty(0, dtype=torch.long)
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)  # the diffusion loss, without the penalty
        interval_steps, interval_start, excluded_s = 0, time.perf_counter(), 0.0
        bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                   disable=not (progress and ctx.is_main))
        self.model.train()
        done = start_step
        try:
            for step in range(start_step, total_steps):
                epoch, batch = divmod(step, self.batches_per_epoch)
                if epoch != order_epoch:
                    order_epoch, order = epoch, epoch_order(self.num_examples, config.seed, epoch)
                index = order[batch * config.batch_size + lo : batch * config.batch_size + hi]  # (B/W,)
                loss_sum += self.step(eps_model, step, index.to(ctx.device), lo, hi)
                interval_steps += 1
                done = step + 1
                bar.update(1)
                if done % config.log_every == 0 or done == total_steps:
                    elapsed_s = time.perf_counter() - interval_start - excluded_s
                    self.log(loss_sum, interval_steps, done, epoch, lr_at(config, step), elapsed_s, bar)
                    interval_steps, interval_start, excluded_s = 0, time.perf_counter(), 0.0
                side_start = time.perf_counter()
                self.side_work(done, total_steps)
                excluded_s += time.perf_counter() - side_start
        except KeyboardInterrupt:
            raise TrainInterrupted(
                f"interrupted at step {done} of {total_steps}; {run_files.last_checkpoint_note(self.run_dir)}"
            ) from None
        finally:
            bar.close()
        self.meter.remove()

    def step(self, eps_model: Any, step: int, index: Tensor, lo: int, hi: int) -> Tensor:
        """One optimizer step on this rank's images ``index`` (B/W,); returns the detached diffusion loss."""
        config, device, model_config = self.config, self.ctx.device, self.model.config
        t, noise = step_noise(self.diffusion, config.seed, step, (config.batch_size, *self.images.shape[1:]))
        x0 = fit_channels(self.images[index], model_config.in_channels)  # (B/W, C, H, W)
        y = self.labels[index] if num_classes_of(self.model) else None  # (B/W,)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(config, step)
        loss = training_loss(eps_model, self.diffusion, x0, t[lo:hi].to(device), noise[lo:hi].to(device), y,
                             learn_sigma=getattr(model_config, "learn_sigma", False))  # t (B,), noise (B, C, H, W)
        objective = loss
        if config.rate_penalty > 0:
            objective = loss + config.rate_penalty * self.meter.pooled_rate()  # the logged firing rates are its rates
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, config.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        return loss.detach()

    def log(self, loss_sum: Tensor, steps: int, done: int, epoch: int, lr: float, elapsed_s: float,
            bar: tqdm) -> None:
        """Write the metrics record of the last ``steps`` steps and start the next interval."""
        images = self.config.batch_size * steps
        record = _log_record(self.ctx, self.meter, loss_sum, steps, done, epoch, lr, images, elapsed_s)
        self.last_loss, self.last_rate, self.last_speed = record["loss"], record["mean_firing_rate"], \
            record["images_per_s"]
        self.trained_s += elapsed_s
        self.trained_images += images
        self.stop_if_non_finite(done, record["loss"])  # the loss is summed over ranks: all stop together
        if self.ctx.is_main:
            run_files.append_metrics(self.run_dir, record)
            bar.set_postfix(_postfix(record), refresh=False)
        loss_sum.zero_()
        self.meter.reset()

    def side_work(self, done: int, total_steps: int) -> None:
        """The sample grid and checkpoint due after step ``done`` (rank 0 writes them)."""
        config = self.config
        due_samples = done == total_steps or (config.sample_every and done % config.sample_every == 0)
        due_ckpt = done == total_steps or (config.ckpt_every and done % config.ckpt_every == 0)
        if due_samples or due_ckpt:
            self.stop_if_non_finite(done)  # never a NaN grid or checkpoint; the weights are equal on all ranks
        if self.ctx.is_main and due_samples:
            run_files.write_samples(self.ema.model, self.diffusion, config, self.run_dir, done, self.ctx.device)
        if self.ctx.is_main and due_ckpt:
            self.ckpt_path = self.save(done)

    def save(self, step: int) -> Path:
        config = self.config
        epoch, batch = divmod(step, self.batches_per_epoch)
        return checkpoint.save_checkpoint(
            self.run_dir,
            replace(self.meta, step=step),
            self.model.state_dict(),
            self.ema.model.state_dict(),
            {
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state(),
                "rng": checkpoint.capture_rng_state(),
                "data": {"epoch": epoch, "batch_in_epoch": batch, "batches_per_epoch": self.batches_per_epoch,
                         "num_examples": self.num_examples, "batch_size": config.batch_size, "seed": config.seed,
                         "images_sha256": self.data_hash},
                "train_config": asdict(config),
            },
            keep=config.keep,
        )

    def stop_if_non_finite(self, done: int, loss: float | None = None) -> None:
        if loss is not None and not math.isfinite(loss):
            what = f"the loss is {loss}"
        elif not _all_finite(self.model, self.ema.model):
            what = "the weights are not finite"
        else:
            return
        raise NonFiniteError(
            f"training turned non-finite by step {done} ({what}); stopped without saving it; "
            f"{run_files.last_checkpoint_note(self.run_dir)}; lower --lr (now {self.config.lr:g}) or check the data"
        )


def _all_finite(*models: nn.Module) -> bool:
    """Every parameter and floating buffer of ``models`` is finite (one device synchronisation)."""
    flags = [torch.isfinite(t).all() for m in models for t in [*m.parameters(), *m.buffers()]
             if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


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


__all__ = [
    "NonFiniteError",
    "TrainInterrupted",
    "TrainResult",
    "epoch_order",
    "load_optimizer_state",
    "lr_at",
    "make_optimizer",
    "param_sha256",
    "step_noise",
    "train",
]
