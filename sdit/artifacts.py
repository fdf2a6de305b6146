"""The one layer that writes files: atomic writes that never clobber unasked.

Text and bytes need no torch: torch, numpy, PIL and safetensors are imported by the functions that
write tensors and images, so a reader of saved results (the report) does not load them.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

STDOUT = "-"  # an output path of "-" means standard output, where a command allows it
NAME_MAX = 255  # bytes in one path component (Linux, most file systems)
PATH_MAX = 4096  # bytes in a whole path (Linux)
_TEMP_NAME_CHARS = 64  # of the target's name kept in a temporary file's name, so a long name still fits
_SYSTEM_TREES = ("/proc", "/sys", "/dev")  # pseudo file systems: never a place for a new file
_SYSTEM_EXCEPTIONS = ("/dev/shm",)  # a tmpfs for anyone's files


class OverwriteError(FileExistsError):
    """The target exists and the caller did not ask to overwrite it."""

    def __str__(self) -> str:
        return f"{self.filename} exists; pass --overwrite to replace it"


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message is one line, ``OPTION: why``."""


def is_stdout(path: Path | str | None) -> bool:
    """Whether ``path`` is ``-``, standard output."""
    return path is not None and str(path) == STDOUT


def _under_system_tree(path: str) -> bool:
    def under(tree: str) -> bool:
        return path == tree or path.startswith(tree + "/")

    return any(map(under, _SYSTEM_TREES)) and not any(map(under, _SYSTEM_EXCEPTIONS))


def _is_stream(path: str) -> bool:
    """An existing character device, FIFO or socket (``/dev/null``, ``/dev/tty``): written to, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/thread-self/fd)/(\d+)$")
_STD_PATHS = {"/dev/stdout": 1, "/dev/stderr": 2}


def _fd_path(path: str) -> int | None:
    """The open file descriptor an absolute path names (``/dev/stdout``, ``/dev/fd/3``), or None."""
    if path in _STD_PATHS:
        return _STD_PATHS[path]
    match = _FD_PATH.match(path)
    return int(match.group(1)) if match else None


def _resolve(path: Path | str) -> tuple[Path, int | None]:
    """Follow ``path``'s symlinks one by one: ``(file, None)``, or ``(path, fd)`` where the chain reaches an open
    descriptor (``/dev/stdout`` links to ``/proc/self/fd/1``, which must be written to, not replaced)."""
    current = os.path.abspath(os.fspath(path))
    for _ in range(40):  # the kernel's own limit on links followed
        fd = _fd_path(current)
        if fd is not None:
            return Path(current), fd
        if not os.path.islink(current):
            break
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    resolved = os.path.realpath(current)
    fd = _fd_path(resolved)
    return Path(resolved), fd


def output_target(path: Path | str) -> Path:
    """The file a write to ``path`` ends in: symlinks followed (also a dangling one), made absolute."""
    return _resolve(path)[0]


def _probe_writable(directory: Path) -> str | None:
    """Why files cannot be created in the existing ``directory``, or None: creates and removes a probe file."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".sdit-probe-", suffix=".tmp")
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    os.unlink(probe)
    return None


def check_output(option: str, path: Path | str, overwrite: bool) -> Path:
    """Check that ``path`` may be written as one file by the option named ``option``; see :func:`check_outputs`.

    Returns:
        The file the write will end in (:func:`output_target`).

    Raises:
        OutputError: one line, ``OPTION: why``.
    """
    text = os.fspath(path)
    if text == "":
        raise OutputError(f"{option}: empty path")
    if "\0" in text:
        raise OutputError(f"{option}: the path contains a NUL byte")
    for name in Path(text).parts:
        if len(os.fsencode(name)) > NAME_MAX:
            raise OutputError(f"{option}: file name too long ({len(os.fsencode(name))} bytes, at most {NAME_MAX}): "
                              f"{name[:40]}...")
    if len(os.fsencode(os.path.abspath(text))) >= PATH_MAX:
        raise OutputError(f"{option}: path too long (at most {PATH_MAX - 1} bytes)")
    target, fd = _resolve(text)
    if fd is not None:
        try:
            os.fstat(fd)
        except OSError:
            raise OutputError(f"{option}: {text} names file descriptor {fd}, which is not open") from None
        return target
    if _is_stream(str(target)):
        return target  # written to in place, nothing replaced
    if _under_system_tree(str(target)):
        tree = "/" + target.parts[1]
        raise OutputError(f"{option}: {text} is inside {tree}, a system file system; write somewhere else")
    if target.is_dir():
        raise OutputError(f"{option}: {text} is a directory; give a file name")
    if os.path.lexists(target):
        if not target.is_file():
            raise OutputError(f"{option}: {text} exists and is not a regular file")
        if not overwrite:
            raise OutputError(f"{option}: {text} exists; pass --overwrite to replace it")
    ancestor = target.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{option}: {ancestor} is a file, not a directory, so {text} cannot be created")
    reason = _probe_writable(ancestor)
    if reason is not None:
        raise OutputError(f"{option}: cannot write in {ancestor}: {reason}")
    return target


