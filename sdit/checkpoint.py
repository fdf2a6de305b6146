"""Checkpoints: weights as safetensors with JSON metadata, training state as a tensors-only file.

A run directory keeps its checkpoints in ``checkpoints/``; one checkpoint is three files
sharing a stem, and a pointer names the newest complete one::

    checkpoints/step-00001000.safetensors  # "ema.<param>" and "model.<param>" tensors;
                                           # the metadata (JSON) sits in the header
    checkpoints/step-00001000.json         # the same metadata, for people
    checkpoints/step-00001000.train.pt     # optimizer, EMA counter, RNG states, data order
    checkpoints/latest                     # "step-00001000", written last

Every file is written through :mod:`sdit.artifacts` (temporary file, fsync, rename) and
``latest`` only after the other three, so a run killed mid-save leaves the previous
checkpoint as ``latest`` and loadable. The safetensors file stands alone: with its header
metadata it rebuilds the model (``load_model``), so it can be shipped by itself.

The training state is read with ``torch.load(weights_only=True)`` only: a file holding a
pickled object that would run code is refused before anything in it executes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from sdit import artifacts
from sdit.config import PRESETS, ModelConfig, config_from_dict, config_to_dict
from sdit.models import build_model

FORMAT = "sdit-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS_SUFFIX = ".safetensors"
SHIPPED_WEIGHTS = "model.safetensors"  # the one weights file of a shipped directory (checkpoints/<name>/)
META_SUFFIX = ".json"
STATE_SUFFIX = ".train.pt"
EMA_PREFIX = "ema."
MODEL_PREFIX = "model."
_HEADER_KEY = "sdit"  # the key of the JSON metadata in the safetensors header
_STEM = re.compile(r"^step-(\d{8,})$")
MAX_PARAMS = 2_000_000_000  # elements in one weight set: 40x the largest preset; more is not a model of ours
_MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}  # the float dtypes a weight may have
_INT_DTYPES = {torch.int8: "I8"}  # integer tensors a model may declare (quantized weights), by their safetensors name
_TENSOR_BYTES = {**_DTYPE_BYTES, "I8": 1}
_SEED_MAX = 2**63 - 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe, or does not fit its config (one-line message)."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a weights file says about itself.

    Attributes:
        preset: Preset name the run was started from.
        config: The full model config (authoritative; the preset may have changed since).
        step: Optimizer steps taken.
        dataset: Training dataset name.
        seed: Training seed.
        git_revision: ``git rev-parse HEAD`` of the code that trained it (``-dirty`` when
            tracked files had changes), or ``"unknown"``.
    """

    preset: str
    config: ModelConfig
    step: int
    dataset: str
    seed: int
    git_revision: str = "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "preset": self.preset,
            "config": config_to_dict(self.config),
            "step": self.step,
            "dataset": self.dataset,
            "seed": self.seed,
            "git_revision": self.git_revision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | str = "checkpoint") -> CheckpointMeta:
        """Parse :meth:`to_dict` output.

        Raises:
            CheckpointError: wrong format tag, missing keys, or an invalid config.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: metadata is not a JSON object")
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: metadata format is {_one_line(repr(data.get('format')))[:60]}, "
                                  f"expected {FORMAT!r}")
        missing = [key for key in ("preset", "config", "step", "dataset", "seed") if key not in data]
        if missing:
            raise CheckpointError(f"{source}: invalid checkpoint metadata: missing {', '.join(missing)}")
        for key, kind in (("preset", str), ("dataset", str), ("git_revision", str), ("step", int), ("seed", int)):
            value = data.get(key, "unknown")
            if isinstance(value, bool) or not isinstance(value, kind):
                raise CheckpointError(f"{source}: invalid checkpoint metadata: {key} must be "
                                      f"{'a string' if kind is str else 'an integer'}, got {type(value).__name__}")
        if not 0 <= data["step"] <= 10**12 or not 0 <= data["seed"] <= _SEED_MAX:
            raise CheckpointError(f"{source}: invalid checkpoint metadata: step or seed out of range")
        try:
            config = config_from_dict(data["config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid model config: {_one_line(err)}") from None
        return cls(
            preset=preset_label(data["preset"], config),
            config=config,
            step=data["step"],
            dataset=data["dataset"][:200],
            seed=data["seed"],
            git_revision=data.get("git_revision", "unknown")[:200],
        )


def preset_label(claimed: str, config: ModelConfig) -> str:
    """The preset a config is, whatever a file claims: ``claimed`` if that preset has exactly this config,
    else the first preset that has it, else ``custom-<kind>``."""
    matches = [name for name, preset in PRESETS.items() if preset == config]
    if claimed in matches:
        return claimed
    return matches[0] if matches else f"custom-{config.kind}"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded weights file: its metadata and both weight sets (CPU tensors)."""

    path: Path
    meta: CheckpointMeta
    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor]
    sha256: str


