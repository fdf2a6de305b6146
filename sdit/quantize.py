"""Make a post-training quantized DiT from a trained one (``sdit quantize``).

The float checkpoint's EMA weights are calibrated on noisy training images (:func:`calibration_batches`: the
first ``num_images`` of a seeded permutation of the train split, each at a uniformly drawn timestep with seeded
noise, exactly the inputs training shows the model) and written as a checkpoint of the quantized config
(:data:`sdit.config.PRESETS` ``dit-small-int8``, ``dit-small-w4a3``, or any DiT config with integer widths),
with a ``provenance.json`` beside it that says how.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sdit.artifacts import read_small_json, write_json
from sdit.checkpoint import CheckpointMeta, load_model, preset_label, write_weights
from sdit.config import DiTConfig
from sdit.data import load_dataset
from sdit.diffusion import Diffusion
from sdit.models import build_model
from sdit.models.quant import calibrate
from sdit.quality.heldout import held_out_eps_mse


class QuantizeError(ValueError):
    """The source cannot be quantized this way (one-line message)."""


def calibration_batches(images: Tensor, num_images: int, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x_t, t)`` batches: ``num_images`` images of a seeded permutation, t uniform in [0, T), seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)[:num_images]
    diffusion = Diffusion()
    steps = diffusion.config.num_steps
    for start in range(0, len(order), batch_size):
        x0 = images[order[start:start + batch_size]]
        t = torch.randint(steps, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        yield diffusion.q_sample(x0, t, noise), t


def quantize_checkpoint(source: Path | str, out: Path, weight_bits: int, activation_bits: int, num_images: int = 512,
                        batch_size: int = 64, seed: int = 0, data_dir: Path | str | None = None,
                        command: str | None = None) -> dict[str, Any]:
    """Quantize the DiT checkpoint ``source`` into ``out`` (a directory: ``model.safetensors`` and
    ``provenance.json``, a checkpoint target like a shipped one); returns the provenance written. ``command``:
    the command line to record.

    Raises:
        QuantizeError: the source is not a float DiT, or the widths are invalid.
        sdit.checkpoint.CheckpointError, sdit.data.DatasetError: the source or the calibration data cannot be read.
    """
    model, meta = load_model(source)
    config = meta.config
    if not isinstance(config, DiTConfig):
        raise QuantizeError(f"{source} is an SDiT; quantization applies to the DiT baseline")
    if config.quantized:
        raise QuantizeError(f"{source} is already quantized (W{config.weight_bits}A{config.activation_bits})")
    try:
        qconfig = dataclasses.replace(config, weight_bits=weight_bits, activation_bits=activation_bits)
    except ValueError as err:
        raise QuantizeError(str(err)) from None
    train = load_dataset(meta.dataset, "train", data_dir=data_dir)
    quant = build_model(qconfig).eval()
    seen = calibrate(model, quant, calibration_batches(train.images, num_images, batch_size, seed), seed=seed)
    qmeta = CheckpointMeta(preset=preset_label("", qconfig), config=qconfig, step=meta.step, dataset=meta.dataset,
                           seed=meta.seed, git_revision=meta.git_revision)
    weights = write_weights(out / "model.safetensors", qmeta, quant.state_dict())
    source_provenance = _source_provenance(Path(source))
    held_out = _held_out(model, quant, meta.dataset, data_dir)
    record = {
        "command": command,
        "preset": qmeta.preset,
        "dataset": meta.dataset,
        "steps": meta.step,
        "source": str(source),
        # The training behind the weights is the source's: its time and last loss, where it shipped them.
        "training_time_s": source_provenance.get("training_time_s"),
        "final_loss": source_provenance.get("final_loss"),
        "source_command": source_provenance.get("command"),
        "quantization": {
            "weight_bits": weight_bits, "activation_bits": activation_bits,
            "method": (f"post-training, symmetric: W{weight_bits} per output channel "
                       f"({'max |w|' if weight_bits == 8 else 'least-squares clipping'}), A{activation_bits} per "
                       "layer (least-squares clipping over a sample of the calibration inputs); every Linear, "
                       "integer products in torch._int_mm; patch embedding, norms, attention products and biases "
                       "in float32"),
            "calibration": {"dataset": meta.dataset, "split": "train", "images": seen, "batch_size": batch_size,
                            "seed": seed, "inputs": "x_t at t ~ U[0, 1000) with seeded noise (the training inputs)"},
        },
        "held_out_eps_mse": held_out.get("quantized"),
        "held_out_eps_mse_float": held_out.get("float"),
        "held_out_eps_mse_note": held_out["note"],
        "weights": weights.name,
    }
    write_json(out / "provenance.json", record)
    return record


def _source_provenance(source: Path) -> dict[str, Any]:
    """The ``provenance.json`` a shipped source directory holds (or the one beside a weights file), else ``{}``."""
    for path in (source / "provenance.json", source.parent / "provenance.json"):
        try:
            data = read_small_json(path, max_bytes=2**20)
        except (OSError, ValueError):
            continue
        return data if isinstance(data, dict) else {}
    return {}


def _held_out(float_model: nn.Module, quant: nn.Module, dataset: str, data_dir: Path | str | None) -> dict[str, Any]:
    """Held-out epsilon-MSE per timestep of both models, first 64 test images, noise seed 0."""
    try:
        test = load_dataset(dataset, "test", data_dir=data_dir).images[:64]
    except ValueError as err:
        return {"note": f"no test split: {err}"}
    with torch.no_grad():
        return {"float": held_out_eps_mse(float_model, test), "quantized": held_out_eps_mse(quant, test),
                "note": f"quantized weights; epsilon-MSE on the first {len(test)} images of the {dataset} test "
                        "split, noise seed 0, per timestep t (_float: the source's weights, same images and noise)"}

