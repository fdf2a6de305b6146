"""The optimisation loop of one rank: steps, logging, sample grids, checkpoints, and stopping.

Each step takes this rank's slice of the global batch in the epoch's order and the timesteps and noise
of :func:`sdit.training.schedule.step_noise`, and makes one AdamW update with gradient clipping, then
one EMA update. bf16 autocast on CUDA only; the loss is taken in float32. The loop stops, without
saving them, on a non-finite loss or weights (:class:`NonFiniteError`), and on Ctrl-C
(:class:`TrainInterrupted`); either message names the last checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sdit import distributed
from sdit.checkpoint import Checkpoint, CheckpointMeta
from sdit.data import fit_channels
from sdit.diffusion import Diffusion, num_classes_of
from sdit.ema import EMA
from sdit.iddpm import training_loss
from sdit.training import metrics, run_files, state
from sdit.training.config import TrainConfig, TrainError
from sdit.training.firing_rate import FiringRateMeter
from sdit.training.schedule import epoch_order, lr_at, step_noise


class NonFiniteError(TrainError):
    """The run's loss or weights turned NaN or infinite; it stopped without saving them (one-line message)."""


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; the message says where, and how to resume."""


class Loop:
    """The optimisation loop of one rank: the model with its EMA, meter and optimizer, the data on the
    device, and what the loop reports (the last logged loss, rate and speed, the last checkpoint)."""

    def __init__(self, config: TrainConfig, run_dir: Path, ctx: distributed.DistContext, model: nn.Module,
                 images: Tensor, labels: Tensor | None, data: state.DataInfo) -> None:
        self.config, self.run_dir, self.ctx, self.model, self.data = config, run_dir, ctx, model, data
        self.images = images.to(ctx.device)  # (N, C, H, W), whole set on the device
        self.labels = labels.to(ctx.device) if labels is not None else None  # (N,)
        self.ema = EMA(model, config.ema_decay)  # before the meter's hooks
        self.meter = FiringRateMeter(model, differentiable=config.rate_penalty > 0)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = state.make_optimizer(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.diffusion = Diffusion()
        self.meta: CheckpointMeta | None = None  # set once the start step and revision are known
        self.last_loss = self.last_rate = self.last_speed = None
        self.trained_s, self.trained_images = 0.0, 0
        self.ckpt_path: Path | None = None

    def restore(self, resume_from: Checkpoint, total_steps: int) -> int:
        """Load the checkpoint's weights, EMA, optimizer and RNG states; returns its step."""
        return state.restore(resume_from, total_steps, self.config, self.data, self.model, self.ema,
                             self.optimizer, self.ctx.device)

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
                epoch, batch = divmod(step, self.data.batches_per_epoch)
                if epoch != order_epoch:
                    order_epoch, order = epoch, epoch_order(self.data.num_examples, config.seed, epoch)
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
        record = metrics.log_record(self.ctx, self.meter, loss_sum, steps, done, epoch, lr, images, elapsed_s)
        self.last_loss, self.last_rate, self.last_speed = record["loss"], record["mean_firing_rate"], \
            record["images_per_s"]
        self.trained_s += elapsed_s
        self.trained_images += images
        self.stop_if_non_finite(done, record["loss"])  # the loss is summed over ranks: all stop together
        if self.ctx.is_main:
            run_files.append_metrics(self.run_dir, record)
            bar.set_postfix(metrics.postfix(record), refresh=False)
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
            self.ckpt_path = state.save(self.run_dir, self.meta, done, config, self.data, self.model, self.ema,
                                        self.optimizer)

    def stop_if_non_finite(self, done: int, loss: float | None = None) -> None:
        """Raise :class:`NonFiniteError` if ``loss`` or any weight (raw or EMA) is not finite."""
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
