"""scripts/peers_table.py regenerates docs/peers.md's peer table: its row of the smallest model is the doc's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("peers_table", ROOT / "scripts" / "peers_table.py")
peers_table = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(peers_table)


def test_the_table_rows_are_those_of_the_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert peers_table.main(["conv-if-maxpool-conv"]) == 0
    header, rule, row = capsys.readouterr().out.splitlines()
    doc = (ROOT / "docs" / "peers.md").read_text().splitlines()
    assert header == peers_table.HEADER and header in doc and rule in doc
    assert row in doc and row.startswith("| Conv-IF-MaxPool-Conv | 338,688 | 112,896 | 41,640 |")


def test_an_unknown_model_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert peers_table.main(["resnet9000"]) == 2
    assert "unknown model 'resnet9000'; known: conv-if-maxpool-conv" in capsys.readouterr().err
