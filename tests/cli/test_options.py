"""One set of sampler options (cli.options): every command that takes them names one equal Workload."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import cli.compare
import cli.energy
import cli.evaluate
import cli.options
import cli.profile
import cli.sample
from cli.main import app
from sdit.workload import Workload

runner = CliRunner()
COMMANDS = {"profile": cli.profile, "energy": cli.energy, "compare": cli.compare, "sample": cli.sample,
            "evaluate": cli.evaluate}
SHARED = ("--method", "--sample-steps", "--eta", "--timestep", "--seed", "--batch-size", "--device")


class _Stop(Exception):
    """Raised by a spy once it has what it came for: no command runs its work in these tests."""


def _argv(command: str, options: list[str], batch: int | None) -> list[str]:
    """A command line of ``command`` with ``options``: its targets, and ``batch`` as ``sample``'s --num."""
    head = {"profile": ["dit-tiny"], "energy": ["dit-tiny"], "compare": ["sdit-tiny", "dit-tiny"],
            "sample": ["dit-tiny", "--out", "-"], "evaluate": ["dit-tiny"]}[command]
    size = [] if batch is None else ["--num", str(batch)] if command == "sample" else ["--batch-size", str(batch)]
    return [command, *head, *options, *size]


@pytest.fixture()
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, Workload]:
    """Command -> the Workload it built from its options, through the one builder each command calls."""
    found: dict[str, Workload] = {}
    for name, module in COMMANDS.items():
        def spy(*args: Any, _name: str = name, **kwargs: Any) -> Workload:
            found[_name] = cli.options.workload_from_options(*args, **kwargs)
            raise _Stop

        monkeypatch.setattr(module, "workload_from_options", spy)
    return found


@pytest.mark.parametrize("options", [
    ["--method", "ddim", "--sample-steps", "7", "--eta", "0.5", "--seed", "3"],
    ["--method", "ddpm", "--seed", "4"],
    ["--method", "ddpm", "--sample-steps", "1000"],
    ["--method", "ddpm-respaced", "--sample-steps", "4"],
    ["--eta", "0"],
])
def test_one_command_line_is_one_workload_in_every_command(built: dict[str, Workload], options: list[str]) -> None:
    for command in COMMANDS:
        result = runner.invoke(app, _argv(command, options, batch=2))
        assert command in built, (command, result.output)
    first = built["profile"]
    assert all(w == first for w in built.values()), built
    assert first.batch_size == 2


def test_the_defaults_are_one_ddim_50_eta_1_run_everywhere(built: dict[str, Workload]) -> None:
    for command in COMMANDS:
        runner.invoke(app, _argv(command, [], batch=None))
    assert built["profile"] == built["energy"] == built["compare"] == Workload.ddim(50, eta=1.0)
    # sample draws --num images (16) in one batch; evaluate draws its N in batches of 250
    assert built["sample"] == replace(Workload.ddim(50, eta=1.0), batch_size=16)
    assert built["evaluate"] == replace(Workload.ddim(50, eta=1.0), batch_size=250)


def test_a_forward_is_named_where_a_command_counts_and_refused_where_it_draws(built: dict[str, Workload]) -> None:
    for command in ("profile", "energy", "compare"):
        runner.invoke(app, _argv(command, ["--method", "forward", "--timestep", "7"], batch=2))
        assert built[command] == Workload.forward(7, batch_size=2), command
    for command in ("sample", "evaluate"):
        result = runner.invoke(app, _argv(command, ["--method", "forward"], batch=2))
        assert result.exit_code == 2 and command not in built
        assert result.stderr.strip() == "error: --method must be one of ddim, ddpm, ddpm-respaced, got 'forward'"


