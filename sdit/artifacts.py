"""The one layer that writes files: atomic writes that never clobber unasked."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as safetensors_save
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


def write_bytes(path: Path | str, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), overwrite=overwrite)


def write_json(path: Path | str, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return write_bytes(path, text.encode(), overwrite=overwrite)


def write_jsonl(path: Path | str, records: Iterable[dict[str, Any]], overwrite: bool = False) -> Path:
    """Write ``records`` as JSON lines atomically (replacing the whole file)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    return write_bytes(path, text.encode(), overwrite=overwrite)


def append_jsonl(path: Path | str, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` (created if missing) and flush it to disk.

    Appends are not atomic: a crash can leave a torn last line, which
    :func:`read_jsonl` skips.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """The complete JSON records of a JSON-lines file; a torn (unparsable) last line is dropped."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return records


def save_tensors(
    tensors: dict[str, Tensor], path: Path | str, metadata: dict[str, str] | None = None, overwrite: bool = False
) -> Path:
    """Save named tensors as one safetensors file (contiguous CPU copies), atomically."""
    data = safetensors_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return write_bytes(path, data, overwrite=overwrite)


def save_torch(obj: Any, path: Path | str, overwrite: bool = False) -> Path:
    """``torch.save`` ``obj`` atomically. Keep ``obj`` to tensors and plain containers so that
    ``torch.load(weights_only=True)`` can read it back."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue(), overwrite=overwrite)


def remove_files(paths: Iterable[Path | str]) -> None:
    """Delete files; missing ones are ignored."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def clear_run_dir(run_dir: Path | str, names: Iterable[str]) -> None:
    """Remove the named entries (files or folders) of a run directory, for ``--overwrite``."""
    run_dir = Path(run_dir)
    for name in names:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def remove_stale_temp_files(directory: Path | str) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` leaves when its process is killed.

    Call it only where one process writes (rank 0 of a run), never while a write is under way.
    """
    directory = Path(directory)
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    remove_files(stale)
    return stale
