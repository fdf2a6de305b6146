"""`sdit evaluate`: JSON record, printed units, user-given MNIST / CIFAR-10 files, one-line errors."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from sdit.artifacts import save_tensors
from sdit.data import load_dataset
from sdit.quality.classifier import ClassifierConfig, ImageClassifier, save_classifier
from sdit.quality.features import DEFAULT_CLASSIFIER, file_sha256
from sdit.quality.reference import images_sha256

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDIT_CACHE", str(tmp_path / "cache"))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _mnist_test_files(directory: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(0)
    directory.mkdir()
    _write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return directory


def _cifar_test_file(directory: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(1)
    directory.mkdir()
    records = np.concatenate([np.arange(n)[:, None] % 10, rng.integers(0, 256, (n, 3 * 32 * 32))], axis=1)
    (directory / "test_batch.bin").write_bytes(records.astype(np.uint8).tobytes())
    return directory


def test_evaluate_writes_the_record_and_prints_units(tmp_path: Path) -> None:
    out, saved = tmp_path / "eval.json", tmp_path / "samples.safetensors"
    args = ["evaluate", "dit-tiny", "--num", "20", "--sample-steps", "2", "--eta", "1", "--seed", "3",
            "--ref-num", "60", "--kid-subsets", "2", "--nearest-k", "3", "--batch-size", "8", "--json", str(out),
            "--save-samples", str(saved)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["num_samples"] == 20
    assert record["measured"] is None  # no --measure
    assert record["sampler"] == {"method": "ddim", "steps": 2, "eta": 1.0, "seed": 3, "batch_size": 8,
                                 "noise": "per image", "description": "ddim, 2 steps, eta 1"}
    ref = record["reference"]
    assert (ref["dataset"], ref["split"], ref["num_images"], ref["split_images"]) == ("fashion-mnist", "test", 60,
                                                                                        10000)
    assert ref["images_sha256"] == images_sha256(load_dataset("fashion-mnist", "test").images[:60])
    domain = record["results"]["domain"]
    assert domain["feature_network"]["sha256"] == file_sha256(DEFAULT_CLASSIFIER / "model.safetensors")
    assert domain["fid"] > 0 and domain["kid_subsets"] == 2 and domain["prdc_set_size"] == 20
    assert 0 <= domain["precision"] <= 1 and 0 <= domain["coverage"] <= 1
    assert domain["reference_cache"]["cache_hit"] is False
    assert "squared distance" in result.output and "MMD^2" in result.output and "%" in result.output
    assert "ddim, 2 steps, eta 1" in result.output
    assert record["units"]["fid"].startswith("squared distance")
    # Same settings again: the reference comes from the cache and the numbers repeat exactly.
    again = runner.invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    second = json.loads(out.read_text())["results"]["domain"]
    assert second["reference_cache"]["cache_hit"] is True
    assert (second["fid"], second["kid"], second["recall"]) == (domain["fid"], domain["kid"], domain["recall"])
    # The saved samples measured again give the same numbers and carry the sampler.
    from_file = tmp_path / "from-file.json"
    result = runner.invoke(app, ["evaluate", "--samples", str(saved), "--ref-num", "60", "--kid-subsets", "2",
                                 "--nearest-k", "3", "--seed", "3", "--json", str(from_file)])
    assert result.exit_code == 0, result.output
    third = json.loads(from_file.read_text())
    assert third["sampler"] == record["sampler"] and third["num_samples"] == 20
    assert third["model"] == "preset dit-tiny (untrained)" and third["samples_file"] == str(saved)
    assert third["results"]["domain"]["fid"] == domain["fid"]
    assert third["results"]["domain"]["precision"] == domain["precision"]


def test_evaluate_mnist_from_user_files(tmp_path: Path) -> None:
    data_dir = _mnist_test_files(tmp_path / "mnist")
    out = tmp_path / "mnist.json"
    result = runner.invoke(app, ["evaluate", "dit-tiny", "--num", "10", "--sample-steps", "1", "--dataset", "mnist",
                                 "--data-dir", str(data_dir), "--kid-subsets", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained on Fashion-MNIST, not mnist" in result.output  # the default classifier is named as such
    record = json.loads(out.read_text())
    assert record["reference"]["dataset"] == "mnist" and record["reference"]["num_images"] == 30
    assert record["reference"]["directory"] == str(data_dir)
    assert np.isfinite(record["results"]["domain"]["fid"])


def test_evaluate_cifar10_from_user_files(tmp_path: Path) -> None:
    data_dir = _cifar_test_file(tmp_path / "cifar")
    refused = runner.invoke(app, ["evaluate", "dit-cifar", "--num", "6", "--sample-steps", "1", "--dataset", "cifar10",
                                  "--data-dir", str(data_dir), "--kid-subsets", "1", "--nearest-k", "2"])
    assert refused.exit_code == 2
    assert "1-channel images, cifar10 has 3" in refused.output
    classifier = save_classifier(ImageClassifier(ClassifierConfig(in_channels=3)), tmp_path / "clf3.safetensors")
    out = tmp_path / "cifar.json"
    result = runner.invoke(app, ["evaluate", "dit-cifar", "--num", "6", "--sample-steps", "1", "--dataset", "cifar10",
                                 "--data-dir", str(data_dir), "--classifier", str(classifier), "--kid-subsets", "2",
                                 "--nearest-k", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["reference"]["dataset"] == "cifar10" and record["reference"]["num_images"] == 30
    assert record["results"]["domain"]["feature_network"]["sha256"] == file_sha256(classifier)


def test_evaluate_errors_are_one_line(tmp_path: Path) -> None:
    exists = tmp_path / "exists.json"
    exists.write_text("{}")
    cases = [
        (["evaluate", "dit-tiny", "--json", str(exists)], 2, "exists; pass --overwrite"),
        (["evaluate", "dit-tiny", "--features", "clip"], 2, "--features: unknown clip"),
        (["evaluate", "dit-tiny", "--method", "ddpm", "--eta", "1"], 2, "eta applies to DDIM only"),
        (["evaluate", "dit-tiny", "--dataset", "mnist"], 2, "no --data-dir given"),
        (["evaluate", "dit-tiny", "--ref-num", "20000"], 2, "reference size must be in [2, 10000]"),
        (["evaluate", "dit-tiny", "--classifier", str(tmp_path / "none")], 2, "do not exist"),
        (["evaluate", "dit-tiny", "--num", "10", "--kid-subsets", "6"], 2, "needs --num >= 12"),
        (["evaluate"], 2, "missing TARGET"),
        (["evaluate", "--samples", str(exists)], 2, "not a samples file"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert result.output.count("error:") == 1
    assert exists.read_text() == "{}"


def test_evaluate_reads_the_sampler_a_samples_file_records(tmp_path: Path) -> None:
    drawn, bare = tmp_path / "drawn.safetensors", tmp_path / "bare.safetensors"
    made = runner.invoke(app, ["sample", "dit-tiny", "--num", "12", "--sample-steps", "2", "--seed", "4",
                               "--out", str(tmp_path / "grid.png"), "--tensor", str(drawn)])
    assert made.exit_code == 0, made.output
    save_tensors({"samples": torch.zeros(10, 1, 28, 28)}, bare)
    records = {}
    for name, path in (("drawn", drawn), ("bare", bare)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["evaluate", "--samples", str(path), "--num", "10", "--ref-num", "30",
                                     "--kid-subsets", "2", "--nearest-k", "3", "--json", str(out)])
        assert result.exit_code == 0, result.output
        records[name] = json.loads(out.read_text())["sampler"]
    assert records["drawn"] == {"method": "ddim", "steps": 2, "eta": 1.0, "seed": 4, "batch_size": 12,
                                "noise": "per image", "description": "ddim, 2 steps, eta 1"}
    assert "noise" not in records["bare"] or records["bare"]["noise"] == "not recorded"
    assert records["bare"]["method"] == "unknown" and records["bare"]["seed"] is None


def test_an_unwritable_cache_is_a_printed_warning_not_a_lost_evaluation(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("x")
    monkeypatch.setenv("SDIT_CACHE", str(cache))
    out = tmp_path / "eval.json"
    args = ["evaluate", "dit-tiny", "--num", "20", "--sample-steps", "2", "--ref-num", "40", "--kid-subsets", "2",
            "--nearest-k", "3", "--batch-size", "10", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cache_record = json.loads(out.read_text())["results"]["domain"]["reference_cache"]
    assert "features not cached" in cache_record["cache_warning"]
    assert "  warning: reference cache: features not cached" in result.output


def test_evaluate_at_small_n_scales_its_defaults_and_warns(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", "dit-tiny", "--num", "8", "--sample-steps", "1", "--ref-num", "30",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output  # no default that fails at N = 8
    record = json.loads(out.read_text())
    domain = record["results"]["domain"]
    assert (domain["kid_subsets"], domain["nearest_k"]) == (4, 5)  # 8 // 2 subsets of 2; k = 5 < 8
    warning = record["warnings"][0]  # (an untrained model's samples may also be out of range)
    assert warning.startswith("N = 8 samples, fewer than 1,000: FID is biased upwards")
    lines = result.stdout.splitlines()
    assert lines[1] == f"warning: {warning}"  # under the first line, before every figure
    assert runner.invoke(app, ["evaluate", "dit-tiny", "--num", "3", "--sample-steps", "1", "--ref-num", "30"]
                         ).exit_code == 0  # k = 2, 1 subset
    refused = runner.invoke(app, ["evaluate", "dit-tiny", "--num", "8", "--kid-subsets", "10"])
    assert refused.exit_code == 2 and "pass --kid-subsets 4 or fewer (or leave it out), or --num 20" in refused.stderr


def test_evaluate_refuses_non_finite_samples_and_warns_of_values_outside_the_range(tmp_path: Path) -> None:
    base = torch.rand(10, 1, 28, 28) * 2 - 1
    for name, bad in (("nan", float("nan")), ("inf", float("inf"))):
        path = tmp_path / f"{name}.safetensors"
        samples = base.clone()
        samples[3, 0, 5, 5] = bad
        save_tensors({"samples": samples}, path)
        result = runner.invoke(app, ["evaluate", "--samples", str(path), "--ref-num", "30"])
        assert result.exit_code == 2 and "1 sample value(s) are NaN or infinite" in result.stderr
    for name, samples in (("uint8", ((base + 1) * 127.5).round().to(torch.uint8)), ("x1000", base * 1000)):
        path, out = tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"
        save_tensors({"samples": samples}, path)
        result = runner.invoke(app, ["evaluate", "--samples", str(path), "--ref-num", "30", "--json", str(out)])
        assert result.exit_code == 0, result.output
        warnings = json.loads(out.read_text())["warnings"]
        assert len(warnings) == 2 and warnings[1].startswith("the samples are no images in [-1, 1]: values from")
        assert f"warning: {warnings[1]}" in result.stdout


MEASURED = ["evaluate", "dit-tiny", "--num", "6", "--sample-steps", "1", "--ref-num", "8", "--kid-subsets", "2",
            "--nearest-k", "3", "--batch-size", "3", "--measure", "--idle-s", "0.5"]


def test_evaluate_measure_writes_the_ranks_readings_their_sum_and_energy_per_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import profiling.meters
    from tests.sdit.fake_meter import fake_make_meter

    monkeypatch.setattr(profiling.meters, "make_meter", fake_make_meter)
    monkeypatch.delenv("RANK", raising=False)
    out = tmp_path / "m.json"
    result = runner.invoke(app, [*MEASURED, "--json", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())["measured"]
    assert m["available"] and (m["processes"], m["images_sampled"], m["images_reused"]) == (1, 6, 0)
    assert [r["energy_j"] for r in m["ranks"]] == [10.0] and m["energy_j"] == 10.0  # tests/sdit/fake_meter.py
    assert m["energy_j_per_image"] == 10.0 / 6 and m["energy_above_idle_j_per_image"] == (10.0 - 1.0 * 2.0) / 6
    assert m["meters"] == ["fake meter of rank 0 (tests)"] and m["meter_kind"] == "auto"
    assert "not loading the model" in m["window"] and "feature" in m["window"]
    assert ("measured energy: 1.667 J per image, 1.333 J above idle (10 J over 6 images sampled by 1 process, "
            "each in its own sampling window: not the feature pass; fake meter of rank 0 (tests))") in result.stdout


def test_evaluate_measure_without_a_meter_says_why_and_still_writes_the_fid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import profiling.meters
    from profiling.meters import NullMeter

    monkeypatch.setattr(profiling.meters, "make_meter", lambda device, kind: NullMeter(f"no {kind} sensor here"))
    out = tmp_path / "m.json"
    result = runner.invoke(app, [*MEASURED, "--meter", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["measured"]["reason"] == "rank 0: no cpu sensor here" and not record["measured"]["available"]
    assert "energy_j_per_image" not in record["measured"]
    assert record["results"]["domain"]["fid"] >= 0
    assert "measured energy unavailable: rank 0: no cpu sensor here" in result.stdout


def test_evaluate_measure_refuses_samples_files_and_unknown_meters(tmp_path: Path) -> None:
    samples = tmp_path / "s.safetensors"
    save_tensors({"samples": torch.zeros(4, 1, 28, 28)}, samples)
    for args, message in ((["evaluate", "--samples", str(samples), "--measure"], "--measure measures sampling; "
                           "--samples draws none"),
                          (["evaluate", "dit-tiny", "--measure", "--meter", "rapl"], "--meter 'rapl': valid meters "
                           "are auto, nvml, cpu")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