def checkpoint_stem(step: int) -> str:
    """``step-00001000`` for step 1000 (zero-padded so names sort by step)."""
    return f"step-{step:08d}"


def git_revision() -> str:
    """The commit of the code in use, ``-dirty`` if tracked files changed, else ``"unknown"``."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev or "unknown"


def save_checkpoint(
    run_dir: Path | str,
    meta: CheckpointMeta,
    model_state: dict[str, Tensor],
    ema_state: dict[str, Tensor],
    train_state: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write one checkpoint into ``run_dir/checkpoints``, point ``latest`` at it, prune old ones.

    Order: weights, metadata, training state, ``latest``, then deletion of all but the
    ``keep`` newest checkpoints at or below ``meta.step`` (files above it are leftovers
    of a run killed mid-save and are deleted too). Files of an earlier, interrupted save
    at the same step are replaced.

    Args:
        train_state: Tensors and plain containers only (``torch.load(weights_only=True)``
            must read it); ``step`` and ``weights_sha256`` are added here.

    Returns:
        The weights file.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(run_dir) / CHECKPOINT_DIR
    stem = checkpoint_stem(meta.step)
    artifacts.remove_stale_temp_files(directory)
    tensors = {EMA_PREFIX + k: v for k, v in ema_state.items()}
    tensors.update({MODEL_PREFIX + k: v for k, v in model_state.items()})
    header = json.dumps(meta.to_dict(), sort_keys=True)
    blob = safetensors_save(_unshared(tensors), {_HEADER_KEY: header})
    weights = artifacts.write_bytes(directory / (stem + WEIGHTS_SUFFIX), blob, overwrite=True)
    artifacts.write_json(directory / (stem + META_SUFFIX), meta.to_dict(), overwrite=True)
    state = dict(train_state, format=FORMAT, step=meta.step, weights_sha256=hashlib.sha256(blob).hexdigest())
    artifacts.save_torch(state, directory / (stem + STATE_SUFFIX), overwrite=True)
    artifacts.write_bytes(directory / LATEST, (stem + "\n").encode(), overwrite=True)
    _prune(directory, meta.step, keep)
    return weights


def write_weights(path: Path | str, meta: CheckpointMeta, ema_state: dict[str, Tensor]) -> Path:
    """Write a weights file that holds only EMA weights (a made model: quantized, converted), atomically; it
    loads like a training checkpoint (:func:`load_checkpoint`) and refuses to overwrite."""
    header = json.dumps(meta.to_dict(), sort_keys=True)
    blob = safetensors_save(_unshared({EMA_PREFIX + k: v for k, v in ema_state.items()}), {_HEADER_KEY: header})
    return artifacts.write_bytes(path, blob)


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors, copying any that share storage (safetensors refuses shared ones)."""
    out, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def _prune(directory: Path, newest: int, keep: int) -> None:
    steps = sorted({s for s in (_step_of(p) for p in directory.iterdir()) if s is not None})
    kept = [s for s in steps if s <= newest][-keep:]
    doomed = [s for s in steps if s not in kept]
    artifacts.remove_files(
        directory / (checkpoint_stem(s) + suffix)
        for s in doomed
        for suffix in (WEIGHTS_SUFFIX, META_SUFFIX, STATE_SUFFIX)
    )


def _step_of(path: Path) -> int | None:
    name = path.name
    for suffix in (WEIGHTS_SUFFIX, META_SUFFIX, STATE_SUFFIX):
        if name.endswith(suffix):
            match = _STEM.match(name[: -len(suffix)])
            return int(match.group(1)) if match else None
    return None


