"""Every command's help at 80 columns: option names whole, text wrapped at spaces, defaults as typed."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from cli.main import COMMANDS, _load, app

WIDTH = 80


def _help(name: str) -> str:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.stdout


def _names(name: str) -> list[str]:
    command = _load(name)
    return [opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_at_80_columns_shows_every_option_name_whole(name: str) -> None:
    text = _help(name)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    assert "\u2026" not in text  # nothing cut with an ellipsis
    for opt in _names(name):
        assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{name}: {opt} is cut or missing"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_text_wraps_at_word_boundaries(name: str) -> None:
    # rich wraps a cell at spaces and folds only a word longer than its column: every word of every help
    # text (and of the docstring) is then found whole among the words printed
    printed = set(re.sub("[\u2500-\u257f]", " ", _help(name)).split())
    command = _load(name)
    texts = [param.help or "" for param in command.params] + [command.help or ""]
    for word in (w for text in texts for w in text.split()):
        assert word in printed, f"{name}: {word!r} is broken across lines"


def test_evaluate_help_shows_defaults_as_typed_not_the_clone_path() -> None:
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    text = _help("evaluate")
    assert root not in " ".join(text.split())  # not even wrapped over lines
