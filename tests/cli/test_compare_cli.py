from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
ARGS = ["compare", "sdit-tiny", "dit-tiny", "--sample-steps", "2", "--samples", "4"]


def test_compare_writes_report_json_and_csv_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, [*ARGS, "--costs", "45nm-int8", "--costs", "45nm-fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    data = json.loads((out / "comparison.json").read_text())
    assert [t["name"] for t in data["targets"]] == ["sdit-tiny", "dit-tiny"]
    assert [c["name"] for c in data["costs"]] == ["45nm-int8", "45nm-fp32"]
    assert list(data["conventions"]) == ["paper", "strict", "block", "spikformer"]
    assert data["workload"] == {"kind": "ddim", "timestep": None, "steps": 2, "eta": 1.0, "batch_size": 1, "seed": 0}
    comp = pd.read_csv(out / "tables" / "comparison.csv").set_index("model")
    assert comp.loc["dit-tiny", "macs_per_image_strict"] == 2 * 499_712
    assert comp.loc["dit-tiny", "energy_uJ_per_image_strict_45nm-int8"] == pytest.approx(2 * 499_712 * 0.23e-6)
    html = (out / "report.html").read_text()
    embedded = json.loads(re.search(r'id="sdit-data">(.*?)</script>', html, re.S).group(1))
    assert embedded["comparison"] == data
    assert 'alt="samples of sdit-tiny"' in html and 'alt="samples of dit-tiny"' in html
    before = (out / "report.html").read_bytes()
    again = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: --out: {out} holds an earlier report; pass --overwrite to replace it"
    assert (out / "report.html").read_bytes() == before


def test_compare_bad_usage_is_one_line(tmp_path: Path) -> None:
    cases = {("sdit-tiny",): "error: compare needs two or more targets",
             ("sdit-tiny", "dit-tiny", "--convention", "loose"): "error: --convention 'loose': valid conventions",
             ("sdit-tiny", "dit-tiny", "--costs", "7nm"): "error: --costs '7nm' is neither a preset",
             ("sdit-tiny", "dit-tiny", "--eta", "2"): "error: --eta must be <= 1, got 2",
             ("sdit-tiny", "sdit-tiny"): "error: each target may be named once"}
    for args, start in cases.items():
        result = runner.invoke(app, ["compare", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().startswith(start), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def _evaluation(target: str, model: str, fid: float) -> dict:
    """A minimal `sdit evaluate --json` result (the fields the report reads)."""
    return {"format": "sdit-evaluate/1", "target": target, "model": model, "num_samples": 100,
            "sampler": {"description": "ddim, 50 steps, eta 1"},
            "reference": {"dataset": "fashion-mnist", "split": "test", "selection": "first 100 of 10000"},
            "units": {"fid": "squared distance", "precision": "fraction"},
            "results": {"domain": {"fid": fid, "precision": 0.5, "feature_seconds": 1.0, "nearest_k": 5,
                                   "prdc_set_size": 80}}}


def test_compare_puts_quality_files_beside_the_energy(tmp_path: Path) -> None:
    files = []
    for name, fid in (("sdit-tiny", 12.5), ("dit-tiny", 7.25)):
        files += ["--quality", str(tmp_path / f"{name}.json")]
        (tmp_path / f"{name}.json").write_text(json.dumps(_evaluation(name, f"preset {name} (untrained)", fid)))
    out = tmp_path / "cmp"
    result = runner.invoke(app, [*ARGS, "--samples", "0", *files, "--out", str(out)])
    assert result.exit_code == 0, result.output
    quality = pd.read_csv(out / "tables" / "quality.csv")
    assert quality[["model", "features", "metric", "value", "n"]].values.tolist() == [
        ["sdit-tiny", "domain", "fid", 12.5, 100], ["sdit-tiny", "domain", "precision", 0.5, 80],
        ["dit-tiny", "domain", "fid", 7.25, 100], ["dit-tiny", "domain", "precision", 0.5, 80]]
    # each number says what it is, and precision / recall with which neighbourhoods
    assert quality.unit.tolist()[:2] == ["squared distance", "fraction [k = 5 nearest neighbours, 80 images a side]"]
    assert quality.source[0] == f"sdit evaluate ({tmp_path / 'sdit-tiny.json'}, revision ?)"
    summary = pd.read_csv(out / "tables" / "quality_summary.csv").set_index("model")
    assert summary.loc["dit-tiny", "domain fid"] == 7.25 and summary.loc["sdit-tiny", "domain fid"] == 12.5
    assert 'id="quality"' in (out / "report.html").read_text()


def test_compare_without_quality_says_so(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert runner.invoke(app, [*ARGS, "--samples", "0", "--out", str(out)]).exit_code == 0
    assert "No quality figures: no target carries a held-out eps-MSE" in (out / "report.html").read_text()
    assert not (out / "tables" / "quality.csv").exists()


def test_compare_refuses_a_quality_file_of_another_model_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    cases = {
        json.dumps(_evaluation("dit-small", "preset dit-small (untrained)", 1.0)):
            (2, "error: --quality {f}: it evaluated 'dit-small', which is not among the compared targets "
                "(sdit-tiny, dit-tiny)"),
        json.dumps(_evaluation("dit-tiny", "dit-tiny at step 9 (EMA weights)", 1.0)):
            (2, "error: --quality {f}: it evaluated 'dit-tiny at step 9 (EMA weights)', but the compared dit-tiny "
                "is 'preset dit-tiny (untrained)'"),
        json.dumps({"format": "other"}): (2, "error: --quality {f}: not an `sdit evaluate --json` result"),
        json.dumps(_evaluation("dit-tiny", "preset dit-tiny (untrained)", float("nan"))):
            (2, "error: --quality {f}: results.domain.fid is nan, not a finite number"),
        json.dumps({**_evaluation("dit-tiny", "preset dit-tiny (untrained)", 1.0), "num_samples": 0}):
            (2, "error: --quality {f}: num_samples is 0, not a positive integer"),
        json.dumps({**_evaluation("dit-tiny", "x", 1.0), "target": None, "samples_file": "s.pt"}):
            (2, "error: --quality {f}: it evaluated a samples file (s.pt), not a checkpoint"),
        json.dumps({**_evaluation("dit-tiny", "preset dit-tiny (untrained)", 1.0), "weights_sha256": "ab" * 32}):
            (2, "error: --quality {f}: it evaluated weights with sha256 abababababab... (preset dit-tiny "
                "(untrained)), which none of the compared targets (sdit-tiny, dit-tiny) has"),
        "{not json": (2, "error: --quality {f}: cannot read it as JSON (JSONDecodeError"),
    }
    for text, (code, start) in cases.items():
        bad.write_text(text)
        result = runner.invoke(app, [*ARGS, "--quality", str(bad), "--out", str(tmp_path / "x")])
        assert result.exit_code == code, (text, result.output)
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note: ")]
        assert len(lines) == 1 and lines[0].startswith(start.format(f=bad)), result.stderr
    assert not (tmp_path / "x").exists()  # refused before any work or output


def test_compare_matches_a_quality_file_by_the_weights_it_evaluated(tmp_path: Path) -> None:
    import hashlib

    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "dit-small-fmnist"
    sha = hashlib.sha256((shipped / "model.safetensors").read_bytes()).hexdigest()
    # named differently from the compared target (the weights file, not its directory): the hash decides
    ev = {**_evaluation(str(shipped / "model.safetensors"), "dit-small at step 24000 (EMA weights)", 3.5),
          "weights_sha256": sha}
    (tmp_path / "q.json").write_text(json.dumps(ev))
    twice = ["--quality", str(tmp_path / "q.json")]
    out = tmp_path / "cmp"
    base = ["compare", "sdit-tiny", str(shipped), "--method", "forward", "--samples", "0", "--out", str(out)]
    result = runner.invoke(app, [*base, *twice])
    assert result.exit_code == 0, result.output
    quality = pd.read_csv(out / "tables" / "quality.csv")
    assert quality.loc[quality.metric == "fid", ["model", "value"]].values.tolist() == [["dit-small@24000", 3.5]]
    again = runner.invoke(app, [*base, "--overwrite", *twice, *twice])
    assert again.exit_code == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: --quality {tmp_path / 'q.json'}: {tmp_path / 'q.json'} already gives {shipped}'s domain figures; "
        "give one file per model and feature network")


def test_compare_includes_the_evaluations_a_shipped_directory_holds(tmp_path: Path) -> None:
    import shutil

    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "dit-small-fmnist"
    base = ["compare", "sdit-tiny", "--method", "forward", "--samples", "0", "--out", str(tmp_path / "cmp")]
    result = runner.invoke(app, [*base, str(shipped)])
    assert result.exit_code == 0, result.output
    quality = pd.read_csv(tmp_path / "cmp" / "tables" / "quality.csv")
    fid = quality.loc[quality.metric == "fid"]
    assert fid[["model", "features", "n"]].values.tolist() == [["dit-small@24000", "domain", 5000]]
    assert fid.value.iloc[0] == pytest.approx(124.92787660210718, abs=1e-12)  # the N = 5,000 record, as written
    assert fid.source.iloc[0].startswith(f"sdit evaluate ({shipped / 'evaluations'}")
    printed = " ".join(result.output.split())
    assert "energy-quality frontier: estimated energy per image" in printed  # the terminal's frontier table
    assert "FID protocol: domain features" in printed and "124.9" in printed
    assert ("The energies are of one forward at t=500, batch 1, seed 0, the FIDs of samples drawn with ddim, 50 "
            "steps, eta 1: not one sampler (compare with --method ddim --sample-steps 50 --eta 1") in printed
    # Left out on request, and when the record no longer describes the directory's weights.
    result = runner.invoke(app, [*base, str(shipped), "--overwrite", "--no-shipped-quality"])
    assert result.exit_code == 0, result.output
    quality = pd.read_csv(tmp_path / "cmp" / "tables" / "quality.csv")
    assert set(quality.source) == {"provenance.json"}  # the held-out eps-MSE only
    # An earlier report's tables that the new one has not are removed, and said.
    result = runner.invoke(app, [*base, "dit-tiny", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "cmp" / "tables" / "quality.csv").exists()
    assert "note: removed 2 table(s) of the earlier report that this one has not: quality.csv, quality_summary.csv" \
        in " ".join(result.stderr.split())
    copy = tmp_path / "dit-small-copy"
    shutil.copytree(shipped, copy)
    record = next((copy / "evaluations").glob("*.json"))
    record.write_text(record.read_text().replace("at step 24000", "at step 23000"))
    result = runner.invoke(app, [*base, str(copy), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (f"left out the shipped evaluation {record}: it evaluated 'dit-small at step 23000 (EMA weights)', "
            f"not {copy}'s dit-small at step 24000 (EMA weights)") in " ".join(result.stderr.split())
    assert set(pd.read_csv(tmp_path / "cmp" / "tables" / "quality.csv").source) == {"provenance.json"}
    # A damaged record stops the command before any work, and says how to go on without it.
    record.write_text("{not json")
    result = runner.invoke(app, [*base, str(copy), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: shipped evaluation {record}: cannot read it as JSON (JSONDecodeError")
    assert line.endswith("; --no-shipped-quality leaves it out")
    assert not (tmp_path / "y").exists()


def test_compare_takes_a_spike_driven_sdit_beside_sdit_and_dit(tmp_path: Path) -> None:
    out = tmp_path / "three"
    result = runner.invoke(app, ["compare", "sdit-tiny-sd", "sdit-tiny", "dit-tiny", "--sample-steps", "2",
                                 "--samples", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "comparison.json").read_text())
    assert [t["name"] for t in data["targets"]] == ["sdit-tiny-sd", "sdit-tiny", "dit-tiny"]
    comp = pd.read_csv(out / "tables" / "comparison.csv").set_index("model")
    layers = pd.read_csv(out / "tables" / "layers.csv")
    sd = layers[layers.model == "sdit-tiny-sd"]
    # Its synaptic layers in blocks read spikes: strict ACs, which the per-layer table adds up to.
    assert comp.loc["sdit-tiny-sd", "acs_per_image_strict"] == sd.acs_strict.sum() > 0
    assert comp.loc["sdit-tiny", "acs_per_image_strict"] == 0  # the paper's block: MACs only, op by op
    assert comp.loc["sdit-tiny-sd", "macs_per_image_strict"] == sd.macs_strict.sum()
    assert comp.loc["sdit-tiny-sd", "macs_per_image_strict"] * 20 < comp.loc["sdit-tiny", "macs_per_image_strict"]
    # Strict energy depends on its firing rate, so it has a strict break-even against the DiT; sdit-tiny has none.
    be = pd.read_csv(out / "tables" / "break_even.csv")
    strict = be[(be.convention == "strict") & (be.preset == "45nm-fp32")].set_index("model")
    assert 0 < strict.loc["sdit-tiny-sd", "break_even_firing_rate_pct"] < 100
    assert pd.isna(strict.loc["sdit-tiny", "break_even_firing_rate_pct"]) and strict.loc["sdit-tiny", "reason"]
    assert "sdit-tiny-sd" in (out / "report.html").read_text()


def test_overwrite_never_touches_a_folder_that_holds_no_report(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "mydata.csv").write_text("x,y\n")
    result = runner.invoke(app, [*ARGS, "--out", str(out), "--overwrite"])
    assert result.exit_code == 2 and "holds no sdit report (no .sdit-report marker)" in result.stderr
    assert (out / "tables" / "mydata.csv").read_text() == "x,y\n"
    link = tmp_path / "link"
    link.symlink_to(out)
    result = runner.invoke(app, [*ARGS, "--out", str(link), "--overwrite"])
    assert result.exit_code == 2 and "is a link" in result.stderr


def test_a_report_set_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cmp"
    assert runner.invoke(app, [*ARGS, "--out", str(out)]).exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path(".sdit-report") in before

    import reports.report

    def fail_late(page: object) -> str:  # the page is the last file the set needs
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reports.report, "render_page", fail_late)
    result = runner.invoke(app, [*ARGS, "--out", str(out), "--overwrite"])
    assert result.exit_code != 0
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cmp.sdit-report.lock", "cmp"]  # no staging left


def test_a_second_writer_into_one_out_is_refused(tmp_path: Path) -> None:
    from reports.report import report_lock

    out = tmp_path / "cmp"
    with report_lock(out):
        result = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert result.exit_code == 2 and "another sdit compare is writing" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("source", ["/dev/zero", "big"])
def test_a_quality_file_is_read_within_a_bound(tmp_path: Path, source: str) -> None:
    path = Path(source) if source.startswith("/") else tmp_path / "big.json"
    if source == "big":
        path.write_bytes(b" " * (16 * 2**20 + 1))
    result = runner.invoke(app, [*ARGS, "--out", str(tmp_path / "cmp"), "--quality", str(path)])
    assert result.exit_code == 2 and "--quality" in result.stderr
    assert "not a regular file" in result.stderr or "larger than 16 MiB" in result.stderr
    assert not (tmp_path / "cmp").exists()


def test_compare_prints_the_verdict_matrix_with_break_evens_in_words(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "sdit-tiny", "dit-tiny", "--method", "forward", "--samples", "0",
                                 "--costs", "45nm-fp32", "--memory", "no-reuse", "--out", str(tmp_path / "r")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "verdict matrix, sdit-tiny (model, untrained weights) vs dit-tiny (baseline)" in text  # a preset
    for model in ("operand-once", "no-reuse", "lemaire"):
        assert model in text
    assert "memory presets: operand-once at 45nm-sram-8kb, no-reuse at step-3.12pj-bit" in text
    matrix_part = text[text.index("verdict matrix"):]
    assert not re.search(r"\s-\d+\.\d+%", matrix_part)  # no negative break-even


def test_a_malformed_provenance_is_refused_before_any_work(tmp_path: Path) -> None:
    import shutil
    import time

    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "dit-small-fmnist"
    mine = tmp_path / "dit-small-fmnist"
    shutil.copytree(shipped, mine)
    prov = json.loads((mine / "provenance.json").read_text())
    prov["held_out_eps_mse"] = ["not", "a", "map"]
    (mine / "provenance.json").write_text(json.dumps(prov))
    start = time.monotonic()
    result = runner.invoke(app, ["compare", "sdit-tiny", str(mine), "--method", "forward", "--samples", "0",
                                 "--out", str(tmp_path / "cmp")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1
    assert "held_out_eps_mse must map timesteps to finite numbers" in result.stderr
    assert "counting" not in result.output and not (tmp_path / "cmp").exists()
    assert time.monotonic() - start < 60