def list_checkpoints(run_dir: Path | str) -> list[Path]:
    """Weights files of the complete checkpoints (all three files present), oldest first."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("step-*" + WEIGHTS_SUFFIX)):
        stem = path.name[: -len(WEIGHTS_SUFFIX)]
        if _STEM.match(stem) and all((directory / (stem + s)).is_file() for s in (META_SUFFIX, STATE_SUFFIX)):
            found.append(path)
    return found


def resolve_checkpoint(path: Path | str) -> Path:
    """The weights file named by ``path``: a ``.safetensors`` file, a run dir, its ``checkpoints`` dir,
    or a shipped directory holding ``model.safetensors`` (and no ``checkpoints/`` of its own).

    Without a ``latest`` pointer (a run stopped right after writing its first checkpoint), the newest
    complete checkpoint of the run is taken.

    Raises:
        CheckpointError: nothing there, no pointer and no complete checkpoint, or a dangling pointer.
    """
    path = Path(path)
    if path.is_file():
        if path.name.endswith(STATE_SUFFIX):
            raise CheckpointError(
                f"{path} is a training-state file; pass the {WEIGHTS_SUFFIX} weights file or the run directory"
            )
        return path
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint file or run directory at {path}")
    if (path / SHIPPED_WEIGHTS).is_file() and not (path / LATEST).exists() and not (path / CHECKPOINT_DIR).exists():
        return path / SHIPPED_WEIGHTS
    directory = path if (path / LATEST).is_file() else path / CHECKPOINT_DIR
    pointer = directory / LATEST
    if not pointer.is_file():
        # A run stopped between its first checkpoint's files and the pointer: the newest complete one.
        complete = list_checkpoints(path.parent if path.name == CHECKPOINT_DIR else path)
        if complete:
            return complete[-1]
        raise CheckpointError(f"no checkpoint in {path} (expected {CHECKPOINT_DIR}/{LATEST} naming one)")
    with open(pointer, "rb") as fh:
        stem = fh.read(256).decode("utf-8", "replace").strip()
    if not _STEM.match(stem):
        raise CheckpointError(f"{pointer} is corrupt: {stem[:40]!r} is not a checkpoint name")
    weights = directory / (stem + WEIGHTS_SUFFIX)
    if not weights.is_file():
        raise CheckpointError(f"{pointer} names {weights.name}, which is missing")
    return weights


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a weights file (or the latest one of a run directory) without building a model.

    Nothing in the file is trusted: the header's metadata and config are checked (types, ranges), the size
    of the model the config describes is bounded (:data:`MAX_PARAMS`) before anything is allocated, the
    tensors the header lists must be exactly the ones that model has (names, shapes, float dtypes, or the
    integer dtype a quantized model declares) and the file exactly as long as they need; only then are the
    weights read, and they must be finite.

    Raises:
        CheckpointError: missing, not a safetensors file, truncated, without valid metadata, weights that do
            not fit the config, or weights that are NaN or infinite.
    """
    weights = resolve_checkpoint(path)
    try:
        with open(weights, "rb") as fh:
            file_size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            header, header_size = _read_header(weights, head, fh, file_size)
            meta = _header_meta(weights, header)
            data_size = _check_tensor_entries(weights, header, meta.config)
            if 8 + header_size + data_size != file_size:
                raise CheckpointError(f"{weights} is truncated or has trailing bytes: {file_size} bytes, the "
                                      f"header describes {8 + header_size + data_size}")
            fh.seek(0)
            blob = fh.read()
    except OSError as err:
        raise CheckpointError(f"cannot read {weights}: {err.strerror or err}") from None
    try:
        tensors = safetensors_load(blob)
    except SafetensorError as err:
        raise CheckpointError(f"{weights} is corrupt: {_one_line(err)}") from None
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    model = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    _check_finite(weights, tensors)
    return Checkpoint(path=weights, meta=meta, model_state=model, ema_state=ema,
                      sha256=hashlib.sha256(blob).hexdigest())