def check_outputs(paths: Mapping[str, Path | str | None], overwrite: bool, stdout_ok: Iterable[str] = ()) -> None:
    """Check every output path of a command before any work starts.

    Args:
        paths: option name (``"--json"``) -> path given; None (option not given) is skipped.
        overwrite: whether existing files may be replaced (``--overwrite``).
        stdout_ok: the options for which ``-`` (standard output) is allowed.

    Raises:
        OutputError: one line, ``OPTION: why``: ``-`` where stdout is not allowed, two options naming one file
            (also through symlinks or relative paths), an existing file without ``overwrite``, a directory given
            as a file, a parent that is a file or cannot be created, an unwritable place (``/proc``, ``/sys``,
            read-only), a name too long.
    """
    allowed = set(stdout_ok)
    seen: dict[object, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        if is_stdout(path):
            if option not in allowed:
                raise OutputError(f"{option}: '-' (standard output) is not supported here; give a file name")
            key: object = ("fd", 1)
        else:
            target = check_output(option, path, overwrite)
            fd = _resolve(path)[1]
            key = target if fd is None else ("fd", fd)
            if str(target) == os.devnull:
                continue  # discarding twice loses nothing
            if fd is None and target.is_file():
                info = os.stat(target)
                key = (info.st_dev, info.st_ino)  # hard links too
        if key in seen:
            raise OutputError(f"{option}: {path} is the same output as {seen[key]}; give each output its own file")
        seen[key] = option


def _default_mode() -> int:
    """0o666 less the process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None], overwrite: bool = False) -> Path:
    """Write through ``write(fh)`` into a temporary file beside the target, fsync, rename.

    A reader, or a crash mid-write, sees either the old file or the complete new one. ``-`` writes to
    standard output; a symlink is written through (its target is replaced, the link stays); a
    character device or FIFO (``/dev/stdout``, ``/dev/null``) is written to directly, never replaced. A
    new file gets the permissions the umask gives; a replaced file keeps its own.

    Raises:
        OverwriteError: the target exists and ``overwrite`` is false.
        OutputError: the target is a directory or not a regular file.
    """
    if is_stdout(path):
        sys.stdout.flush()
        stream = sys.stdout.buffer
        write(stream)
        stream.flush()
        return Path(STDOUT)
    path = Path(path)
    target, fd = _resolve(path)
    if fd is not None:  # /dev/stdout and the like: the descriptor itself, neither reopened nor truncated
        if fd in (1, 2):
            (sys.stdout if fd == 1 else sys.stderr).flush()
        with os.fdopen(os.dup(fd), "wb") as fh:
            write(fh)
        return path
    if _is_stream(str(target)):
        with open(target, "wb") as fh:
            write(fh)
        return path
    if target.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    if os.path.lexists(target):
        if not target.is_file():
            raise OutputError(f"{path} exists and is not a regular file")
        if not overwrite:
            raise OverwriteError(0, "exists", str(path))
        mode = stat.S_IMODE(os.stat(target).st_mode)
    else:
        mode = _default_mode()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:_TEMP_NAME_CHARS]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] -> one (rows*H', cols*W', C) uint8 grid."""
    import torch

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
    from PIL import Image

    grid = image_grid(images)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return atomic_write(path, lambda fh: picture.save(fh, format="PNG"), overwrite=overwrite)


def write_bytes(path: Path | str, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), overwrite=overwrite)


def _dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON: a NaN or infinity (which JSON has no word for) is an error, never ``NaN`` in a file."""
    try:
        return json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"refusing to write non-finite numbers as JSON ({err})") from None


def write_json(path: Path | str, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) atomically."""
    text = _dumps(obj, indent=2) + "\n"
    return write_bytes(path, text.encode(), overwrite=overwrite)


def write_jsonl(path: Path | str, records: Iterable[dict[str, Any]], overwrite: bool = False) -> Path:
    """Write ``records`` as JSON lines atomically (replacing the whole file)."""
    text = "".join(_dumps(r) + "\n" for r in records)
    return write_bytes(path, text.encode(), overwrite=overwrite)


def append_jsonl(path: Path | str, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` (created if missing) and flush it to disk.

    Appends are not atomic: a crash can leave a torn last line, which
    :func:`read_jsonl` skips.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(_dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


MAX_JSON_BYTES = 16 * 2**20  # an evaluation record or a provenance file is a few kB; more is not one


def read_small_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in the regular file ``path``, read only up to ``max_bytes``.

    Raises:
        OSError: not a regular file (a device, a FIFO, a folder) or larger than the bound.
        UnicodeDecodeError, json.JSONDecodeError: not JSON text.
    """
    if not os.path.isfile(path):  # before opening: a FIFO would block the open itself
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the check
            raise OSError(f"{path} is not a regular file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"{path} is larger than {max_bytes // 2**20} MiB")
    return json.loads(data.decode("utf-8"), parse_constant=lambda c: float("nan"))


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
    from safetensors.torch import save as safetensors_save

    data = safetensors_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return write_bytes(path, data, overwrite=overwrite)


def save_torch(obj: Any, path: Path | str, overwrite: bool = False) -> Path:
    """``torch.save`` ``obj`` atomically. Keep ``obj`` to tensors and plain containers so that
    ``torch.load(weights_only=True)`` can read it back."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue(), overwrite=overwrite)


def remove_files(paths: Iterable[Path | str]) -> None:
    """Delete files; missing ones are ignored."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def remove_stale_temp_files(directory: Path | str) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` leaves when its process is killed.

    Call it only where one process writes (rank 0 of a run), never while a write is under way.
    """
    directory = Path(directory)
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    remove_files(stale)
    return stale
