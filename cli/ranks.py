"""What a command needs to run as one of several ``torchrun`` processes: quiet ranks, the process group, shards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cli.common import fail
from sdit import distributed
from sdit.distributed import DistContext
from sdit.sharding import ShardError, ShardStore
from sdit.workload import Workload


def _rank() -> int:
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def rank_output(quiet: bool, progress: bool | None) -> tuple[bool, bool | None]:
    """``--quiet`` and ``--progress`` of this process: as given on rank 0, silent (errors only) on the others."""
    return (quiet, progress) if _rank() == 0 else (True, False)


@contextmanager
def process_group(device: str) -> Iterator[DistContext]:
    """The process group of a ``torchrun`` launch (gloo on CPU, nccl with one GPU per rank on CUDA), left at
    the end; one process gets a context of one rank on ``device`` as given."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield DistContext(device=torch.device(device))
        return
    ctx = distributed.setup(device)
    try:
        yield ctx
    finally:
        distributed.teardown(ctx)


def open_shards(ctx: DistContext, directory: Path | None, model: torch.nn.Module, description: str,
                workload: Workload, preset: bool = False, **extra: Any) -> ShardStore | None:
    """The shard directory of a sampling run (``None``: none kept), opened on rank 0; exit 2 with one line on
    every rank when it holds another run's shards, or when the ranks loaded different weights of a checkpoint
    (a ``preset``'s untrained weights are made equal: every rank takes rank 0's)."""
    from sdit.quality.evaluate import sampler_record
    from sdit.training.train import param_sha256

    weights = param_sha256(model)
    if len(set(distributed.all_gather_objects(ctx, weights))) > 1:
        if not preset:
            fail(f"the {ctx.world_size} processes loaded different weights of {description}")
        # A preset's untrained weights come from each process's own random state: all take rank 0's.
        state = distributed.broadcast_object(ctx, {k: v.cpu() for k, v in model.state_dict().items()})
        model.load_state_dict(state)
        weights = param_sha256(model)
    if directory is None:
        return None
    store = ShardStore(directory, {"model": description, "weights_sha256": weights,
                                   "sampler": sampler_record(workload), "device": torch.device(ctx.device).type,
                                   **extra})
    error = None
    if ctx.is_main:
        try:
            store.open()
        except (ShardError, OSError) as err:
            error = f"--shards: {err}"
    error = distributed.broadcast_object(ctx, error)
    if error:
        fail(error)
    return store