def _read_header(path: Path, head: bytes, fh: Any, file_size: int) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file (u64 little-endian length, then JSON) and its length."""
    if len(head) < 8:
        raise CheckpointError(f"{path} is not a safetensors file (only {len(head)} bytes)")
    size = int.from_bytes(head, "little")
    if size > file_size - 8 or size > _MAX_HEADER_BYTES:
        raise CheckpointError(f"{path} is not a safetensors file or is truncated (bad header length)")
    try:
        header = json.loads(fh.read(size))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object)")
    return header, size


def _header_meta(path: Path, header: dict[str, Any]) -> CheckpointMeta:
    """The sdit metadata in a safetensors header, checked."""
    extra = header.get("__metadata__", {})
    raw = extra.get(_HEADER_KEY) if isinstance(extra, dict) else None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without sdit metadata; not an sdit checkpoint")
    if not isinstance(raw, str):
        raise CheckpointError(f"{path}: sdit metadata is not a string")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({err.msg})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: metadata is nested too deeply") from None
    return CheckpointMeta.from_dict(data, source=path)


@functools.lru_cache(maxsize=32)
def expected_tensors(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """Name -> (shape, integer dtype or ``None`` for any float dtype) of every tensor of the model ``config``
    builds, found without allocating:
    a cheap lower bound on its size first, then a build on the ``meta`` device.

    Raises:
        CheckpointError: the model would exceed :data:`MAX_PARAMS`, or the config builds no model.
    """
    blocks = getattr(config, "depth", 0) + sum(getattr(config, f"depth_{p}", 0) for p in ("in", "mid", "out"))
    floor = 4 * blocks * config.hidden_size**2  # at least four D x D projections per block, in either model
    if floor > MAX_PARAMS:
        raise CheckpointError(f"the config describes a model of over {floor:,} parameters, more than the "
                              f"{MAX_PARAMS:,} a checkpoint may hold")
    try:
        with torch.device("meta"):
            state = build_model(config).state_dict()
    except (ValueError, TypeError, RuntimeError, AssertionError) as err:
        raise CheckpointError(f"the config builds no model: {_one_line(err)}") from None
    count = sum(t.numel() for t in state.values())
    if count > MAX_PARAMS:
        raise CheckpointError(f"the config describes a model of {count:,} parameters, more than the "
                              f"{MAX_PARAMS:,} a checkpoint may hold")
    return {name: (tuple(t.shape), None if t.dtype.is_floating_point else _INT_DTYPES[t.dtype])
            for name, t in state.items()}


def _check_tensor_entries(path: Path, header: dict[str, Any], config: ModelConfig) -> int:
    """Check the header's tensor list against the model of ``config``; return the data section's length.

    The EMA set must be complete; the raw set (``model.*``) complete or absent; nothing else.
    """
    try:
        expected = expected_tensors(config)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    names = set(entries)
    want_ema = {EMA_PREFIX + k for k in expected}
    want_model = {MODEL_PREFIX + k for k in expected}
    if not names & want_ema:
        raise CheckpointError(f"{path} holds no EMA weights ({EMA_PREFIX}*)")
    allowed = want_ema | (want_model if names & want_model else set())
    missing, unexpected = sorted(allowed - names), sorted(names - allowed)
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0][:80]})"] if unexpected else []
        raise CheckpointError(f"{path}: weights do not fit the model config: {'; '.join(parts)} tensors")
    end = 0
    for name, entry in entries.items():
        shape, integer = expected[name.split(".", 1)[1]]
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path}: header entry {name} is not an object")
        dtype, got, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if integer is not None and dtype != integer:
            raise CheckpointError(f"{path}: {name} has dtype {_one_line(repr(dtype))[:20]}, the config needs {integer}")
        if integer is None and dtype not in _DTYPE_BYTES:
            raise CheckpointError(f"{path}: {name} has dtype {_one_line(repr(dtype))[:20]}, not a float type")
        if not isinstance(got, list) or tuple(got) != shape:
            raise CheckpointError(f"{path}: weights do not fit the model config: {name} has shape "
                                  f"{_one_line(repr(got))[:40]}, the config needs {shape}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or offsets[1] - offsets[0] != math.prod(shape) * _TENSOR_BYTES[dtype] or offsets[0] < 0):
            raise CheckpointError(f"{path} is corrupt: {name} has data offsets that do not fit its shape")
        end = max(end, offsets[1])
    return end


def _check_finite(path: Path, tensors: dict[str, Tensor]) -> None:
    """Refuse weights that hold NaN or infinity (a diverged run): they would sample black and count 0 spikes."""
    bad = [name for name, t in sorted(tensors.items()) if not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights (NaN or inf) in {len(bad)} tensors "
                              f"(e.g. {bad[0]}); the run that saved it diverged")


def load_state_into(model: nn.Module, state: dict[str, Tensor], source: Path | str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line :class:`CheckpointError`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            shapes = f"{tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
            parts.append(f"{len(wrong)} of wrong shape (e.g. {k}: {shapes})")
        raise CheckpointError(f"{source}: weights do not fit the model config: {'; '.join(parts)} tensors")
    model.load_state_dict(state, strict=True)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Build the model a checkpoint describes and load its EMA weights (used for sampling).

    Args:
        path: A weights file, a run directory, or its ``checkpoints`` directory.

    Returns:
        The model in eval mode on ``device``, and the checkpoint's metadata.

    Raises:
        CheckpointError: missing, corrupt, or weights that do not fit the config.
    """
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, device), ckpt.meta


