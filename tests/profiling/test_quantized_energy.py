"""A quantized DiT is counted like its float twin and priced by the precision of each layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from profiling import estimate
from profiling.energy import INT8_MAC_45NM_PJ, EnergyCosts, load_costs, with_memory
from profiling.workloads import profile_workload
from sdit.config import PRESETS
from sdit.models import build_model
from sdit.models.quant import QuantLinear, calibrate
from sdit.workload import Workload
from tests.sdit.test_quant import random_dit

WORKLOAD = Workload.forward(500, batch_size=1, seed=0)


@pytest.fixture(scope="module")
def pair():
    float_model = random_dit("dit-tiny")
    config = dataclasses.replace(PRESETS["dit-tiny"], weight_bits=8, activation_bits=8)
    quant = build_model(config).eval()
    g = torch.Generator().manual_seed(1)
    calibrate(float_model, quant, [(torch.randn(4, 1, 28, 28, generator=g), torch.randint(1000, (4,), generator=g))])
    integer = {name for name, m in quant.named_modules() if isinstance(m, QuantLinear)}
    return (profile_workload(float_model, WORKLOAD, name="float"), profile_workload(quant, WORKLOAD, name="int8"),
            integer)


def test_integer_products_are_counted_as_macs_of_integer_layers(pair) -> None:
    fp, q, integer = pair
    assert not q.unsupported_ops
    assert q.per_image["macs"] == fp.per_image["macs"] > 0
    assert {r.name for r in q.layers if r.precision == "int8"} == integer
    assert {r.precision for r in fp.layers} == {"fp32"}


def test_integer_macs_are_priced_at_the_integer_figure(pair) -> None:
    _, q, integer = pair
    int_macs = sum(r.macs for r in q.layers if r.name in integer)
    est = estimate(q, load_costs("45nm-fp32"), "strict")
    assert est.counts["int_macs"] == int_macs > 0
    expected = ((q.per_image["macs"] - int_macs) * 4.6 + int_macs * INT8_MAC_45NM_PJ) * 1e-12
    assert est.per_image["mac_j"] == pytest.approx(expected, rel=1e-12)
    assert "int_mac" not in est.undefined
    # A preset without an integer figure prices them at its MAC cost and says so.
    plain = EnergyCosts("plain", 2.0, 1.0, "test figures")
    est = estimate(q, plain, "strict")
    assert est.per_image["mac_j"] == pytest.approx(q.per_image["macs"] * 2e-12, rel=1e-12)
    assert "integer MACs priced at the MAC cost" in est.undefined["int_mac"]


def test_integer_weights_move_at_one_byte(pair) -> None:
    fp, q, integer = pair
    name = "blocks.0.mlp.0"
    assert name in integer
    f, i = fp.layer(name), q.layer(name)
    assert i.weight_uses == f.weight_uses > 0 and i.weight_reads * 4 == f.weight_reads
    costs = with_memory(load_costs("45nm-fp32"), "no-reuse:step-3.12pj-bit")
    assert name not in estimate(q, costs, "strict").unassigned
