"""The one layer that writes files: atomic writes that never clobber unasked."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor


class OverwriteError(FileExistsError):
    """The target exists and the caller did not ask to overwrite it."""

    def __str__(self) -> str:
        return f"{self.filename} exists; pass --overwrite to replace it"


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None], overwrite: bool = False) -> Path:
    """Write through ``write(fh)`` into a temporary file beside ``path``, fsync, rename.

    A reader, or a crash mid-write, sees either the old file or the complete new one.

    Raises:
        OverwriteError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OverwriteError(0, "exists", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] -> one (rows*H', cols*W', C) uint8 grid."""
    batch, channels, height, width = images.shape
    nrow = nrow or math.ceil(math.sqrt(batch))
    rows = math.ceil(batch / nrow)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.zeros(channels, rows * (height + pad) + pad, nrow * (width + pad) + pad, dtype=torch.uint8)
    for i in range(batch):
        r, c = divmod(i, nrow)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[:, top : top + height, left : left + width] = pixels[i]
    return grid.permute(1, 2, 0).numpy()  # (H', W', C)


def save_image_grid(images: Tensor, path: Path | str, overwrite: bool = False) -> Path:
    """Save (B, C, H, W) images in [-1, 1] as a PNG grid, atomically."""
    grid = image_grid(images)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return atomic_write(path, lambda fh: picture.save(fh, format="PNG"), overwrite=overwrite)
