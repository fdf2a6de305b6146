"""``sdit quantize SRC --out DIR``: a trained DiT checkpoint to a post-training quantized one."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from cli.common import DATA_ERROR, SditCommand, check_outputs_or_fail, check_seed, fail, status


def quantize_cmd(
    src: str = typer.Argument(..., help="A trained float DiT: run directory, weights file or shipped directory."),
    out: Path = typer.Option(..., "--out", help="Directory to write: model.safetensors and provenance.json."),
    weight_bits: int = typer.Option(8, "--weight-bits", min=2, max=8, help="Integer width of the weights."),
    activation_bits: int = typer.Option(8, "--activation-bits", min=2, max=8,
                                        help="Integer width every Linear's input is quantized to."),
    calibration: int = typer.Option(512, "--calibration", min=1, help="Training images to calibrate on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration images, timesteps and noise."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder of the dataset (default: its usual place)."),
) -> None:
    """Quantize a trained DiT after training: integer weights and Linear inputs, integer products.

    Example: sdit quantize checkpoints/dit-small-fmnist --out checkpoints/dit-small-int8-fmnist
    """
    from sdit.checkpoint import CheckpointError
    from sdit.data import DatasetError
    from sdit.quantize import QuantizeError, quantize_checkpoint

    check_seed("--seed", seed)
    command = shlex.join(["sdit", "quantize", src, "--out", str(out), "--weight-bits", str(weight_bits),
                          "--activation-bits", str(activation_bits), "--calibration", str(calibration),
                          "--seed", str(seed), *(["--data-dir", str(data_dir)] if data_dir else [])])
    check_outputs_or_fail({"--out": out}, overwrite=False)
    status(f"calibrating W{weight_bits}A{activation_bits} on {calibration} training images")
    try:
        record = quantize_checkpoint(src, out, weight_bits, activation_bits, num_images=calibration, seed=seed,
                                     data_dir=data_dir, command=command)
    except (CheckpointError, DatasetError) as err:
        fail(str(err), DATA_ERROR)
    except QuantizeError as err:
        fail(str(err))
    if record["held_out_eps_mse"] is not None:
        typer.echo("held-out eps-MSE   t: " + "  ".join(f"{t:>7}" for t in record["held_out_eps_mse"]))
        for kind, key in (("float", "held_out_eps_mse_float"), ("quantized", "held_out_eps_mse")):
            typer.echo(f"{kind:>18}: " + "  ".join(f"{v:7.5f}" for v in record[key].values()))
    typer.echo(f"wrote {out / record['weights']} and {out / 'provenance.json'}")


def register(app: typer.Typer) -> None:
    app.command("quantize", cls=SditCommand)(quantize_cmd)
