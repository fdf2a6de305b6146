"""Mutated checkpoints, loaded under a memory limit: ``python -m tests.sdit.fuzz_checkpoints N SEED LIMIT_MB``.

Run by ``test_checkpoint_fuzz.py`` in a child process (the limit is process-wide). Prints one JSON object:
the outcome counts, and the first few cases that were neither loaded nor refused with a one-line
:class:`~sdit.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import json
import random
import resource
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from sdit import checkpoint
from sdit.checkpoint import CheckpointError, CheckpointMeta
from sdit.config import get_preset
from sdit.models import build_model

ODD_VALUES: list[Any] = [0, -1, 1, 2, 3, 7, 10**6, 10**9, 2**63, 2**64 + 1, -(10**12), 0.5, 1e308, -1e-9,
                         float("nan"), float("inf"), "32", "", None, True, False, [], [1, 2], {}, {"a": 1}]


def base_checkpoint(preset: str) -> bytes:
    torch.manual_seed(0)
    state = build_model(preset).state_dict()
    meta = CheckpointMeta(preset=preset, config=get_preset(preset), step=5, dataset="fashion-mnist", seed=1)
    tensors = {checkpoint.EMA_PREFIX + k: v.contiguous() for k, v in state.items()}
    tensors.update({checkpoint.MODEL_PREFIX + k: v.clone().contiguous() for k, v in state.items()})
    return safetensors_save(tensors, {"sdit": json.dumps(meta.to_dict())})


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    size = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def join(header: dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def mutate(blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a valid checkpoint: (what, the mutated bytes)."""
    header, data = split(blob)
    meta = json.loads(header["__metadata__"]["sdit"])
    names = [k for k in header if k != "__metadata__"]
    kind = rng.randrange(12)
    if kind == 0:  # a config value of a random type or size
        key = rng.choice(sorted(meta["config"]))
        meta["config"][key] = rng.choice(ODD_VALUES)
        what = f"config {key}={meta['config'][key]!r}"
    elif kind == 1:  # the config scaled up, tensors left as they are
        for key in ("hidden_size", "depth", "depth_in", "depth_out", "depth_mid", "image_size"):
            if key in meta["config"]:
                meta["config"][key] *= rng.choice([2, 16, 512, 4096])
        what = "config scaled up"
    elif kind == 2:  # a config key dropped, added, or the kind swapped
        choice = rng.randrange(3)
        if choice == 0:
            meta["config"].pop(rng.choice(sorted(meta["config"])))
        elif choice == 1:
            meta["config"]["heads"] = 3
        else:
            meta["config"]["kind"] = rng.choice(["dit", "sdit", "unet", 3, None])
        what = f"config keys ({choice})"
    elif kind == 3:  # a metadata field of a random type
        key = rng.choice(["format", "preset", "step", "dataset", "seed", "git_revision", "config"])
        meta[key] = rng.choice(ODD_VALUES)
        what = f"meta {key}={meta[key]!r}"
    elif kind == 4:  # a metadata field missing
        key = rng.choice(["format", "preset", "step", "dataset", "seed", "config"])
        meta.pop(key)
        what = f"meta without {key}"
    elif kind == 5:  # a tensor's declared shape
        name = rng.choice(names)
        header[name]["shape"] = rng.choice([[10**12], [1], [], [0], [2, 2, 2, 2, 2], ["a"], None,
                                            [d * 2 for d in header[name]["shape"]]])
        what = f"shape of {name}"
    elif kind == 6:  # a tensor's dtype or offsets
        name = rng.choice(names)
        if rng.random() < 0.5:
            header[name]["dtype"] = rng.choice(["I64", "F16", "BOOL", "U8", "F64", 5, None])
        else:
            lo, hi = header[name]["data_offsets"]
            header[name]["data_offsets"] = rng.choice([[lo, hi + 4], [hi, lo], [0, 2**62], [-4, hi], [lo], None])
        what = f"dtype/offsets of {name}"
    elif kind == 7:  # a tensor removed, or one added
        if rng.random() < 0.5:
            header.pop(rng.choice(names))
        else:
            header["ema.extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        what = "tensor list"
    elif kind == 8:  # truncated anywhere
        return "truncated", blob[: rng.randrange(len(blob))]
    elif kind == 9:  # the header length field
        return "header length", struct.pack("<Q", rng.choice([0, 1, 2**63, len(blob), 2**40])) + blob[8:]
    elif kind == 10:  # random bytes in the header, or the metadata replaced by junk
        if rng.random() < 0.5:
            raw = bytearray(blob)
            for _ in range(rng.randrange(1, 8)):
                raw[rng.randrange(8, 8 + struct.unpack("<Q", blob[:8])[0])] = rng.randrange(256)
            return "header bytes", bytes(raw)
        header["__metadata__"]["sdit"] = rng.choice(["[" * 100_000, "{", "null", "3", '"x"', "[]"])
        return "metadata junk", join(header, data)
    else:  # non-finite weights in the data
        raw = bytearray(data)
        at = rng.randrange(0, len(raw) // 4) * 4
        raw[at : at + 4] = struct.pack("<f", rng.choice([float("nan"), float("inf"), -float("inf")]))
        return "non-finite weight", join(header, bytes(raw))
    header["__metadata__"]["sdit"] = json.dumps(meta)
    return what, join(header, data)


def main(count: int, seed: int, limit_mb: int) -> dict[str, Any]:
    bases = [base_checkpoint("dit-tiny"), base_checkpoint("sdit-tiny")]
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status", encoding="ascii") as fh:
        vm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    rng = random.Random(seed)
    outcomes = {"loaded": 0, "refused": 0, "other": 0}
    others: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="sdit-fuzz-"))
    for i in range(count):
        what, blob = mutate(bases[i % 2], rng)
        path = directory / f"case-{i}.safetensors"
        path.write_bytes(blob)
        try:
            checkpoint.load_model(path)
            outcomes["loaded"] += 1
        except CheckpointError as err:
            message = str(err)
            if "\n" in message or not message:
                outcomes["other"] += 1
                others.append(f"{what}: multi-line message {message!r}")
            else:
                outcomes["refused"] += 1
        except BaseException as err:  # noqa: BLE001  # anything else is the failure being looked for
            outcomes["other"] += 1
            others.append(f"{what}: {type(err).__name__}: {str(err)[:200]}")
        path.unlink()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"count": count, **outcomes, "others": others[:10], "max_rss_mb": rss_mb,
            "limit_mb_above_start": limit_mb}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
