"""The report's quality table says beside each figure what makes it weak (the evaluation's warnings)."""

from __future__ import annotations

from reports.tables import _evaluation_rows


def _record(warnings: list[str]) -> dict:
    return {"num_samples": 8, "sampler": {"description": "ddim, 50 steps, eta 1"}, "warnings": warnings,
            "reference": {"dataset": "fashion-mnist", "split": "test", "selection": "first 100"},
            "results": {"domain": {"fid": 474.0, "precision": 1.0, "prdc_set_size": 8, "nearest_k": 3}}}


def test_a_small_n_warning_goes_beside_every_figure() -> None:
    rows = _evaluation_rows("sdit-tiny", _record(["only 8 samples: FID, KID and PRDC say little below 1,000"]))
    assert [r["metric"] for r in rows] == ["fid", "precision"]
    assert all("warning: only 8 samples" in r["source"] for r in rows)
    assert not any("warning" in r["source"] for r in _evaluation_rows("sdit-tiny", _record([])))
