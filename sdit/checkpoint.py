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

import hashlib
import json
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
from sdit.config import ModelConfig, config_from_dict, config_to_dict
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
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: metadata format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            return cls(
                preset=str(data["preset"]),
                config=config_from_dict(data["config"]),
                step=int(data["step"]),
                dataset=str(data["dataset"]),
                seed=int(data["seed"]),
                git_revision=str(data.get("git_revision", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid checkpoint metadata: {_one_line(err)}") from None


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

    Raises:
        CheckpointError: nothing there, no ``latest`` pointer, or a dangling one.
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
        raise CheckpointError(f"no checkpoint in {path} (expected {CHECKPOINT_DIR}/{LATEST} naming one)")
    stem = pointer.read_text(encoding="utf-8").strip()
    if not _STEM.match(stem):
        raise CheckpointError(f"{pointer} is corrupt: {stem[:40]!r} is not a checkpoint name")
    weights = directory / (stem + WEIGHTS_SUFFIX)
    if not weights.is_file():
        raise CheckpointError(f"{pointer} names {weights.name}, which is missing")
    return weights


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a weights file (or the latest one of a run directory) without building a model.

    Raises:
        CheckpointError: missing, not a safetensors file, truncated, or without valid metadata.
    """
    weights = resolve_checkpoint(path)
    try:
        blob = weights.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {weights}: {err.strerror or err}") from None
    header = _read_header(weights, blob)
    raw = header.get("__metadata__", {}).get(_HEADER_KEY)
    if raw is None:
        raise CheckpointError(f"{weights} is a safetensors file without sdit metadata; not an sdit checkpoint")
    try:
        meta = CheckpointMeta.from_dict(json.loads(raw), source=weights)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{weights}: metadata is not valid JSON ({err.msg})") from None
    try:
        tensors = safetensors_load(blob)
    except SafetensorError as err:
        raise CheckpointError(f"{weights} is corrupt: {_one_line(err)}") from None
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    model = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    if not ema:
        raise CheckpointError(f"{weights} holds no EMA weights ({EMA_PREFIX}*)")
    return Checkpoint(path=weights, meta=meta, model_state=model, ema_state=ema,
                      sha256=hashlib.sha256(blob).hexdigest())


def _read_header(path: Path, blob: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors blob: u64 little-endian length, then JSON."""
    if len(blob) < 8:
        raise CheckpointError(f"{path} is not a safetensors file (only {len(blob)} bytes)")
    size = int.from_bytes(blob[:8], "little")
    if size > len(blob) - 8 or size > 100_000_000:
        raise CheckpointError(f"{path} is not a safetensors file or is truncated (bad header length)")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object)")
    return header


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
    model = build_model(ckpt.meta.config)
    load_state_into(model, ckpt.ema_state, ckpt.path)
    return model.to(device).eval(), ckpt.meta


def training_state_path(weights: Path | str) -> Path:
    """The training-state file beside a weights file."""
    weights = Path(weights)
    return weights.with_name(weights.name[: -len(WEIGHTS_SUFFIX)] + STATE_SUFFIX)


def load_training_state(path: Path | str, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read a training-state file with ``torch.load(weights_only=True)`` only.

    Args:
        path: The ``.train.pt`` file.
        expected_sha256: The hash of the weights file it must belong to.

    Raises:
        CheckpointError: missing, corrupt, holding pickled code (refused; nothing runs),
            or saved beside other weights than ``expected_sha256``.
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
    return state


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