def model_from_checkpoint(ckpt: Checkpoint, device: torch.device | str = "cpu") -> nn.Module:
    """The model ``ckpt`` describes with its EMA weights, in eval mode on ``device``.

    Raises:
        CheckpointError: weights that do not fit the config.
    """
    model = build_model(ckpt.meta.config)
    load_state_into(model, ckpt.ema_state, ckpt.path)
    return model.to(device).eval()


def training_state_path(weights: Path | str) -> Path:
    """The training-state file beside a weights file."""
    weights = Path(weights)
    return weights.with_name(weights.name[: -len(WEIGHTS_SUFFIX)] + STATE_SUFFIX)


def load_training_state(
    path: Path | str, expected_sha256: str | None = None, schema: dict[str, type | tuple[type, ...]] | None = None
) -> dict[str, Any]:
    """Read a training-state file with ``torch.load(weights_only=True)`` only.

    Args:
        path: The ``.train.pt`` file.
        expected_sha256: The hash of the weights file it must belong to.
        schema: Keys (nested with dots) and types the state must hold, e.g. :data:`TRAINING_STATE_SCHEMA`.

    Raises:
        CheckpointError: missing, corrupt, holding pickled code (refused; nothing runs),
            or saved beside other weights than ``expected_sha256``, or lacking a key of ``schema``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(err))
        named = f"; it references {culprit.group(1)}" if culprit else ""
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects other than tensors and plain containers, "
            f"which could run code; nothing was executed{named}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"training state {path} is corrupt: {_one_line(err)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"training state {path} is not an {FORMAT} file")
    if expected_sha256 is not None and state.get("weights_sha256") != expected_sha256:
        raise CheckpointError(f"training state {path} does not belong to the weights beside it (hash mismatch)")
    if schema is not None:
        _check_state_schema(path, state, schema)
    return state


# What resuming reads from a training-state file: key -> type, nested with dots.
TRAINING_STATE_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "step": int,
    "optimizer": dict,
    "optimizer.state": dict,
    "optimizer.param_groups": list,
    "ema": dict,
    "rng": dict,
    "rng.torch": Tensor,
    "rng.cuda": (list, tuple),
    "rng.numpy": dict,
    "rng.numpy.name": str,
    "rng.numpy.keys": Tensor,
    "rng.numpy.pos": int,
    "rng.numpy.has_gauss": int,
    "rng.numpy.cached_gaussian": (float, int),
    "rng.python": dict,
    "rng.python.version": int,
    "rng.python.state": Tensor,
    "data": dict,
    "data.num_examples": int,
    "data.batch_size": int,
    "data.images_sha256": str,
}


def _check_state_schema(path: Path, state: dict[str, Any], schema: dict[str, type | tuple[type, ...]]) -> None:
    """Every key of ``schema`` present with its type, else one line naming it."""
    for key, kind in schema.items():
        value: Any = state
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise CheckpointError(f"training state {path} lacks {key!r}; it is incomplete or from another tool")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise CheckpointError(f"training state {path}: {key!r} is a {type(value).__name__}, not the expected "
                                  "type; the file is corrupt")
    if isinstance(state.get("step"), int) and state["step"] < 0:
        raise CheckpointError(f"training state {path}: step {state['step']} is negative")


def capture_rng_state() -> dict[str, Any]:
    """The global torch, CUDA, numpy and Python RNG states, as tensors and plain values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(err).__name__
