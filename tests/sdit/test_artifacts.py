"""The one writing layer: output paths checked before work, written atomically through symlinks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sdit import artifacts
from sdit.artifacts import OutputError, OverwriteError, check_outputs, write_bytes, write_json


def _refused(paths: dict[str, object], overwrite: bool = True, stdout_ok: tuple[str, ...] = ()) -> str:
    with pytest.raises(OutputError) as info:
        check_outputs(paths, overwrite=overwrite, stdout_ok=stdout_ok)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_check_outputs_accepts_new_files_and_skips_none(tmp_path: Path) -> None:
    check_outputs({"--json": tmp_path / "a.json", "--csv": tmp_path / "sub" / "b.csv", "--x": None}, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the check writes nothing (its probe is removed)


@pytest.mark.parametrize("overwrite", [False, True])
def test_check_outputs_refuses_every_bad_place(tmp_path: Path, overwrite: bool) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    long_name = "x" * 300
    assert _refused({"--json": "/proc/out.json"}, overwrite).startswith("--json: /proc/out.json is inside /proc")
    assert "inside /sys" in _refused({"--csv": "/sys/out.csv"}, overwrite)
    assert _refused({"--json": tmp_path}, overwrite) == f"--json: {tmp_path} is a directory; give a file name"
    assert _refused({"--json": afile / "x.json"}, overwrite) == (
        f"--json: {afile} is a file, not a directory, so {afile / 'x.json'} cannot be created")
    assert _refused({"--json": afile / "deeper" / "x.json"}, overwrite).startswith(f"--json: {afile} is a file")
    assert "file name too long (300 bytes, at most 255)" in _refused({"--out": tmp_path / long_name}, overwrite)
    assert "path too long" in _refused({"--out": "/" + "/".join(["d" * 200] * 21)}, overwrite)
    assert _refused({"--out": ""}, overwrite) == "--out: empty path"
    assert afile.read_text() == "keep"


def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert _refused({"--json": old}, overwrite=False) == f"--json: {old} exists; pass --overwrite to replace it"
    check_outputs({"--json": old}, overwrite=True)


def test_duplicates_refused_through_relative_paths_symlinks_and_hard_links(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert _refused({"--json": "a.json", "--csv": tmp_path / "sub" / ".." / "a.json"}) == (
        f"--csv: {tmp_path / 'sub' / '..' / 'a.json'} is the same output as --json; give each output its own file")
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.link(tmp_path / "real", tmp_path / "hard")
    assert "same output as --out" in _refused({"--out": "real", "--tensor": "link"})
    assert "same output as --out" in _refused({"--out": "real", "--tensor": "hard"})
    assert "same output as --json" in _refused({"--json": "-", "--csv": "/dev/stdout"}, stdout_ok=("--json", "--csv"))
    check_outputs({"--json": os.devnull, "--csv": os.devnull}, overwrite=False)  # discarding twice loses nothing


def test_stdout_only_where_allowed(tmp_path: Path) -> None:
    assert _refused({"--out": "-"}) == "--out: '-' (standard output) is not supported here; give a file name"
    check_outputs({"--json": "-"}, overwrite=False, stdout_ok=("--json",))


def test_unwritable_directory_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root no permission bit stops a write, so stand in for a read-only mount at the probe.
    def read_only(prefix: str = "", suffix: str = "", dir: object = None) -> tuple[int, str]:  # noqa: A002
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", read_only)
    assert _refused({"--json": tmp_path / "new" / "a.json"}) == (
        f"--json: cannot write in {tmp_path}: Read-only file system")


def test_write_through_symlink_keeps_link_and_mode(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    write_json(link, {"a": 1}, overwrite=True)
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert json.loads(real.read_text()) == {"a": 1}
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "made" / "by-link.bin")
    write_bytes(dangling, b"x")
    assert dangling.is_symlink() and (tmp_path / "made" / "by-link.bin").read_bytes() == b"x"


def test_new_file_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_bytes(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640


def test_writers_refuse_overwrite_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"keep")
    with pytest.raises(OverwriteError):
        write_bytes(tmp_path / "a", b"new")
    with pytest.raises(OutputError):
        write_bytes(tmp_path, b"new", overwrite=True)
    assert (tmp_path / "a").read_bytes() == b"keep"


def test_long_name_fits_its_temporary_file(tmp_path: Path) -> None:
    name = "n" * 255
    write_bytes(tmp_path / name, b"x")
    assert (tmp_path / name).read_bytes() == b"x"


def test_dash_and_dev_stdout_write_to_the_descriptor(tmp_path: Path) -> None:
    """``-`` and ``/dev/stdout`` (a link to /proc/self/fd/1) write into the open stdout, never replace the file
    it is redirected to: what was printed before stays."""
    script = ("import sys; from sdit.artifacts import write_json; print('before', flush=True); "
              "write_json('-', {'a': 1}); write_json('/dev/stdout', {'b': 2}, overwrite=True)")
    out = tmp_path / "out.txt"
    with open(out, "wb") as fh:
        subprocess.run([sys.executable, "-c", script], stdout=fh, check=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.read_text() == 'before\n{\n  "a": 1\n}\n{\n  "b": 2\n}\n'
    assert not out.is_symlink() and Path("/dev/stdout").is_symlink()


def test_text_and_bytes_need_no_torch(tmp_path: Path) -> None:
    """Writing JSON and bytes loads neither torch nor numpy; writing tensors still works (and loads them)."""
    script = ("import sys; from sdit import artifacts; "
              f"artifacts.write_json({str(tmp_path / 'a.json')!r}, {{'a': 1}}); "
              f"artifacts.write_bytes({str(tmp_path / 'b.bin')!r}, b'x'); "
              "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'safetensors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.stdout.strip() == "[]"
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}

    import torch
    from safetensors.torch import load_file

    artifacts.save_tensors({"x": torch.arange(3)}, tmp_path / "x.safetensors")
    assert load_file(tmp_path / "x.safetensors")["x"].tolist() == [0, 1, 2]
