"""The CLI as one tool: --version, help with a purpose and an example, flags as flags, one vocabulary
(--json PATH, --sample-steps, --device) with the old names gone, progress on stderr only, --quiet."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.common import _bare_json, progress_wanted
from cli.main import app

runner = CliRunner()
NO_PROGRESS_ENV = {"SDIT_PROGRESS": None}  # unset: the choice is stderr's (no terminal under CliRunner)
FORCED = {"SDIT_PROGRESS": "1"}
SAMPLE = ["sample", "dit-tiny", "--num", "2", "--sample-steps", "3", "--out", "-"]
PROFILE = ["profile", "dit-tiny", "--sample-steps", "2", "--csv", "-"]


def _plain(text: str) -> str:
    """``text`` without ANSI control sequences (rich's colours and cursor moves)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _commands() -> dict[str, typer.core.TyperCommand]:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}  # type: ignore[arg-type]


def _flat(text: str) -> str:
    """Help text with rich's wrapping and panel borders folded away."""
    return " ".join(text.replace("│", " ").split())


def test_version_is_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"sdit {metadata.version('sdit')}\n"


def test_every_command_has_a_purpose_and_an_example_and_flags_as_flags() -> None:
    commands = _commands()
    assert set(commands) == {"info", "sample", "profile", "energy", "compare", "train", "convert", "table3",
                             "evaluate", "report", "quantize"}
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "Example: sdit compare" in _flat(top.stdout)
    for name, command in commands.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        purpose = (command.help or "").strip().splitlines()[0]
        assert purpose.endswith(".") and len(purpose) <= 120, (name, purpose)
        flat = _flat(result.stdout)
        assert purpose in flat, name
        assert f"Example: sdit {name} " in flat, name
        assert "<bool>" not in result.stdout, name  # typer shows '--overwrite <bool>' unless told
        assert "--help Show this message" in flat, name


@pytest.mark.parametrize("name", ["sample", "profile", "energy", "compare", "evaluate", "train"])
def test_long_commands_take_quiet_and_progress_and_device(name: str) -> None:
    flat = _flat(runner.invoke(app, [name, "--help"]).stdout)
    for option in ("--quiet", "--progress", "--no-progress", "--device"):
        assert option in flat, (name, option)


def test_old_option_names_are_hidden() -> None:
    assert "--steps" not in _flat(runner.invoke(app, ["sample", "--help"]).stdout)
    assert "--steps" not in _flat(runner.invoke(app, ["evaluate", "--help"]).stdout)
    assert "--measure-steps" not in _flat(runner.invoke(app, ["energy", "--help"]).stdout)
    assert "--sample-steps" in _flat(runner.invoke(app, ["sample", "--help"]).stdout)
    assert "--steps" in _flat(runner.invoke(app, ["train", "--help"]).stdout)  # training steps keep the name


def test_sample_progress_goes_to_stderr_only() -> None:
    plain = runner.invoke(app, SAMPLE, env=NO_PROGRESS_ENV)
    shown = runner.invoke(app, SAMPLE, env=FORCED)
    flag = runner.invoke(app, [*SAMPLE, "--progress"], env=NO_PROGRESS_ENV)
    quiet = runner.invoke(app, [*SAMPLE, "--quiet"], env=FORCED)
    for result in (plain, shown, flag, quiet):
        assert result.exit_code == 0, result.output
    assert plain.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown.stdout_bytes == plain.stdout_bytes == flag.stdout_bytes == quiet.stdout_bytes
    assert "ddim sampling, 3 steps" not in plain.stderr  # no terminal, no bars
    assert plain.stderr.splitlines() == [
        "note: dit-tiny is a preset with untrained weights; samples are noise-like",
        "wrote 2 samples of preset dit-tiny (untrained) (ddim, 3 steps, eta 1, seed 0) to -",
    ]
    for result in (shown, flag):
        bars = _plain(result.stderr)
        assert "ddim sampling, 3 steps" in bars and re.search(r" [0-3]/3 ", bars), bars
        assert "wrote 2 samples" in result.stderr
    assert quiet.stderr == ""


def test_no_progress_wins_over_the_environment() -> None:
    result = runner.invoke(app, [*SAMPLE, "--no-progress"], env=FORCED)
    assert result.exit_code == 0 and "ddim sampling" not in result.stderr


def test_profile_of_a_sampling_run_shows_progress_on_stderr_only() -> None:
    plain = runner.invoke(app, PROFILE, env=NO_PROGRESS_ENV)
    shown = runner.invoke(app, PROFILE, env=FORCED)
    quiet = runner.invoke(app, [*PROFILE, "-q"], env=FORCED)
    for result in (plain, shown, quiet):
        assert result.exit_code == 0, result.output
    assert plain.stdout.startswith("layer,") and shown.stdout == plain.stdout == quiet.stdout
    assert "ddim sampling, 2 steps" in _plain(shown.stderr) and "ddim sampling" not in plain.stderr
    assert "MACs (strict)" in plain.stderr  # the summary moves to stderr beside CSV on stdout
    assert quiet.stderr == ""


def test_progress_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDIT_PROGRESS", raising=False)
    assert progress_wanted(True, quiet=True) is False
    assert progress_wanted(True, quiet=False) is True
    assert progress_wanted(False, quiet=False) is False
    monkeypatch.setenv("SDIT_PROGRESS", "1")
    assert progress_wanted(None, quiet=False) is True
    assert progress_wanted(False, quiet=False) is False
    monkeypatch.setenv("SDIT_PROGRESS", "0")
    assert progress_wanted(None, quiet=False) is False
    assert progress_wanted(True, quiet=False) is True


@pytest.mark.parametrize("argv", [
    ["sample", "dit-tiny", "--num", "2", "--steps", "3", "--out", "-"],
    ["evaluate", "dit-tiny", "--steps", "5"],
    ["energy", "dit-tiny", "--measure-steps", "2"],
])
def test_an_old_option_name_is_an_unknown_option_before_any_work(argv: list[str]) -> None:
    result = runner.invoke(app, argv)
    old = next(a for a in argv if a in ("--steps", "--measure-steps"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: No such option: {old}") and len(result.stderr.strip().splitlines()) == 1


def test_info_json_path_dash_and_the_bare_old_form(tmp_path: Path) -> None:
    dash = runner.invoke(app, ["info", "dit-tiny", "--json", "-"])
    bare = runner.invoke(app, ["info", "dit-tiny", "--json"])
    before = runner.invoke(app, ["info", "--json", "dit-tiny"])  # the old flag before the argument
    assert dash.exit_code == bare.exit_code == before.exit_code == 0, dash.output
    assert dash.stdout == bare.stdout == before.stdout and json.loads(dash.stdout)["preset"] == "dit-tiny"
    path = tmp_path / "info.json"
    to_file = runner.invoke(app, ["info", "dit-tiny", "--json", str(path)])
    assert to_file.exit_code == 0, to_file.output
    assert json.loads(path.read_text()) == json.loads(dash.stdout)
    assert "trainable params" in to_file.stdout  # the table still shows
    again = runner.invoke(app, ["info", "dit-tiny", "--json", str(path)])
    assert again.exit_code == 2 and "pass --overwrite" in again.stderr


def test_compare_json_dash_puts_the_comparison_alone_on_stdout(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "sdit-tiny", "dit-tiny", "--sample-steps", "2", "--samples", "0",
                                 "--out", str(out), "--json", "-"], env=FORCED)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((out / "comparison.json").read_text())
    assert f"report: {out / 'report.html'}" in result.stderr
    bars = _plain(result.stderr)
    assert "profiling sdit-tiny: DDIM 2 steps" in bars and "ddim sampling, 2 steps" in bars


def test_energy_progress_goes_to_stderr_only() -> None:
    args = ["energy", "dit-tiny", "--sample-steps", "2", "--json", "-"]
    plain = runner.invoke(app, args, env=NO_PROGRESS_ENV)
    shown = runner.invoke(app, args, env=FORCED)
    quiet = runner.invoke(app, [*args, "--quiet"], env=FORCED)
    for result in (plain, shown, quiet):
        assert result.exit_code == 0, result.output
    assert shown.stdout == plain.stdout == quiet.stdout and json.loads(plain.stdout)["target"] == "dit-tiny"
    assert "ddim sampling, 2 steps" in _plain(shown.stderr) and "ddim sampling" not in plain.stderr
    assert quiet.stderr == ""


@pytest.mark.parametrize(("device", "message"), [
    ("toaster", "error: --device must be a torch device such as cpu, cuda or cuda:0, got 'toaster'"),
    ("cuda:99", "error: --device cuda:99: "),
])
def test_a_bad_device_is_a_usage_error(device: str, message: str) -> None:
    for args in (SAMPLE, PROFILE):
        result = runner.invoke(app, [*args, "--device", device])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_evaluate_progress_goes_to_stderr_and_json_stays_alone_on_stdout(tmp_path: Path) -> None:
    args = ["evaluate", "dit-tiny", "--num", "10", "--sample-steps", "2", "--ref-num", "30", "--kid-subsets", "2",
            "--nearest-k", "3", "--batch-size", "4", "--json", "-"]
    cache = str(tmp_path / "cache")
    shown = runner.invoke(app, args, env={"SDIT_CACHE": cache, "SDIT_PROGRESS": "1"})
    quiet = runner.invoke(app, [*args, "--quiet"], env={"SDIT_CACHE": cache, "SDIT_PROGRESS": "1"})
    for result in (shown, quiet):
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["num_samples"] == 10  # the document alone on stdout
    bars = _plain(shown.stderr)
    for label in ("sampling 10 images, batches of 4", "ddim sampling, 2 steps", "domain features of 10 samples"):
        assert label in bars, label
    assert "FID" in bars  # the report moves to stderr beside the JSON
    assert quiet.stderr == ""


def test_table3_json_dash_puts_the_table_document_alone_on_stdout() -> None:
    tiny = ["table3", "--dit", "dit-tiny", "--sdit", "sdit-tiny", "--sdit-authors", "sdit-tiny"]
    dash = runner.invoke(app, [*tiny, "--json", "-"])
    as_format = runner.invoke(app, [*tiny, "--format", "json"])
    assert dash.exit_code == as_format.exit_code == 0, dash.output
    assert json.loads(dash.stdout) == json.loads(as_format.stdout)
    assert "SDiT paper, Table III" in dash.stderr and "SDiT paper, Table III" not in dash.stdout


@pytest.mark.parametrize(("argv", "read_as"), [
    (["info", "x", "--json"], ["info", "x", "--json", "-"]),
    (["info", "--json", "x"], ["info", "--json", "-", "x"]),
    (["info", "--json", "--overwrite", "x"], ["info", "--json", "-", "--overwrite", "x"]),
    (["--debug", "info", "x", "--json"], ["--debug", "info", "x", "--json", "-"]),
    (["info", "--json", "out.json", "x"], ["info", "--json", "out.json", "x"]),
    (["info", "x", "--json", "out.json"], ["info", "x", "--json", "out.json"]),
    (["profile", "x", "--json"], ["profile", "x", "--json"]),  # never a flag there: an error as before
])
def test_the_old_flag_form_of_info_json(argv: list[str], read_as: list[str]) -> None:
    assert _bare_json(argv) == read_as


def test_compare_json_may_not_name_the_comparison_in_out(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "sdit-tiny", "dit-tiny", "--out", str(out), "--json",
                                 str(out / "comparison.json")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "--json" in result.stderr
    assert not out.exists()