@pytest.mark.parametrize(("options", "message"), [
    (["--sample-steps", "0"], "--sample-steps 0 names no sampling run; count one forward with --method forward "
                              "(and --timestep T)"),
    (["--method", "ddpm", "--eta", "1"], "--eta applies to DDIM only; ddpm's noise is fixed"),
    (["--method", "ddpm-respaced", "--eta", "0"],
     "--eta applies to DDIM only; ddpm-respaced's noise is fixed"),
    (["--method", "ddpm", "--sample-steps", "50"], "--method ddpm --sample-steps 50: ddpm runs all 1000 steps, "
                                                   "got steps=50"),
    (["--method", "ddpm-respaced", "--sample-steps", "1"], "--method ddpm-respaced --sample-steps 1: ddpm-respaced "
                                                           "steps must be an integer in [2, 1000], got 1"),
    (["--timestep", "3"], "--timestep applies to --method forward; a ddim run visits its own timesteps"),
    (["--method", "forward", "--eta", "1"], "--eta applies to a sampling run, not to --method forward"),
    (["--method", "forward", "--sample-steps", "5"], "--sample-steps applies to a sampling run, not to --method "
                                                      "forward"),
    (["--method", "euler"], "--method must be one of forward, ddim, ddpm, ddpm-respaced, got 'euler'"),
    (["--eta", "2"], "--eta must be <= 1, got 2"),
    (["--sample-steps", "1001"], "--sample-steps must be <= 1000, got 1001"),
    (["--method", "forward", "--timestep", "1000"], "--timestep must be <= 999, got 1000"),
    (["--seed", "-1"], "--seed must be in [0, 2**63 - 1], got -1"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_options_that_name_no_workload_are_one_line_errors(options: list[str], message: str) -> None:
    for command in ("profile", "energy", "compare"):
        result = runner.invoke(app, _argv(command, options, batch=None))
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.strip() == f"error: {message}", command


@pytest.mark.parametrize(("command", "old"), [("sample", ["--steps", "3"]), ("evaluate", ["--steps", "3"]),
                                              ("energy", ["--measure-steps", "3"])])
def test_the_old_option_names_are_unknown_options(command: str, old: list[str]) -> None:
    result = runner.invoke(app, _argv(command, old, batch=None))
    assert result.exit_code == 2 and f"No such option: {old[0]}" in result.stderr


def test_compare_with_ddpm_runs_the_ddpm_that_profile_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: dict[str, Workload] = {}

    def profile_workload(model: Any, workload: Workload, **_: Any) -> None:
        ran["profile"] = workload
        raise _Stop

    def compare(targets: Any, workload: Workload, **_: Any) -> None:
        ran["compare"] = workload
        raise _Stop

    monkeypatch.setattr(cli.profile, "profile_workload", profile_workload)
    monkeypatch.setattr(cli.compare, "run_study", compare)
    profiled = runner.invoke(app, ["profile", "dit-tiny", "--method", "ddpm"])
    compared = runner.invoke(app, ["compare", "sdit-tiny", "dit-tiny", "--method", "ddpm", "--samples", "0"])
    assert "eta applies" not in compared.stderr and "eta applies" not in profiled.stderr
    assert ran["compare"] == ran["profile"] == Workload.ddpm()
    assert ran["compare"].model_calls == 1000


def test_every_command_declares_the_shared_options_with_the_same_defaults() -> None:
    group = typer.main.get_command(app)
    defaults: dict[str, dict[str, Any]] = {}
    for command in COMMANDS:
        params = {p.opts[0]: p for p in group.get_command(None, command).params
                  if p.opts and p.opts[0].startswith("--")}
        for option in SHARED:
            if option in params:
                defaults.setdefault(option, {})[command] = params[option].default
    assert defaults["--eta"] == dict.fromkeys(COMMANDS)  # not given: 1 for DDIM, refused elsewhere
    assert defaults["--sample-steps"] == dict.fromkeys(COMMANDS)  # not given: the method's default
    assert defaults["--device"] == dict.fromkeys(COMMANDS)  # not given: cuda when available, else cpu
    assert defaults["--method"] == dict.fromkeys(COMMANDS, "ddim")
    assert defaults["--seed"] == dict.fromkeys(COMMANDS, 0)
    assert defaults["--timestep"] == dict.fromkeys(("profile", "energy", "compare"))  # not given: 500
    assert defaults["--batch-size"] == {"profile": 1, "energy": 1, "compare": 1, "evaluate": 250,
                                        "sample": None}  # sample's not given: all images in one batch


def test_the_device_is_cuda_when_available_else_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.options.device_from_option(None) == "cpu"
    assert cli.options.device_from_option("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.options.device_from_option(None) == "cuda"
