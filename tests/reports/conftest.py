"""A study of the tiny presets over a 2-step DDIM run, built once per session."""

from __future__ import annotations

import pytest

from profiling.compare import Comparison, compare
from profiling.energy import COST_PRESETS
from profiling.records import Workload
from profiling.workloads import profile_workload
from reports.page import RunInfo
from reports.study import ModelStudy, Study, study_from_comparison
from sdit.targets import load_target

TINY = ("sdit-tiny", "dit-tiny")


def tiny_models(steps: int = 2) -> list[ModelStudy]:
    out = []
    for name in TINY:
        target = load_target(name)
        params = list(target.model.parameters())
        profile = profile_workload(target.model, Workload.ddim(steps), name=name)
        out.append(ModelStudy(label=name, kind=target.model.config.kind, description=target.description,
                              params_trainable=sum(p.numel() for p in params if p.requires_grad),
                              params_total=sum(p.numel() for p in params), profile=profile,
                              measured_reason="no GPU in the test"))
    return out


@pytest.fixture(scope="session")
def tiny_comparison() -> Comparison:
    return compare(list(TINY), Workload.ddim(2), costs=list(COST_PRESETS))


@pytest.fixture(scope="session")
def tiny_study(tiny_comparison: Comparison) -> Study:
    return study_from_comparison(tiny_comparison)


@pytest.fixture()
def run_info() -> RunInfo:
    return RunInfo(command="sdit compare sdit-tiny dit-tiny", created="2026-12-01 00:00:00 UTC",
                   versions={"torch": "test"}, device="cpu", git_revision="test", seed=0)
