"""A set of images drawn by one process or many: who draws which batch, resumable shards.

Each image has its own noise (:mod:`sdit.noise`), so the set depends on the seed and N only: not on the
batch size, nor on how many processes draw it.

The set is cut into batches of the batch size, in index order ([0, B), [B, 2B), ...); under
``torchrun`` rank r draws batches r, r + W, r + 2W, ... of W ranks. A batch holds the same images
whatever W is, so the samples are bit for bit those of one process with the same batch size (a
different batch size gives the same noise, but batched kernels round differently). With a shard
directory each finished batch is kept as one safetensors file and reused when the run is started
again, by any number of ranks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from sdit import distributed, progress
from sdit.artifacts import save_tensors, write_json
from sdit.diffusion import num_classes_of, sample, uniform_labels
from sdit.noise import ImageNoise
from sdit.workload import Workload

SHARD_FORMAT = "sdit-shards/1"
IDENTITY_FILE = "shards.json"


def batches(num: int, batch_size: int) -> list[range]:
    """The batches of a set of ``num`` images: [0, B), [B, 2B), ..., the last one smaller."""
    return [range(start, min(start + batch_size, num)) for start in range(0, num, batch_size)]


def rank_batches(spans: Sequence[range], rank: int, world_size: int) -> list[range]:
    """The batches rank ``rank`` of ``world_size`` draws: every ``world_size``-th from its own."""
    return list(spans[rank::world_size])


class ShardError(ValueError):
    """A shard directory of another run, or a shard file that cannot be read."""


class ShardStore:
    """A directory of finished batches (``samples-START-STOP.safetensors``) of one run.

    ``shards.json`` records what makes the samples what they are (the model's weights, the sampler,
    the batch size, the device type); a directory made for another run is refused, not mixed in.
    """

    def __init__(self, directory: Path | str, identity: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.identity = {"format": SHARD_FORMAT, **identity}

    def open(self) -> None:
        """Create the directory and its ``shards.json``, or check the one there.

        Raises:
            ShardError: the directory holds shards of a run with other settings, or its record is unreadable.
        """
        path = self.directory / IDENTITY_FILE
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise ShardError(f"{path}: unreadable shard record ({err}); remove it or use another directory") \
                    from None
            wanted = json.loads(json.dumps(self.identity))
            if found != wanted:
                keys = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
                raise ShardError(f"{self.directory} holds the shards of another run ({', '.join(keys)} differ: "
                                 f"{', '.join(f'{k} {found.get(k)!r} there, {wanted.get(k)!r} now' for k in keys)}); "
                                 "use another directory")
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(path, self.identity)

    def path(self, span: range) -> Path:
        return self.directory / f"samples-{span.start:05d}-{span.stop:05d}.safetensors"

    def load(self, span: range) -> Tensor | None:
        """The saved samples of ``span``, or ``None`` when that batch has not finished.

        Raises:
            ShardError: the file is not a shard of this run.
        """
        path = self.path(span)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                samples = fh.get_tensor("samples")
        except (OSError, SafetensorError) as err:
            raise ShardError(f"{path}: unreadable shard ({err}); delete it to draw that batch again") from None
        if meta.get("identity") != json.dumps(self.identity, sort_keys=True) or len(samples) != len(span):
            raise ShardError(f"{path}: not a shard of this run; delete it to draw that batch again")
        return samples

    def save(self, span: range, samples: Tensor) -> None:
        save_tensors({"samples": samples}, self.path(span),
                     metadata={"identity": json.dumps(self.identity, sort_keys=True)}, overwrite=True)


def set_labels(model: nn.Module, num: int, seed: int, labels: Tensor | None = None) -> Tensor | None:
    """(num,) classes of the images of a set for a class-conditional model (``None`` for another): ``labels``,
    or the first ``num`` draws of one CPU generator seeded with ``seed``, uniform over the classes (a
    prefix: image i's class does not depend on ``num``)."""
    classes = num_classes_of(model)
    if not classes:
        return None
    if labels is not None:
        return labels
    return uniform_labels(classes, num, seed)


def draw_batch(model: nn.Module, workload: Workload, span: range, device: torch.device | str = "cpu",
               labels: Tensor | None = None) -> Tensor:
    """Images ``span`` of the set of ``workload``'s sampler and seed, (len(span), C, H, W) on the CPU.

    Args:
        labels: (N,) classes of the whole set (:func:`set_labels`) for a class-conditional model.
    """
    batch = replace(workload, batch_size=len(span))
    noise = ImageNoise(workload.seed, span, device)
    y = labels[span.start:span.stop] if labels is not None else None
    return sample(model, batch, device=device, labels=y, noise=noise).cpu()


def draw_set(model: nn.Module, num: int, workload: Workload, device: torch.device | str = "cpu",
             ctx: distributed.DistContext | None = None, store: ShardStore | None = None,
             labels: Tensor | None = None,
             window: Callable[[int], AbstractContextManager[object]] | None = None) -> tuple[Tensor, int]:
    """The ``num`` images of the set (N, C, H, W) on every rank, in index order, and how many batches were
    taken from ``store`` instead of drawn (summed over ranks).

    Each rank draws its batches (:func:`rank_batches`, ``workload.batch_size`` images each), saving each to
    ``store`` as it finishes and taking those already there; the ranks then exchange them.

    Args:
        labels: (N,) classes of a class-conditional model's images (default: :func:`set_labels`).
        window: Called on each rank with the number of images that rank will draw (its batches not taken
            from ``store``); the context it returns holds that rank's drawing (and saving) and nothing else:
            not reading ``store``, not the exchange between ranks. A power meter's window goes here.
    """
    ctx = ctx or distributed.DistContext()
    labels = set_labels(model, num, workload.seed, labels)
    spans = batches(num, workload.batch_size)
    mine = rank_batches(spans, ctx.rank, ctx.world_size)
    done: dict[int, Tensor] = {}
    for span in mine if store is not None else ():
        images = store.load(span)
        if images is not None:
            done[span.start] = images
    reused = len(done)
    todo = [span for span in mine if span.start not in done]
    with progress.task(f"sampling {sum(map(len, mine))} images, batches of {workload.batch_size}",
                       sum(map(len, mine))) as images_done:
        images_done(sum(map(len, done.values())))
        with window(sum(map(len, todo))) if window is not None else nullcontext():
            for span in todo:
                images = draw_batch(model, workload, span, device, labels)
                if store is not None:
                    store.save(span, images)
                done[span.start] = images
                images_done(sum(map(len, done.values())))
    gathered = distributed.all_gather_objects(ctx, (done, reused))
    everything = {start: images for part, _ in gathered for start, images in part.items()}
    return torch.cat([everything[span.start] for span in spans]), sum(count for _, count in gathered)
