"""``sdit convert SRC DST``: an authors' ``.pt`` checkpoint (foolLain/SDiT) to our safetensors weights file."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import DATA_ERROR, SditCommand, check_outputs_or_fail, fail
from sdit.authors import AuthorsCheckpointError, convert_authors_checkpoint, is_authors_file
from sdit.checkpoint import load_model


def convert_cmd(
    src: Path = typer.Argument(..., help="The authors' checkpoint: torch.save of {'model', 'opt', 'args'}."),
    dst: Path = typer.Argument(..., help="Weights file to write (.safetensors); profile, energy and sample read it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
) -> None:
    """Convert an authors' SDiT checkpoint to this toolkit's weights format (read without pickle).

    Example: sdit convert authors/model.pt checkpoints/sdit-mnist-authors.safetensors
    """
    if not src.is_file():
        fail(f"no file at {src}", DATA_ERROR)
    if not is_authors_file(src):
        fail(f"{src} is not a torch.save file (expected the authors' .pt checkpoint)", DATA_ERROR)
    check_outputs_or_fail({"DST": dst}, overwrite)
    try:
        path = convert_authors_checkpoint(src, dst, overwrite=overwrite)
    except AuthorsCheckpointError as err:
        fail(str(err), DATA_ERROR)
    _, meta = load_model(path)  # read back: the file must load as one of ours
    typer.echo(f"wrote {path}: {meta.preset} layout, the authors' raw weights as both ema.* and model.* "
               "(their code keeps no EMA)")


def register(app: typer.Typer) -> None:
    app.command("convert", cls=SditCommand)(convert_cmd)
