"""The one Workload (sdit.workload): every sampler named, checked once, round-tripped, torch-free."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from sdit.workload import DEFAULT_STEPS, DIFFUSION_STEPS, SAMPLERS, WORKLOAD_KINDS, Workload, WorkloadError


def test_every_sampler_has_a_kind_and_a_label() -> None:
    assert WORKLOAD_KINDS == ("forward", "ddim", "ddpm", "ddpm-respaced") and SAMPLERS == WORKLOAD_KINDS[1:]
    assert Workload() == Workload.forward(500)
    assert Workload.forward(7).label() == "one forward at t=7, batch 1, seed 0"
    assert Workload.ddim(eta=1, batch_size=4, seed=3).label() == "DDIM 50 steps, eta 1, batch 4, seed 3"
    assert Workload.ddpm().label() == "DDPM 1000 steps, batch 1, seed 0"
    assert Workload.respaced(seed=2).label() == "respaced DDPM 250 steps, learned variance, batch 1, seed 2"
    assert [Workload.ddim().steps, Workload.ddpm().steps, Workload.respaced().steps] == [
        DEFAULT_STEPS["ddim"], DIFFUSION_STEPS, DEFAULT_STEPS["ddpm-respaced"]]
    assert Workload.respaced(3).model_calls == 3 and Workload.forward().model_calls == 1
    assert not Workload.forward().is_sampling and all(Workload(k, steps=2).is_sampling for k in ("ddim",
                                                                                                "ddpm-respaced"))


def test_ddpm_runs_every_step_of_the_diffusion() -> None:
    from sdit.diffusion import Diffusion

    assert Workload.ddpm().steps == DIFFUSION_STEPS == Diffusion().num_steps


def test_the_image_shape_comes_from_the_model_config() -> None:
    config = SimpleNamespace(in_channels=3, image_size=32)
    assert Workload.ddim(batch_size=5).image_shape(config) == (5, 3, 32, 32)
    assert Workload.forward().image_shape(config) == (1, 3, 32, 32)


@pytest.mark.parametrize("work", [Workload.forward(3), Workload.ddim(20, eta=0.5), Workload.ddpm(batch_size=2, seed=9),
                                  Workload.respaced(7, batch_size=4, seed=1)])
def test_a_workload_round_trips(work: Workload) -> None:
    assert Workload.from_dict(work.to_dict()) == work


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "ddim"}, "ddim steps must be an integer"),
    ({"kind": "ddpm-respaced", "steps": 1}, r"ddpm-respaced steps must be an integer in \[2, 1000\]"),
    ({"kind": "forward", "timestep": 1000}, "timestep must be an integer in"),
    ({"kind": "forward", "steps": 50}, "a forward has no sampling steps"),
    ({"kind": "ddim", "steps": 10, "eta": 1.5}, "eta must be in"),
    ({"kind": "ddim", "steps": 10, "eta": -0.1}, "eta must be in"),
    ({"kind": "ddim", "steps": 10, "eta": math.nan}, "eta must be in"),
    ({"kind": "ddpm", "steps": 50}, "ddpm runs all 1000 steps"),
    ({"kind": "ddpm", "eta": 1.0}, "eta applies to DDIM only"),
    ({"kind": "ddpm-respaced", "steps": 5, "eta": 1.0}, "eta applies to DDIM only"),
    ({"kind": "ddim", "steps": 5, "timestep": 3}, "no single timestep"),
    ({"kind": "euler", "steps": 5}, "workload kind must be one of forward, ddim, ddpm, ddpm-respaced"),
    ({"kind": "forward", "batch_size": 0}, "batch_size must be"),
    ({"kind": "forward", "seed": -1}, "seed must be"),
])
def test_workload_refuses_fields_that_do_not_fit_its_kind(kwargs: dict, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        Workload(**kwargs)


def test_from_dict_refuses_unknown_keys_and_the_older_format() -> None:
    with pytest.raises(WorkloadError, match="unknown workload keys sample_steps"):
        Workload.from_dict({"kind": "ddim", "sample_steps": 0})
    with pytest.raises(WorkloadError, match=r"lacks timestep, eta, batch_size, seed: a record of an older format"):
        Workload.from_dict({"kind": "ddim", "steps": 50})


def test_importing_the_workload_imports_no_torch() -> None:
    code = "import sys, sdit.workload; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
