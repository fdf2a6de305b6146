"""Checkpoints of the authors' SDiT code (foolLain/SDiT): their key names, their file, our safetensors.

The authors' ``train.py`` saves ``torch.save({"model": state_dict, "opt": optimizer_state, "args":
argparse.Namespace})``. Its model is our SDiT with the authors' layout (``sdit-*-authors`` presets,
docs/authors-layout.md); only the names differ, and the RWKV mixing vectors are stored as (1, 1, D) where
ours are (D,). :func:`key_map` pairs our keys with theirs, in their state-dict order.

Reading never executes code: ``torch.load(weights_only=True)`` with only ``argparse.Namespace``
allowed beyond tensors and plain containers, so a pickle carrying a code payload is refused before
anything in it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sdit import artifacts, checkpoint
from sdit.config import AUTHORS_LAYOUT, PRESETS, SDiTConfig
from sdit.models import build_model

# (ours, theirs) outside the blocks, in the authors' state-dict order.
_TOP = (
    ("pos_embed", "pos_embed"),
    ("patch_embed.weight", "x_embedder.proj.weight"),
    ("patch_embed.bias", "x_embedder.proj.bias"),
    ("time_embed.mlp.0.weight", "t_embedder.mlp.0.weight"),
    ("time_embed.mlp.0.bias", "t_embedder.mlp.0.bias"),
    ("time_embed.mlp.2.weight", "t_embedder.mlp.2.weight"),
    ("time_embed.mlp.2.bias", "t_embedder.mlp.2.bias"),
    ("label_embed.table.weight", "y_embedder.embedding_table.weight"),
    ("final_conv.weight", "conv.weight"),
    ("final_conv.bias", "conv.bias"),
    ("final_linear.weight", "final_layer.linear.weight"),
    ("final_linear.bias", "final_layer.linear.bias"),
)
# (ours, theirs) inside a block, in their order; the skip pair exists in output blocks only.
_BLOCK = (
    ("recon_token", "restruction_token"),
    ("time_mixing.time_decay", "att.time_decay"),
    ("time_mixing.time_first", "att.time_first"),
    ("time_mixing.mu_k", "att.time_mix_k"),
    ("time_mixing.mu_v", "att.time_mix_v"),
    ("time_mixing.mu_r", "att.time_mix_r"),
    ("time_mixing.key.weight", "att.key.weight"),
    ("time_mixing.value.weight", "att.value.weight"),
    ("time_mixing.receptance.weight", "att.receptance.weight"),
    ("time_mixing.output.weight", "att.output.weight"),
    ("channel_mixing.mu_k", "ffn.time_mix_k"),
    ("channel_mixing.mu_r", "ffn.time_mix_r"),
    ("channel_mixing.key.weight", "ffn.key.weight"),
    ("channel_mixing.receptance.weight", "ffn.receptance.weight"),
    ("channel_mixing.value.weight", "ffn.value.weight"),
    ("skip_linear.weight", "skip_linear.weight"),
    ("skip_linear.bias", "skip_linear.bias"),
    ("recon_d.weight", "restruction_token_MLP.weight"),
    ("recon_d.bias", "restruction_token_MLP.bias"),
    ("recon_n.weight", "another_MLP.weight"),
    ("recon_n.bias", "another_MLP.bias"),
)
_MIX_VECTORS = ("time_mix_k", "time_mix_v", "time_mix_r")  # stored (1, 1, D) by the authors, (D,) by us
_SOURCE_KEY = "authors_source"  # safetensors header entry of a converted file: where it came from


class AuthorsCheckpointError(ValueError):
    """An authors' checkpoint that is unsafe, malformed, or does not fit the layout (one-line message)."""


def check_layout(config: SDiTConfig) -> None:
    """Raise ValueError unless ``config`` has the authors' layout (keys exist for every tensor both ways)."""
    wrong = [f"{k}={getattr(config, k)!r}" for k, v in AUTHORS_LAYOUT.items()
             if k not in ("in_channels", "class_dropout", "learn_sigma", "num_classes") and getattr(config, k) != v]
    if not config.reconstruction or config.depth_mid != 1 or config.label_rows != config.num_classes + 1:
        wrong.append("it needs the Reconstruction Module, one mid block and a null class")
    if wrong:
        raise ValueError(f"not the authors' layout: {', '.join(wrong)}")


def is_authors_layout(config: object) -> bool:
    """Whether ``config`` is an SDiT config with the authors' layout (their checkpoints load into it)."""
    if not isinstance(config, SDiTConfig):
        return False
    try:
        check_layout(config)
    except ValueError:
        return False
    return True


