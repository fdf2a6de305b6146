"""The energy-quality frontier: exact Pareto fronts on synthetic points (dominance, ties, a missing FID, an undefined
energy, FIDs of different protocols), the quality read from a shipped evaluation record, and the frontier a
comparison carries (its energies read from the estimates, its range over the verdict matrix, its JSON)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from profiling.compare import Comparison, compare_profiles, energy_range, with_frontier
from profiling.energy import load_costs
from profiling.frontier import FrontierPoint, build_frontier, pareto, quality_of
from profiling.workloads import profile_forward
from sdit.models import build_model

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "sdit-small-sd-fmnist" / "evaluations" / "domain-ddim50-eta1-n5000.json"


def record(fid: float, kid: float | None = 0.5, n: int = 5000, steps: int = 50, eta: float = 1.0, seed: int = 0,
           features: str = "domain", source: str = "eval.json") -> dict[str, Any]:
    """An ``sdit evaluate --json`` record (the fields the frontier reads) of one model."""
    res: dict[str, Any] = {"fid": fid, "feature_network": {"kind": features, "name": "classifier", "sha256": "c" * 64}}
    if kid is not None:
        res |= {"kid": kid, "kid_standard_error": kid / 10}
    return {"format": "sdit-evaluate/1", "num_samples": n, "target": "somewhere", "source_file": source,
            "sampler": {"description": f"ddim, {steps} steps, eta {eta:g}", "method": "ddim", "steps": steps,
                        "eta": eta, "seed": seed},
            "reference": {"dataset": "fashion-mnist", "split": "test", "selection": "first 10000 of 10000",
                          "images_sha256": "r" * 64},
            "results": {features: res}}


def point(name: str, energy: float | None) -> FrontierPoint:
    return FrontierPoint(model=name, untrained=False, energy_j=energy, energy_min_j=energy, energy_max_j=energy,
                         min_at="", max_at="", accountings=1)


def frontier_of(points: dict[str, tuple[float | None, dict[str, Any] | None]]):
    """The frontier of name -> (energy, evaluation record or None)."""
    return build_frontier([point(n, e) for n, (e, _) in points.items()],
                          {n: None if r is None else quality_of(r) for n, (_, r) in points.items()},
                          "45nm-fp32", "paper", "none")


def test_dominance_is_exact_on_both_axes() -> None:
    got = pareto([("a", 1.0, 100.0), ("b", 2.0, 90.0), ("c", 3.0, 95.0), ("d", 2.0, 120.0), ("e", 0.5, 300.0)])
    assert got == {"a": [], "b": [], "c": ["b"], "d": ["a", "b"], "e": []}


def test_equal_points_both_stay_on_the_front_and_equal_energy_keeps_the_lower_fid() -> None:
    got = pareto([("a", 1.0, 100.0), ("twin", 1.0, 100.0), ("worse", 1.0, 100.5), ("dearer", 1.0000001, 100.0)])
    assert got == {"a": [], "twin": [], "worse": ["a", "twin"], "dearer": ["a", "twin"]}


def test_a_model_without_fid_or_energy_is_on_no_front_and_says_why() -> None:
    f = frontier_of({"dit": (2.0, record(120.0)), "sdit": (1.0, record(180.0)), "bare": (0.1, None),
                     "undefined": (None, record(10.0))})
    assert [(p.model, p.on_front) for p in f.points] == [("dit", True), ("sdit", True), ("bare", None),
                                                         ("undefined", None)]
    assert f.point("bare").status.startswith("no domain FID") and f.point("bare").group is None
    assert f.point("undefined").status == "energy undefined under 45nm-fp32 (paper, memory none)"
    assert [p.model for p in f.placed()] == ["dit", "sdit"]
    assert [p.model for p in f.front()] == ["sdit", "dit"]  # the step line's order: by energy
    assert f.point("undefined").dominated_by == [] and not f.point("dit").dominated_by  # FID 10 dominates nothing


def test_fids_of_different_protocols_never_share_a_front() -> None:
    f = frontier_of({"a": (2.0, record(120.0)), "b": (3.0, record(150.0)), "c": (1.0, record(200.0)),
                     "small-n": (0.5, record(50.0, n=1000)), "eta0": (0.4, record(40.0, eta=0.0)),
                     "seed1": (2.5, record(110.0, seed=1))})
    assert len(f.protocols) == 3 and f.main == 0  # N and eta split the protocol; the seed does not
    assert "N = 1,000" in f.protocols[1] and "eta 0" in f.protocols[2]
    assert {p.model: p.group for p in f.points} == {"a": 0, "b": 0, "c": 0, "small-n": 1, "eta0": 2, "seed1": 0}
    assert f.point("b").dominated_by == ["a", "seed1"]  # small-n and eta0 are better on both, yet dominate nothing
    assert f.point("small-n").on_front and "another FID protocol" in f.point("small-n").status
    assert [p.model for p in f.front()] == ["c", "a", "seed1"]
    assert [p.model for p in f.front(1)] == ["small-n"]


def test_the_main_protocol_is_the_one_of_most_models_ties_going_to_the_first() -> None:
    f = frontier_of({"a": (1.0, record(100.0, n=1000)), "b": (1.0, record(100.0)), "c": (2.0, record(90.0))})
    assert f.main == 1
    tie = frontier_of({"a": (1.0, record(100.0, n=1000)), "b": (1.0, record(100.0))})
    assert tie.main == 0


def test_the_quality_of_a_shipped_record() -> None:
    q = quality_of({**json.loads(SHIPPED.read_text()), "source_file": str(SHIPPED)})
    assert q is not None
    assert (q.fid, q.kid, q.num_samples, q.sampler, q.steps, q.eta) == (
        pytest.approx(187.04988479516805), pytest.approx(40.75959522341546), 5000, "ddim, 50 steps, eta 1", 50, 1.0)
    assert q.protocol.startswith("domain features (sdit image classifier") and "N = 5,000" in q.protocol
    assert quality_of(record(1.0, features="inception")) is None  # only the domain FID goes on the frontier


def tiny_profiles() -> list:
    """sdit-tiny and dit-tiny, one forward each (seeded weights): the studies of the frontier tests."""
    import torch

    profiles = []
    for name in ("sdit-tiny", "dit-tiny"):
        torch.manual_seed(0)
        profiles.append(profile_forward(build_model(name), name=name, batch_size=1, seed=1))
    return profiles


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    costs = [load_costs("45nm-fp32"), load_costs("45nm-int8")]
    return compare_profiles(tiny_profiles(), costs, ["paper", "strict"])


def test_the_frontier_reads_each_energy_from_the_estimates_and_spans_the_verdict_matrix(comparison: Comparison
                                                                                        ) -> None:
    c = with_frontier(comparison, {"sdit-tiny": [record(180.0)], "dit-tiny": [record(120.0)]})
    f = c.frontier
    assert (f.costs, f.convention, f.memory) == ("45nm-fp32", "paper", "none")
    for t in comparison.targets:
        p = f.point(t.name)
        assert p.energy_j == t.estimate("45nm-fp32", "paper").total_j
        totals = energy_range(t.profile, comparison.costs[0], ["paper", "strict"])
        assert len(totals) == 10 == p.accountings  # 2 conventions x 5 memory specs
        assert (p.energy_min_j, p.energy_max_j) == (min(totals.values()), max(totals.values()))
        assert p.energy_min_j <= p.energy_j <= p.energy_max_j
    assert f.point("sdit-tiny").max_at == "strict, dataflow" and f.point("dit-tiny").min_at.endswith(
        "(every convention)")
    assert (f.point("dit-tiny").on_front, f.point("sdit-tiny").dominated_by) == (True, ["dit-tiny"])


def test_the_frontier_goes_through_json_and_an_earlier_one_keeps_its_fids(comparison: Comparison) -> None:
    c = with_frontier(comparison, {"sdit-tiny": [record(180.0)], "dit-tiny": [record(120.0)]})
    data = json.loads(json.dumps(c.to_dict()))
    back = Comparison.from_dict(data)
    assert back.to_dict() == data and back.frontier == c.frontier
    assert Comparison.from_dict({k: v for k, v in data.items() if k != "frontier"}).frontier is None  # saved before
    again = with_frontier(back, {})  # nothing matched here: the saved FIDs stay
    assert again.frontier == c.frontier
    newer = with_frontier(back, {"sdit-tiny": [record(100.0, source="new.json")]})  # a record matched now wins
    assert newer.frontier.point("sdit-tiny").quality.source_file == "new.json"
    assert newer.frontier.point("sdit-tiny").on_front and newer.frontier.point("dit-tiny").on_front
    renamed = replace(comparison, targets=[replace(t, name=t.name + "-b") for t in comparison.targets])
    assert with_frontier(renamed, {}, saved=[c.frontier]).frontier.protocols == []  # FIDs follow names only
