"""Nothing lost, nothing trusted: one concrete case of each safety rule, then each rule over every option.

Every refusal is asserted as exit code, the one line on stderr, and the files on disk byte for byte (hashes
before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save
from typer.testing import CliRunner

from cli.main import app
from sdit import checkpoint, rundir
from sdit.checkpoint import CheckpointMeta
from sdit.config import get_preset
from sdit.diffusion import Diffusion
from sdit.models import build_model
from sdit.training.run_files import iter_metrics
from tests.sdit.test_train import write_idx_dataset

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
TINY = ["--preset", "dit-tiny", "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "0",
        "--log-every", "2", "--sample-every", "0", "--ckpt-every", "2", "--no-progress"]


def tree_hashes(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): file -> sha256, folder -> "dir", link -> its target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def one_line(result, code: int) -> str:  # noqa: ANN001
    """The single ``error: ...`` line of a refused command with exit ``code`` (``note:`` lines aside)."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def refused(args: list[str], code: int, needle: str, watch: Path) -> str:
    """Run ``sdit ARGS``; assert exit ``code``, one line containing ``needle``, and ``watch`` unchanged."""
    before = tree_hashes(watch)
    line = one_line(runner.invoke(app, args), code)
    assert needle in line, line
    assert tree_hashes(watch) == before
    return line


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, fashion_test) -> Path:  # noqa: ANN001
    return write_idx_dataset(tmp_path_factory.mktemp("fmnist"), fashion_test.images[:32])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished 4-step dit-tiny run."""
    out = tmp_path_factory.mktemp("runs") / "run"
    result = runner.invoke(app, ["train", *TINY, "--data-dir", str(data_dir), "--steps", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def write_checkpoint(path: Path, preset: str = "dit-tiny", claimed: str | None = None,
                     fill: float | None = None) -> Path:
    """A one-file checkpoint of an untrained ``preset`` (labelled ``claimed``), weights set to ``fill``."""
    torch.manual_seed(0)
    model = build_model(preset)
    state = {k: (torch.full_like(v, fill) if fill is not None else v) for k, v in model.state_dict().items()}
    meta = CheckpointMeta(preset=claimed or preset, config=get_preset(preset), step=3, dataset="fashion-mnist",
                          seed=0)
    tensors = {checkpoint.EMA_PREFIX + k: v.contiguous() for k, v in state.items()}
    path.write_bytes(safetensors_save(tensors, {"sdit": json.dumps(meta.to_dict())}))
    return path


def hostile_checkpoint(path: Path, config: dict, tensors: dict | None = None) -> Path:
    """A few hundred bytes: a safetensors header whose metadata declares ``config``; ``tensors`` the header's
    tensor entries (default: one tiny one)."""
    meta = {"format": checkpoint.FORMAT, "preset": "dit-tiny", "config": config, "step": 1,
            "dataset": "fashion-mnist", "seed": 0}
    entries = tensors or {"ema.x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    header = json.dumps({"__metadata__": {"sdit": json.dumps(meta)}, **entries}).encode()
    size = max((e["data_offsets"][1] for e in entries.values()), default=0)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * size)
    return path


# --- one concrete case per rule ---------------------------------------------------------------------------

def test_overwrite_never_deletes_a_directory_sdit_did_not_make(tmp_path: Path, data_dir: Path) -> None:
    repo_like = tmp_path / "repo"  # `sdit train --out . --overwrite` at a repository's root
    (repo_like / "checkpoints" / "sdit-small-fmnist").mkdir(parents=True)
    (repo_like / "checkpoints" / "sdit-small-fmnist" / "model.safetensors").write_bytes(b"shipped weights")
    (repo_like / "samples").mkdir()
    (repo_like / "samples" / "grid.png").write_bytes(b"png")
    (repo_like / "README.md").write_text("readme")
    line = refused(["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(repo_like),
                    "--overwrite"], 2, "is not an sdit run directory", repo_like)
    assert line == (f"error: --out: {repo_like} is not empty and is not an sdit run directory (no .sdit-run marker); "
                    "--overwrite only replaces sdit's own runs")


def test_a_locked_run_directory_refuses_a_second_train(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sdit.rundir import run_lock\n"
         f"with run_lock({str(copy)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        needle = f"run directory {copy} is in use by another sdit train (pid {holder.pid})"
        refused(["train", "--resume", str(copy), "--steps", "6", "--no-progress"], 2, needle, copy)
        refused(["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(copy), "--overwrite"],
                2, needle, copy)
    finally:
        holder.kill()
        holder.wait()
    assert runner.invoke(app, ["train", "--resume", str(copy), "--steps", "6", "--no-progress"]).exit_code == 0
    assert [r["step"] for r in iter_metrics(copy)] == [2, 4, 6]  # one run's records, in order


def test_a_tiny_hostile_checkpoint_allocates_nothing(tmp_path: Path) -> None:
    huge = {**json.loads(json.dumps(checkpoint.config_to_dict(get_preset("dit-tiny")))), "hidden_size": 16384,
            "depth": 256, "num_heads": 16}
    path = hostile_checkpoint(tmp_path / "huge.safetensors", huge)
    assert path.stat().st_size < 1000
    started = time.perf_counter()
    line = refused(["sample", str(path), "--out", str(tmp_path / "g.png")], 2, "more than the 2,000,000,000", tmp_path)
    assert "describes a model of over 274,877,906,944 parameters" in line
    too_deep = {**huge, "hidden_size": 32, "num_heads": 2, "depth": 10**9}
    refused(["profile", str(hostile_checkpoint(tmp_path / "deep.safetensors", too_deep))], 2,
            "config depth = 1000000000 is outside [1, 256]", tmp_path)
    assert time.perf_counter() - started < 30


def test_two_outputs_on_one_path_are_refused(tmp_path: Path) -> None:
    same = tmp_path / "same"
    same.write_text("old")
    refused(["profile", "dit-tiny", "--json", str(same), "--csv", str(same), "--overwrite"], 2,
            f"--csv: {same} is the same output as --json; give each output its own file", tmp_path)
    (tmp_path / "alias").symlink_to(same)
    refused(["sample", "dit-tiny", "--out", str(same), "--tensor", str(tmp_path / "alias"), "--overwrite"], 2,
            "--tensor: ", tmp_path)
    new = tmp_path / "sub" / ".." / "new.png"
    refused(["sample", "dit-tiny", "--out", str(tmp_path / "new.png"), "--tensor", str(new)], 2,
            "is the same output as --out", tmp_path)


def test_writes_go_through_links_and_dash_is_stdout(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    result = runner.invoke(app, ["profile", "dit-tiny", "--method", "forward", "--json", str(link), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and json.loads(real.read_text())["per_image"]["macs"] == 499_712
    piped = runner.invoke(app, ["profile", "dit-tiny", "--method", "forward", "--json", "-"])
    assert piped.exit_code == 0, piped.output
    assert json.loads(piped.stdout)["per_image"]["macs"] == 499_712  # stdout is the document alone
    assert "MACs (strict)" in piped.stderr


def test_dev_stdout_is_written_to_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "stdout.txt"
    with open(out, "wb") as fh:
        done = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "energy", "dit-tiny",
                               "--json", "/dev/stdout", "--overwrite"], stdout=fh, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path("/dev/stdout").is_symlink()  # the system's link survives (this runs as root in CI)
    text = out.read_text()
    assert "estimated energy per image" in text and '"break_even": null' in text  # table, then the JSON


def test_non_finite_and_absurd_numbers_are_refused_up_front(tmp_path: Path, data_dir: Path) -> None:
    for value in ("inf", "nan", "-inf"):
        refused(["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(tmp_path / "r"),
                 "--lr", value], 2, f"--lr must be a finite number, got {float(value)}", tmp_path)
    refused(["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(tmp_path / "r"),
             "--lr", "5"], 2, "--lr must be <= 1, got 5", tmp_path)
    assert not (tmp_path / "r").exists()


def test_a_run_that_turns_non_finite_stops_and_keeps_its_last_finite_checkpoint(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    loss_at = Diffusion.loss_at

    def diverging(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        loss = loss_at(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] >= 3 else loss  # step 3 on: NaN

    monkeypatch.setattr(Diffusion, "loss_at", diverging)
    out = tmp_path / "r"
    line = one_line(runner.invoke(app, ["train", *TINY, "--data-dir", str(data_dir), "--steps", "6", "--out",
                                        str(out)]), 2)
    assert line.startswith("error: training turned non-finite by step 4 (the loss is nan); stopped without saving it; "
                           f"the last checkpoint is step 2 ({out / 'checkpoints' / 'step-00000002.safetensors'}); "
                           f"resume with: sdit train --resume {out}")
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000002.safetensors"]
    assert [r["step"] for r in iter_metrics(out)] == [2]  # no NaN record
    assert "NaN" not in (out / "metrics.jsonl").read_text() and not (out / "summary.json").exists()
    checkpoint.load_model(out)  # finite, loadable


def test_nan_weights_are_refused_on_load(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "nan.safetensors", fill=float("nan"))
    for args in (["sample", str(path), "--out", str(tmp_path / "g.png")], ["profile", str(path)],
                 ["energy", str(path)]):
        refused(args, 2, "holds non-finite weights (NaN or inf) in", tmp_path)


def test_output_paths_are_checked_before_any_work(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["profile", "dit-tiny", "--json", str(tmp_path / "ok.json"), "--csv", "/proc/x.csv"],
         "--csv: /proc/x.csv is inside /proc, a system file system"),
        (["profile", "dit-tiny", "--csv", str(afile / "x.csv")], f"--csv: {afile} is a file, not a directory"),
        (["energy", "dit-tiny", "--json", str(tmp_path)], f"--json: {tmp_path} is a directory; give a file name"),
        (["sample", "dit-tiny", "--out", str(tmp_path / ("n" * 300))], "--out: file name too long (300 bytes"),
        (["sample", "dit-tiny", "--out", str(tmp_path / "g.png"), "--tensor", "/sys/t.safetensors"],
         "--tensor: /sys/t.safetensors is inside /sys"),
    ]
    for args, needle in cases:
        refused(args, 2, needle, tmp_path)
    assert not (tmp_path / "ok.json").exists() and not (tmp_path / "g.png").exists()  # no partial set


def test_metadata_is_checked_and_the_label_derived(tmp_path: Path, run_dir: Path) -> None:
    bad_type = {**checkpoint.config_to_dict(get_preset("dit-tiny")), "hidden_size": "32"}
    refused(["sample", str(hostile_checkpoint(tmp_path / "t.safetensors", bad_type)), "--out", str(tmp_path / "g")],
            2, "invalid model config: config hidden_size must be an integer, got str '32'", tmp_path)
    lying = write_checkpoint(tmp_path / "lying.safetensors", "dit-tiny", claimed="sdit-mnist")
    result = runner.invoke(app, ["sample", str(lying), "--out", str(tmp_path / "g.png"), "-n", "1",
                                 "--sample-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "dit-tiny at step 3 (EMA weights)" in result.stdout  # the config's preset, not the claimed one
    assert checkpoint.load_checkpoint(lying).meta.preset == "dit-tiny"
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    state_path = checkpoint.training_state_path(checkpoint.resolve_checkpoint(broken))
    state = torch.load(state_path, weights_only=True)
    del state["data"]["images_sha256"]
    torch.save(state, state_path)
    refused(["train", "--resume", str(broken), "--steps", "6"], 2, "lacks 'data.images_sha256'", broken)


# --- each rule over every option --------------------------------------------------------------------------

OUTPUT_OPTIONS = [
    (["sample", "dit-tiny", "-n", "1", "--sample-steps", "1"], "--out"),
    (["sample", "dit-tiny", "-n", "1", "--sample-steps", "1", "--out", "OK"], "--tensor"),
    (["profile", "dit-tiny"], "--json"),
    (["profile", "dit-tiny"], "--csv"),
    (["energy", "dit-tiny"], "--json"),
]
BAD_PLACES = {
    "exists": ("AFILE", [], "exists; pass --overwrite to replace it"),
    "directory": ("TMP", ["--overwrite"], "is a directory; give a file name"),
    "parent-file": ("AFILE/x", [], "is a file, not a directory"),
    "proc": ("/proc/sdit-out", [], "is inside /proc, a system file system"),
    "sys": ("/sys/sdit-out", ["--overwrite"], "is inside /sys, a system file system"),
    "too-long": ("TMP/" + "y" * 256, [], "file name too long"),
}


@pytest.mark.parametrize(("base", "option"), OUTPUT_OPTIONS, ids=[f"{b[0]} {o}" for b, o in OUTPUT_OPTIONS])
@pytest.mark.parametrize("case", sorted(BAD_PLACES))
def test_every_output_option_refuses_bad_places(tmp_path: Path, base: list[str], option: str, case: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    where, extra, needle = BAD_PLACES[case]
    target = where.replace("AFILE", str(afile)).replace("TMP", str(tmp_path))
    args = [str(tmp_path / "ok.png") if a == "OK" else a for a in base]
    line = refused([*args, option, target, *extra], 2, needle, tmp_path)
    assert line.startswith(f"error: {option}: ")
    assert not (tmp_path / "ok.png").exists()


@pytest.mark.parametrize(("args", "option"), [
    (["sample", "dit-tiny", "--out", "-", "--tensor", "/dev/stdout"], "--tensor"),
    (["profile", "dit-tiny", "--json", "-", "--csv", "-"], "--csv"),
    (["profile", "dit-tiny", "--json", "/dev/stdout", "--csv", "/dev/fd/1"], "--csv"),
])
def test_two_outputs_on_stdout_are_refused(tmp_path: Path, args: list[str], option: str) -> None:
    refused(args, 2, f"error: {option}: ", tmp_path)


NUMERIC = [
    (["sample", "dit-tiny", "--out", "OUT", "--num", "0"], "--num"),
    (["sample", "dit-tiny", "--out", "OUT", "--num", "100000"], "--num must be <= 65536"),
    (["sample", "dit-tiny", "--out", "OUT", "--sample-steps", "0"], "--sample-steps"),
    (["sample", "dit-tiny", "--out", "OUT", "--eta", "nan"], "--eta"),
    (["sample", "dit-tiny", "--out", "OUT", "--eta", "-0.5"], "--eta"),
    (["sample", "dit-tiny", "--out", "OUT", "--seed", "-1"], "--seed must be in [0, 2**63 - 1], got -1"),
    (["sample", "dit-tiny", "--out", "OUT", "--seed", str(2**64)], "--seed must be in [0, 2**63 - 1]"),
    (["profile", "dit-tiny", "--batch-size", "0"], "--batch-size"),
    (["profile", "dit-tiny", "--batch-size", "1000000"], "--batch-size must be <= 65536"),
    (["profile", "dit-tiny", "--timestep", "1000"], "--timestep"),
    (["profile", "dit-tiny", "--sample-steps", "-1"], "--sample-steps"),
    (["profile", "dit-tiny", "--seed", "-3"], "--seed"),
    (["profile", "dit-tiny", "--top", "0"], "--top"),
    (["energy", "dit-tiny", "--e-mac-pj", "inf"], "--e-mac-pj must be a finite number, got inf"),
    (["energy", "dit-tiny", "--e-ac-pj", "nan"], "--e-ac-pj"),
    (["energy", "dit-tiny", "--e-mem-pj-per-byte", "-1"], "--e-mem-pj-per-byte"),
    (["energy", "dit-tiny", "--e-neuron-pj", "1e300"], "--e-neuron-pj must be <= 1e+09"),
    (["energy", "dit-tiny", "--min-window-s", "nan"], "--min-window-s"),
    (["energy", "dit-tiny", "--idle-s", "inf"], "--idle-s must be a finite number"),
    (["energy", "dit-tiny", "--measure-steps", "0"], "--measure-steps"),
    (["energy", "dit-tiny", "--batch-size", "0"], "--batch-size"),
    (["energy", "dit-tiny", "--seed", str(2**63)], "--seed must be in [0, 2**63 - 1]"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--lr", "0"], "--lr must be > 0, got 0"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--lr", "-1e-3"], "--lr must be > 0"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--ema-decay", "1"], "--ema-decay must be < 1, got 1"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--ema-decay", "nan"], "--ema-decay must be a finite"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--seed", "-1"], "--seed must be in [0, 2**63 - 1]"),
    (["train", *TINY, "--steps", "0", "--out", "OUT"], "--steps"),
    (["train", *TINY, "--steps", str(10**10), "--out", "OUT"], "--steps must be <= 1e+09"),
    (["train", *TINY, "--epochs", "0", "--out", "OUT"], "--epochs"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--batch-size", "0"], "--batch-size"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--warmup-steps", "-1"], "--warmup-steps"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--keep", "0"], "--keep"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--log-every", "0"], "--log-every"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--ckpt-every", "-1"], "--ckpt-every"),
    (["train", *TINY, "--steps", "2", "--out", "OUT", "--sample-every", "-1"], "--sample-every"),
]


@pytest.mark.parametrize(("args", "needle"), NUMERIC, ids=[" ".join(a[-2:]) for a, _ in NUMERIC])
def test_every_numeric_option_is_checked_up_front(tmp_path: Path, args: list[str], needle: str) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    refused(args, 2, needle, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["info", "sample", "profile", "energy", "train"])
def test_every_command_gives_one_line_for_bad_usage(tmp_path: Path, command: str) -> None:
    line = refused([command, "--no-such-option"], 2, "No such option: --no-such-option", tmp_path)
    assert line.endswith(f"(see sdit {command} --help)") or "--help)" in line
    if command != "train":
        refused([command], 2, "Missing argument", tmp_path)
        refused([command, "no-such-preset"] + (["--out", str(tmp_path / "x")] if command == "sample" else []), 2,
                "no-such-preset", tmp_path)


def test_an_internal_error_is_exit_1_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cli.profile

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(cli.profile, "profile_workload", broken)
    line = refused(["profile", "dit-tiny"], 1, "internal error: RuntimeError: a bug over two lines", tmp_path)
    assert line.endswith("(rerun as sdit --debug ... for the traceback)")
    debug = runner.invoke(app, ["--debug", "profile", "dit-tiny"])
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == "error: internal error: RuntimeError: a bug over two lines"


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(tmp_path: Path, data_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    loss_at = Diffusion.loss_at

    def interrupted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return loss_at(self, *args, **kwargs)

    monkeypatch.setattr(Diffusion, "loss_at", interrupted)
    out = tmp_path / "r"
    line = one_line(runner.invoke(app, ["train", *TINY, "--data-dir", str(data_dir), "--steps", "6", "--out",
                                        str(out)]), 130)
    assert line == (f"error: interrupted at step 3 of 6; the last checkpoint is step 2 "
                    f"({out / 'checkpoints' / 'step-00000002.safetensors'}); resume with: sdit train --resume {out}")
    monkeypatch.setattr(Diffusion, "loss_at", loss_at)
    assert runner.invoke(app, ["train", "--resume", str(out), "--steps", "6", "--no-progress"]).exit_code == 0
    assert [r["step"] for r in iter_metrics(out)] == [2, 4, 6]


def test_a_run_without_its_marker_is_neither_resumed_nor_overwritten(run_dir: Path, tmp_path: Path,
                                                                     data_dir: Path) -> None:
    unmarked = tmp_path / "unmarked"
    shutil.copytree(run_dir, unmarked)
    (unmarked / rundir.MARKER).unlink()
    (unmarked / rundir.LOCK).unlink()
    before = tree_hashes(unmarked)
    for args in (["train", "--resume", str(unmarked), "--steps", "6", "--no-progress"],
                 ["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(unmarked), "--overwrite"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "no .sdit-run marker" in result.stderr, result.output
    assert tree_hashes(unmarked) == before


def test_nothing_outside_an_sdit_directory_is_ever_deleted(tmp_path: Path, run_dir: Path, data_dir: Path) -> None:
    foreign = tmp_path / "foreign"
    for rel in ("checkpoints/latest", "checkpoints/step-00000002.safetensors", "samples/step-00000002.png",
                "metrics.jsonl", "summary.json", ".x.tmp", "notes/a.txt"):
        (foreign / rel).parent.mkdir(parents=True, exist_ok=True)
        (foreign / rel).write_text(rel)
    (foreign / "run.json").write_text('{"not": "a run"}')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "step-00000009.png").write_text("precious")
    (outside / "latest").write_text("precious")
    before = tree_hashes(tmp_path)
    for overwrite in ([], ["--overwrite"]):
        line = one_line(runner.invoke(app, ["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out",
                                            str(foreign), *overwrite]), 2)
        assert "no .sdit-run marker" in line  # a run.json alone makes no run of ours
    with pytest.raises(rundir.RunDirError):
        rundir.clear_run(foreign)
    # An sdit run whose samples/ and checkpoints/ are links to the user's folder: the links go, the folder stays.
    linked = tmp_path / "linked"
    shutil.copytree(run_dir, linked)
    shutil.rmtree(linked / "samples")
    (linked / "samples").symlink_to(outside)
    (linked / "mine.txt").write_text("mine")
    rundir.clear_run(linked)
    assert tree_hashes(tmp_path / "outside") == {k[len("outside/"):]: v for k, v in before.items()
                                                  if k.startswith("outside/")}
    assert tree_hashes(foreign) == {k[len("foreign/"):]: v for k, v in before.items() if k.startswith("foreign/")}
    assert sorted(p.name for p in linked.iterdir()) == [".sdit-run", ".sdit-run.lock", "mine.txt", "samples"]


@pytest.mark.parametrize(("where", "needle"), [
    ("/proc/sdit-run", "--out: /proc/sdit-run/.sdit-run is inside /proc"),
    ("AFILE", "--out: AFILE exists and is not a directory"),
    ("AFILE/run", "--out: AFILE is a file, not a directory"),
    ("TMP/" + "r" * 256, "--out: file name too long"),
])
def test_train_out_is_checked_before_any_work(tmp_path: Path, where: str, needle: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    out = where.replace("AFILE", str(afile)).replace("TMP", str(tmp_path))
    refused(["train", *TINY, "--steps", "2", "--data-dir", "/nonexistent", "--out", out], 2,
            needle.replace("AFILE", str(afile)), tmp_path)


def test_sigterm_stops_a_run_like_ctrl_c_with_the_resume_note(tmp_path: Path, data_dir: Path) -> None:
    # a real signal to a real process: `kill`, a scheduler's preemption, or torchrun stopping its workers
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "train", *TINY, "--data-dir", str(data_dir), "--steps", "100000",
         "--out", str(out)],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert latest.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in 120 s"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    if proc.poll() is None:  # a second one, as slurm and torchrun both send: the first one's clean stop holds
        proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: interrupted at step ")
    assert lines[0].endswith(f"resume with: sdit train --resume {out}")
    saved = int(latest.read_text().strip().removeprefix("step-"))  # the note names it; nothing after it is lost
    assert f"the last checkpoint is step {saved} " in lines[0]
    resumed = runner.invoke(app, ["train", "--resume", str(out), "--steps", str(saved + 2), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