def key_map(config: SDiTConfig) -> list[tuple[str, str]]:
    """(our key, the authors' key) for every tensor, in the authors' state-dict order.

    Blocks follow the top-level entries: ``in_blocks.0 .. n-1``, ``mid_block``, ``out_blocks.0 .. n-1``.
    """
    check_layout(config)
    pairs = list(_TOP)
    prefixes = [(f"in_blocks.{i}.", f"in_blocks.{i}.", False) for i in range(config.depth_in)]
    prefixes.append(("mid_blocks.0.", "mid_block.", False))
    prefixes += [(f"out_blocks.{i}.", f"out_blocks.{i}.", True) for i in range(config.depth_out)]
    for ours, theirs, skip in prefixes:
        pairs += [(ours + a, theirs + b) for a, b in _BLOCK if skip or not a.startswith("skip_linear.")]
    return pairs


def _authors_shape(theirs: str, tensor: Tensor) -> tuple[int, ...]:
    if theirs.rsplit(".", 1)[-1] in _MIX_VECTORS:
        return (1, 1, tensor.shape[-1])
    return tuple(tensor.shape)


def to_authors_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Our model's weights under the authors' names, shapes and order (what their code would load)."""
    ours = model.state_dict()
    return {theirs: ours[mine].reshape(_authors_shape(theirs, ours[mine]))
            for mine, theirs in key_map(model.config)}


def from_authors_state_dict(state: dict[str, Tensor], model: nn.Module, source: Path | str) -> dict[str, Tensor]:
    """The authors' state dict under our names and shapes, checked against ``model`` (authors' layout).

    Raises:
        AuthorsCheckpointError: naming the first missing key (in the authors' order), the first tensor of
            the wrong shape, or the first key the layout does not have.
    """
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    pairs = key_map(model.config)
    for mine, theirs in pairs:
        if theirs not in state:
            raise AuthorsCheckpointError(f"{source}: missing key {theirs!r} (and maybe more); not a complete "
                                         "state dict of the authors' model")
        tensor, want = state[theirs], expected[mine]
        shape = _authors_shape(theirs, want)
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise AuthorsCheckpointError(f"{source}: key {theirs!r} has shape {got}, expected {shape}")
        out[mine] = tensor.reshape(want.shape)
    known = {theirs for _, theirs in pairs}
    extra = [k for k in state if k not in known]
    if extra:
        raise AuthorsCheckpointError(f"{source}: unexpected key {extra[0]!r} ({len(extra)} in all); "
                                     "not the authors' layout")
    return out


def infer_config(state: dict[str, Any], source: Path | str = "checkpoint") -> SDiTConfig:
    """The authors'-layout config a state dict of theirs describes, from its shapes.

    D and the token count come from ``pos_embed``, C and p from the patch conv, K from the label table
    (one row is the null class), the block counts from the key prefixes, learned sigma from the final
    layer's width.

    Raises:
        AuthorsCheckpointError: a key the shapes are read from is missing or malformed.
    """
    def shape(key: str, dims: int) -> tuple[int, ...]:
        value = state.get(key)
        if not isinstance(value, Tensor):
            raise AuthorsCheckpointError(f"{source}: missing key {key!r}; not a state dict of the authors' model")
        if value.dim() != dims:
            raise AuthorsCheckpointError(f"{source}: key {key!r} has shape {tuple(value.shape)}, "
                                         f"expected {dims} dimensions")
        return tuple(value.shape)

    _, tokens, dim = shape("pos_embed", 3)
    _, channels, patch, _ = shape("x_embedder.proj.weight", 4)
    rows, _ = shape("y_embedder.embedding_table.weight", 2)
    out_features, _ = shape("final_layer.linear.weight", 2)
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise AuthorsCheckpointError(f"{source}: pos_embed has {tokens} tokens, not a square patch grid plus one")

    def count(prefix: str) -> int:
        found = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return len(found)

    layout = dict(AUTHORS_LAYOUT, in_channels=channels, num_classes=rows - 1,
                  learn_sigma=out_features == 2 * channels * patch * patch)
    try:
        config = SDiTConfig(image_size=grid * patch, patch_size=patch, hidden_size=dim,
                            depth_in=count("in_blocks"), depth_out=count("out_blocks"), **layout)
    except ValueError as err:
        raise AuthorsCheckpointError(f"{source}: the shapes describe no valid model: {err}") from None
    try:  # the model's size, bounded from the config without allocating, before anything builds it
        checkpoint.expected_tensors(config)
    except checkpoint.CheckpointError as err:
        raise AuthorsCheckpointError(f"{source}: {err}") from None
    return config


def preset_of(config: SDiTConfig) -> str | None:
    """The preset whose config equals ``config``, or None."""
    return next((name for name, preset in PRESETS.items() if preset == config), None)


@dataclass(frozen=True)
class AuthorsCheckpoint:
    """A loaded authors' checkpoint.

    Attributes:
        path: The file.
        state: Their state dict (their key names), CPU tensors.
        args: Their ``argparse.Namespace`` as a dict of plain values ({} when the file has none).
        has_optimizer: Whether the file holds their optimiser state (``opt``).
        sha256: Hash of the file.
    """

    path: Path
    state: dict[str, Tensor]
    args: dict[str, Any]
    has_optimizer: bool
    sha256: str


def is_authors_file(path: Path | str) -> bool:
    """Whether ``path`` is a ``torch.save`` file (zip or legacy pickle) rather than one of our safetensors."""
    path = Path(path)
    if not path.is_file() or path.name.endswith(checkpoint.STATE_SUFFIX):
        return False
    with path.open("rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # safetensors: u64 header length, then the JSON header
        return False
    # torch.save: a zip archive, or the legacy format (pickle protocol 2 opening with a pickled long magic)
    return head[:4] == b"PK\x03\x04" or head[:3] == b"\x80\x02\x8a"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)


def _check_archive(path: Path, blob: bytes) -> None:
    """A zip-format ``torch.save`` file stores its records uncompressed: refuse compressed or oversized ones
    (a small file that would inflate), before ``torch.load`` reads any."""
    if not blob.startswith(b"PK\x03\x04"):
        return  # the legacy format reads its storages straight from the file: bounded by its length
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise AuthorsCheckpointError(f"{path}: not a readable torch.save file: {checkpoint._one_line(err)}") from None
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size > len(blob):
            raise AuthorsCheckpointError(f"{path}: record {entry.filename!r} is compressed or larger than the "
                                         "file; torch.save writes neither")


def _check_tensors(path: Path, state: dict[str, Any], file_bytes: int) -> None:
    """Every entry a dense, finite floating-point tensor whose storages together fit in the file.

    A tensor whose elements outnumber its storage (a stride-0 expansion) claims a model far larger than
    the file: refused here, before its shapes size anything.
    """
    storages: dict[int, int] = {}
    for key, tensor in state.items():
        if not isinstance(tensor, Tensor):
            raise AuthorsCheckpointError(f"{path}: key {key!r} is a {type(tensor).__name__}, not a tensor")
        if not tensor.dtype.is_floating_point:
            raise AuthorsCheckpointError(f"{path}: key {key!r} is {str(tensor.dtype).removeprefix('torch.')}; "
                                         "the authors' weights are floating point")
        storage = tensor.untyped_storage()
        needed = (tensor.storage_offset() + tensor.numel()) * tensor.element_size()
        if tensor.numel() and (not tensor.is_contiguous() or storage.nbytes() < needed):
            raise AuthorsCheckpointError(f"{path}: key {key!r} of shape {tuple(tensor.shape)} is not a dense "
                                         "tensor (its elements outnumber its storage)")
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
    if sum(storages.values()) > file_bytes:
        raise AuthorsCheckpointError(f"{path}: its tensors claim {sum(storages.values()):,} bytes, more than "
                                     f"the file's {file_bytes:,}")
    bad = next((k for k, t in state.items() if not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise AuthorsCheckpointError(f"{path}: key {bad!r} holds NaN or infinite values")


def load_authors_checkpoint(path: Path | str) -> AuthorsCheckpoint:
    """Read an authors' ``.pt`` with ``torch.load(weights_only=True)``, allowing ``argparse.Namespace`` only.

    The file is read whole, its records checked before ``torch.load`` (uncompressed, none larger than the
    file) and its tensors after (dense, floating point, finite, storages within the file's length), so no
    later step sizes anything from a claim the file cannot back.

    Raises:
        AuthorsCheckpointError: unreadable, refused (a pickled object beyond tensors, plain containers and
            the Namespace: nothing in it runs), not a dict holding ``model``, or tensors as above.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise AuthorsCheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    _check_archive(path, blob)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        # torch's first line only says the load failed; the line naming the refused global says why
        why = [ln for ln in lines if "global" in ln.lower() and "allowed" in ln.lower()]
        first = (why or lines or [type(err).__name__])[0]
        raise AuthorsCheckpointError(f"{path}: refused to unpickle (weights_only; nothing was run): "
                                     f"{first[:160]}") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise AuthorsCheckpointError(f"{path}: not a readable torch.save file: {checkpoint._one_line(err)}") from None
    if not isinstance(obj, dict) or "model" not in obj or not isinstance(obj["model"], dict):
        keys = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise AuthorsCheckpointError(f"{path}: expected the authors' dict with 'model' (a state dict), "
                                     f"'opt' and 'args'; got {keys}")
    state = dict(obj["model"])
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    _check_tensors(path, state, len(blob))
    args = obj.get("args")
    plain_args = {k: _plain(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace) else {}
    return AuthorsCheckpoint(path=path, state=state, args=plain_args, has_optimizer="opt" in obj,
                             sha256=hashlib.sha256(blob).hexdigest())


def describe(ckpt: AuthorsCheckpoint, config: SDiTConfig) -> str:
    """``authors' checkpoint 00099.pt (sdit-mnist-authors, dataset MNIST; raw weights, no EMA)``."""
    layout = preset_of(config) or f"authors' layout D={config.hidden_size}, p={config.patch_size}"
    dataset = f", dataset {ckpt.args['dataset']}" if "dataset" in ckpt.args else ""
    return f"authors' checkpoint {ckpt.path.name} ({layout}{dataset}; raw weights, their code keeps no EMA)"


def load_authors_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """Build the model an authors' checkpoint describes and load its weights.

    Returns:
        The model in eval mode on ``device`` and a one-line description.

    Raises:
        AuthorsCheckpointError: see :func:`load_authors_checkpoint` and :func:`from_authors_state_dict`.
    """
    return authors_model(load_authors_checkpoint(path), device)


def authors_model(ckpt: AuthorsCheckpoint, device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """The model a loaded authors' checkpoint describes, with its weights, in eval mode on ``device``, and a
    one-line description.

    Raises:
        AuthorsCheckpointError: see :func:`from_authors_state_dict`.
    """
    config = infer_config(ckpt.state, ckpt.path)
    model = build_model(config)
    model.load_state_dict(from_authors_state_dict(ckpt.state, model, ckpt.path), strict=True)
    return model.to(device).eval(), describe(ckpt, config)


def convert_authors_checkpoint(src: Path | str, dst: Path | str, overwrite: bool = False) -> Path:
    """Write an authors' checkpoint as one of our weights files (safetensors with sdit metadata).

    Their code keeps no EMA, so the file's ``ema.*`` and ``model.*`` tensors are both their raw weights;
    ``step`` is 0 (their files count epochs, in the name). Where it came from (path, sha256, their args) is in
    the header entry ``authors_source``. Written atomically; an existing ``dst`` needs ``overwrite``.

    Raises:
        AuthorsCheckpointError: as :func:`load_authors_model`.
        sdit.artifacts.OverwriteError: ``dst`` exists and ``overwrite`` is False.
    """
    ckpt = load_authors_checkpoint(src)
    config = infer_config(ckpt.state, ckpt.path)
    model = build_model(config)
    state = from_authors_state_dict(ckpt.state, model, ckpt.path)
    meta = checkpoint.CheckpointMeta(
        preset=preset_of(config) or "sdit-mnist-authors", config=config, step=0,
        dataset=str(ckpt.args.get("dataset", "unknown")), seed=int(ckpt.args.get("global_seed", 0) or 0),
        git_revision="authors' code (foolLain/SDiT)",
    )
    tensors = {checkpoint.EMA_PREFIX + k: v for k, v in state.items()}
    tensors.update({checkpoint.MODEL_PREFIX + k: v.clone() for k, v in state.items()})
    source = {"path": str(ckpt.path), "sha256": ckpt.sha256, "args": ckpt.args,
              "note": "converted from the authors' torch.save format; ema.* are their raw weights (no EMA)"}
    header = {checkpoint._HEADER_KEY: json.dumps(meta.to_dict(), sort_keys=True), _SOURCE_KEY: json.dumps(source)}
    return artifacts.save_tensors(tensors, dst, metadata=header, overwrite=overwrite)


def save_authors_checkpoint(model: nn.Module, path: Path | str, args: argparse.Namespace | None = None,
                            optimizer_state: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` in the authors' format (``{"model", "opt", "args"}``), e.g. to hand a model to their code."""
    obj = {"model": to_authors_state_dict(model), "opt": optimizer_state or {},
           "args": args if args is not None else argparse.Namespace()}
    return artifacts.save_torch(obj, path, overwrite=overwrite)


__all__ = [
    "AuthorsCheckpoint", "AuthorsCheckpointError", "check_layout", "convert_authors_checkpoint", "describe",
    "from_authors_state_dict", "infer_config", "is_authors_file", "is_authors_layout", "key_map",
    "load_authors_checkpoint",
    "load_authors_model", "preset_of", "save_authors_checkpoint", "to_authors_state_dict",
]
