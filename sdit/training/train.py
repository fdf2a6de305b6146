"""Training a preset: AdamW, linear warm-up, grad clipping, EMA, checkpoints, exact resume, DDP.

Choices (docs/design.md §2 where it speaks, DiT / U-ViT habits where it does not):

- The learning rate rises linearly over ``warmup_steps`` and then stays constant
  (:mod:`sdit.training.schedule`).
- ``batch_size`` is the global batch: under ``torchrun`` each of the W ranks takes
  ``batch_size / W`` images of it.
- Randomness is a function of (seed, step), not of a stream (:mod:`sdit.training.schedule`), so a
  resume at step s continues exactly, on any number of ranks. The global RNG states are still saved
  and restored for code that uses them.
- bf16 autocast on CUDA only; the loss is taken in float32.

:func:`train` checks the run directory and the resume, builds the model and runs
:class:`sdit.training.loop.Loop` on every rank; the other jobs have their own modules
(:mod:`sdit.training`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from sdit import checkpoint, distributed, rundir
from sdit.checkpoint import CheckpointMeta
from sdit.config import get_preset
from sdit.data import ImageSet, load_dataset
from sdit.diffusion import num_classes_of
from sdit.models import build_model
from sdit.training import run_files
from sdit.training.config import TrainConfig, TrainError, load_run_config, resume_config
from sdit.training.loop import Loop
from sdit.training.schedule import run_length
from sdit.training.state import DataInfo


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
            :data:`sdit.training.config.RESUME_MUTABLE` (see :func:`sdit.training.config.resume_config`).
        run_dir: Run directory: ``run.json``, ``metrics.jsonl``, ``samples/``, ``checkpoints/``,
            and ``summary.json`` at the end.
        resume: Continue from the latest checkpoint in ``run_dir``.
        overwrite: Start afresh in a non-empty ``run_dir``, deleting its previous run.
        data: Images to train on instead of loading ``config.dataset`` (tests, custom sets).
        progress: Show a progress bar (rank 0).

    Raises:
        TrainError, sdit.data.DatasetError, sdit.checkpoint.CheckpointError: bad input,
            before any file is written. TrainError also when another process runs in ``run_dir``.
        sdit.training.loop.NonFiniteError: the loss or the weights turned non-finite; the last finite
            checkpoint stays ``latest``.
        sdit.training.loop.TrainInterrupted: Ctrl-C; the message names the last checkpoint and how to resume.
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
    batches_per_epoch, total_steps = run_length(config, ctx.world_size, images.shape[0])
    data = DataInfo.of(images, batches_per_epoch)
    model_config = get_preset(config.preset)
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(ctx.device)
    if config.init_from is not None and resume_from is None:
        _load_initial_weights(model, config.init_from)
    if num_classes_of(model) and labels is None:
        raise TrainError(f"{config.preset} is class-conditional; the training data has no labels")
    loop = Loop(config, run_dir, ctx, model, images, labels, data)
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


__all__ = ["TrainResult", "param_sha256", "train"]
